//! A request's images as the engine takes them: read (from bytes, a file or memory) and
//! preprocessed, with errors that name the file; the preprocessing of images already in memory
//! remembered ([`Memo`]); and vision features copied apart.

use std::sync::{Arc, Mutex, Weak};

use image::DynamicImage;
use screenpilot_model::preprocess::{decode_image, load_image, preprocess};
use screenpilot_model::{PreprocessConfig, PreprocessedImage, VisionOutput};

use crate::error::{EngineError, Result};
use crate::request::ImageSource;
use crate::vision_cache::ImageKey;

/// What was computed (and its cache key) for inputs the caller still holds, by the input's
/// address: an agent sends the same screenshots (the same `Arc`) step after step, and resizing
/// and hashing each of them again made step k cost k screenshots' preprocessing; a second
/// question about a rewind sends the same clip. An entry whose input has been dropped is
/// forgotten (so an address reused by another input is never mistaken for it); at most
/// `capacity` entries are kept, the oldest go first.
pub(crate) struct AddressMemo<T, V> {
    entries: Mutex<Vec<(Weak<T>, V, ImageKey)>>,
    capacity: usize,
}

impl<T, V: Clone> AddressMemo<T, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { entries: Mutex::new(Vec::new()), capacity }
    }

    /// The value remembered for `input`, else `fresh()`'s (remembered if there is room), and
    /// whether it was remembered.
    pub(crate) fn get_or(&self, input: &Arc<T>, fresh: impl FnOnce() -> Result<(ImageKey, V)>) -> Result<(V, ImageKey, bool)> {
        if self.capacity == 0 {
            return fresh().map(|(key, v)| (v, key, false));
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|(w, _, _)| w.strong_count() > 0);
        if let Some((_, v, key)) = entries.iter().find(|(w, _, _)| w.upgrade().is_some_and(|a| Arc::ptr_eq(&a, input))) {
            return Ok((v.clone(), *key, true));
        }
        let (key, v) = fresh()?;
        if entries.len() >= self.capacity {
            entries.remove(0);
        }
        entries.push((Arc::downgrade(input), v.clone(), key));
        Ok((v, key, false))
    }
}

/// Screenshots' preprocessing, remembered by address.
pub(crate) type Memo = AddressMemo<DynamicImage, PreprocessedImage>;

impl Memo {
    /// The image preprocessed with its key, and whether it was remembered.
    pub(crate) fn load(&self, src: &ImageSource, cfg: &PreprocessConfig) -> Result<(PreprocessedImage, ImageKey, bool)> {
        let fresh = || load(src, cfg).map(|pre| (ImageKey::of(&pre), pre));
        match src {
            ImageSource::Image(img) => self.get_or(img, fresh),
            _ => fresh().map(|(key, pre)| (pre, key, false)),
        }
    }
}

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
