//! Decoding video files (mp4/mov, webm/mkv, avi with H.264, H.265, VP8, VP9, AV1 or MPEG-4) into a
//! sampled [`Clip`] through the system's FFmpeg libraries: the container gives the frame count and
//! frame rate (as transformers' video metadata has them), [`VideoConfig::sample_frames`] picks the
//! frames, and the video is decoded in order, keeping only those frames, as RGB.
//!
//! Files come from users (the server takes uploads), so everything is bounded ([`VideoLimits`]):
//! the file's size, each frame's size, the frames decoded and the bytes the kept frames take; a
//! deadline, when given, aborts reading and decoding. A file is opened only if it is a regular file
//! (no FIFO or device) and is then read through our own I/O callbacks, never by FFmpeg's protocols,
//! and only a few demuxers are allowed (no playlist demuxer that would open other files or URLs).
//! Anything wrong is one [`EngineError::InvalidVideo`] naming the file.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use screenpilot_model::preprocess::{open_regular_file, ImageLimits, PreprocessError, VideoConfig};

use crate::error::{EngineError, Result};
use crate::request::Clip;

#[cfg(feature = "video-files")]
mod ffmpeg;
#[cfg(feature = "video-files")]
use ffmpeg::decode;

/// Without the `video-files` feature (a build without FFmpeg, such as the headless GPU build),
/// every video file is refused with this one error; frames still work.
#[cfg(not(feature = "video-files"))]
fn decode(_: &Source, name: &str, _: &VideoConfig, _: &VideoLimits, _: Option<Instant>) -> Result<Arc<Clip>> {
    Err(invalid(name, "this build decodes no video files (built without the video-files feature); send its frames".into()))
}

/// What decoding one video may cost. The defaults admit a long screen recording at 8K.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoLimits {
    /// Largest file or data, in bytes (512 MiB).
    pub max_file_bytes: u64,
    /// Largest frame: `width * height` and each side, as for images
    /// ([`ImageLimits::default`]: 100 Mpx, 16384 a side).
    pub max_frame_pixels: u64,
    pub max_frame_side: u32,
    /// Most frames a video may have (all are decoded up to the last sampled one): 100 000.
    pub max_frames: usize,
    /// Most bytes the sampled frames may take as RGB (2 GiB).
    pub max_clip_bytes: u64,
}

impl Default for VideoLimits {
    fn default() -> Self {
        let image = ImageLimits::default();
        Self {
            max_file_bytes: 512 << 20,
            max_frame_pixels: image.max_pixels,
            max_frame_side: image.max_side,
            max_frames: crate::video::MAX_LISTED_FRAMES,
            max_clip_bytes: 2 << 30,
        }
    }
}

/// The sampled frames of the video file at `path` (symlinks followed: the caller named it),
/// under the default limits and without a deadline.
pub fn decode_path(path: &Path, cfg: &VideoConfig) -> Result<Arc<Clip>> {
    let file = open_file(path, &VideoLimits::default(), true)?;
    decode_file(file, &path.display().to_string(), cfg, &VideoLimits::default(), None)
}

/// The sampled frames of a video file's bytes, under the default limits.
pub fn decode_bytes(bytes: &Arc<[u8]>, cfg: &VideoConfig) -> Result<Arc<Clip>> {
    decode_bytes_limited(bytes, "the video data", cfg, &VideoLimits::default(), None)
}

/// Opens `path` for [`decode_file`] if it is a regular file within `limits.max_file_bytes`
/// (the check is made on the open handle, so a FIFO or a device is never read). Without
/// `follow_symlinks` a symlink as the last component is refused.
pub fn open_file(path: &Path, limits: &VideoLimits, follow_symlinks: bool) -> Result<File> {
    open_regular_file(path, limits.max_file_bytes, follow_symlinks).map(|(f, _)| f).map_err(|e| open_error(path, e))
}

/// The error of opening the video file `path`.
pub(crate) fn open_error(path: &Path, e: PreprocessError) -> EngineError {
    let name = path.display().to_string();
    match e {
        PreprocessError::Read { source, .. } => invalid(&name, format!("cannot read it: {source}")),
        PreprocessError::NotRegularFile { .. } => invalid(&name, "not a regular file".into()),
        PreprocessError::FileTooLarge { max_bytes, .. } => invalid(&name, format!("the file is over the limit of {max_bytes} bytes")),
        other => invalid(&name, other.to_string()),
    }
}

/// The sampled frames of an open video file; errors name it `name`. Reading stops at
/// `deadline`, if any, with an error.
pub fn decode_file(file: File, name: &str, cfg: &VideoConfig, limits: &VideoLimits, deadline: Option<Instant>) -> Result<Arc<Clip>> {
    decode(&Source::File(file), name, cfg, limits, deadline)
}

/// The sampled frames of a video file's bytes; errors name it `name`.
pub fn decode_bytes_limited(
    bytes: &Arc<[u8]>,
    name: &str,
    cfg: &VideoConfig,
    limits: &VideoLimits,
    deadline: Option<Instant>,
) -> Result<Arc<Clip>> {
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(invalid(name, format!("{} bytes, over the limit of {} bytes", bytes.len(), limits.max_file_bytes)));
    }
    decode(&Source::Bytes(bytes.clone()), name, cfg, limits, deadline)
}

pub(crate) fn invalid(name: &str, what: String) -> EngineError {
    EngineError::InvalidVideo(format!("{name}: {what}"))
}

// Read by FFmpeg only (the `video-files` feature).
#[cfg_attr(not(feature = "video-files"), allow(dead_code))]
/// Where the encoded video is read from; each pass over it gets a reader at its start.
pub(crate) enum Source {
    File(File),
    Bytes(Arc<[u8]>),
}

pub(crate) trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// A reader that ends after `left` bytes: a file that grows while it is read is read only up to
/// the size limit.
struct Capped {
    inner: File,
    limit: u64,
}

impl Read for Capped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let pos = self.inner.stream_position()?;
        let room = self.limit.saturating_sub(pos).min(buf.len() as u64) as usize;
        self.inner.read(&mut buf[..room])
    }
}

impl Seek for Capped {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

#[cfg_attr(not(feature = "video-files"), allow(dead_code))]
impl Source {
    pub(crate) fn reader(&self, limit: u64) -> std::io::Result<Box<dyn ReadSeek>> {
        Ok(match self {
            Source::File(f) => {
                let mut inner = f.try_clone()?;
                inner.seek(SeekFrom::Start(0))?;
                Box::new(Capped { inner, limit })
            }
            Source::Bytes(b) => Box::new(Cursor::new(b.clone())),
        })
    }
}
