//! Decoding video files (mp4, webm, mkv, ...) into a sampled [`Clip`]: only the frames the video
//! processor samples are kept.

use std::path::Path;
use std::sync::Arc;

use screenpilot_model::preprocess::VideoConfig;

use crate::error::{EngineError, Result};
use crate::request::Clip;

/// The sampled frames of the video file at `path`.
pub fn decode_path(path: &Path, _cfg: &VideoConfig) -> Result<Arc<Clip>> {
    Err(EngineError::InvalidVideo(format!("{}: video files cannot be decoded yet", path.display())))
}

/// The sampled frames of a video file's bytes.
pub fn decode_bytes(_bytes: &[u8], _cfg: &VideoConfig) -> Result<Arc<Clip>> {
    Err(EngineError::InvalidVideo("video files cannot be decoded yet".into()))
}
