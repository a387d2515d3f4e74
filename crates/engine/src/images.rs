//! A request's images as the engine takes them: read (from bytes, a file or memory) and
//! preprocessed, with errors that name the file; and vision features copied apart.

use screenpilot_model::preprocess::{decode_image, load_image, preprocess};
use screenpilot_model::{PreprocessConfig, PreprocessedImage, VisionOutput};

use crate::error::{EngineError, Result};
use crate::request::ImageSource;

/// Decodes (unless already decoded) and preprocesses one image. An error about a file names
/// it (the read error names it already).
pub(crate) fn load(src: &ImageSource, cfg: &PreprocessConfig) -> Result<PreprocessedImage> {
    match src {
        ImageSource::Bytes(b) => pre(&decode_image(b).map_err(|e| EngineError::InvalidImage(e.to_string()))?, cfg),
        ImageSource::Image(i) => pre(i, cfg),
        ImageSource::Path(p) => {
            let named = |e: String| if e.contains(&*p.to_string_lossy()) { e } else { format!("{}: {e}", p.display()) };
            let img = load_image(p).map_err(|e| EngineError::InvalidImage(named(e.to_string())))?;
            pre(&img, cfg).map_err(|e| match e {
                EngineError::InvalidImage(m) => EngineError::InvalidImage(named(m)),
                other => other,
            })
        }
    }
}

fn pre(img: &image::DynamicImage, cfg: &PreprocessConfig) -> Result<PreprocessedImage> {
    preprocess(img, cfg).map_err(|e| EngineError::InvalidImage(e.to_string()))
}

/// An own copy of vision features (so that evicting one image from the cache frees its memory).
pub(crate) fn own(v: &VisionOutput) -> Result<VisionOutput> {
    Ok(VisionOutput {
        embeds: v.embeds.copy()?,
        deepstack: v.deepstack.iter().map(|t| t.copy()).collect::<candle_core::Result<_>>()?,
    })
}
