//! A request's videos as the engine takes them: a [`VideoSource`] becomes a sampled [`Clip`]
//! (frames chosen as transformers' video processor chooses them, only those decoded) and then a
//! [`PreprocessedVideo`]; the preprocessing of a clip the caller still holds (the same `Arc`, as
//! a second question about the same rewind sends it) is remembered ([`ClipMemo`]).
//!
//! Video files are decoded by [`crate::video_file`].

use std::sync::Arc;

use image::DynamicImage;
use screenpilot_model::preprocess::{assemble_video, clip_size, resize_frame, PreprocessedVideo, VideoConfig};

use crate::error::{EngineError, Result};
use crate::images::AddressMemo;
use crate::request::{Clip, ImageSource, VideoSource};
use crate::vision_cache::ImageKey;

/// Most frames a clip of frames may list (what is sampled from them is bounded by the video
/// processor's `max_frames`).
pub const MAX_LISTED_FRAMES: usize = 100_000;

/// The sampled clip of `src`: a file is decoded (sampled frames only), a list of frames is
/// sampled and only those frames decoded, a clip passes through.
pub fn sample(src: &VideoSource, cfg: &VideoConfig) -> Result<Arc<Clip>> {
    match src {
        VideoSource::Clip(c) => Ok(c.clone()),
        VideoSource::Frames { frames, fps } => {
            if frames.len() > MAX_LISTED_FRAMES {
                return Err(EngineError::InvalidVideo(format!(
                    "{} frames listed, at most {MAX_LISTED_FRAMES} are accepted",
                    frames.len()
                )));
            }
            if !(fps.is_finite() && *fps > 0.0) {
                return Err(EngineError::InvalidVideo(format!("the frame rate must be a positive number, not {fps}")));
            }
            let indices = cfg.sample_frames(frames.len(), Some(*fps));
            let decoded = indices
                .iter()
                .map(|&i| decode_frame(&frames[i]).map(Arc::new))
                .collect::<Result<Vec<_>>>()
                .map_err(|e| EngineError::InvalidVideo(format!("a frame: {e}")))?;
            Ok(Arc::new(Clip { frames: decoded, indices, fps: Some(*fps) }))
        }
        VideoSource::Path(p) => crate::video_file::decode_path(p, cfg),
        VideoSource::Bytes(b) => crate::video_file::decode_bytes(b, cfg),
    }
}

fn decode_frame(src: &ImageSource) -> Result<DynamicImage> {
    match src {
        ImageSource::Image(i) => Ok((**i).clone()),
        ImageSource::Bytes(b) => {
            screenpilot_model::preprocess::decode_image(b).map_err(|e| EngineError::InvalidImage(e.to_string()))
        }
        ImageSource::Path(p) => screenpilot_model::preprocess::load_image(p)
            .map_err(|e| EngineError::InvalidImage(format!("{}: {e}", p.display()))),
    }
}

/// Preprocesses a sampled clip, its frames resized on up to [`RESIZE_THREADS`] threads (the
/// same pixels as one thread: each frame is resized alone).
pub fn preprocess(clip: &Clip, cfg: &VideoConfig) -> Result<PreprocessedVideo> {
    let invalid = |e: screenpilot_model::preprocess::PreprocessError| EngineError::InvalidVideo(e.to_string());
    let frames: Vec<&DynamicImage> = clip.frames.iter().map(|f| f.as_ref()).collect();
    let size = clip_size(&frames, &clip.indices, cfg).map_err(invalid)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, RESIZE_THREADS);
    let chunk = frames.len().div_ceil(threads).max(1);
    let resized: Vec<image::RgbImage> = std::thread::scope(|s| {
        let jobs: Vec<_> =
            frames.chunks(chunk).map(|part| s.spawn(move || part.iter().map(|f| resize_frame(f, size)).collect::<Vec<_>>())).collect();
        jobs.into_iter().flat_map(|j| j.join().unwrap_or_default()).collect()
    });
    assemble_video(resized, size, &clip.indices, clip.fps, cfg).map_err(invalid)
}

/// Most threads resizing one clip's frames.
pub const RESIZE_THREADS: usize = 16;

/// Clips' preprocessing, remembered by address ([`AddressMemo`]): a second question about the
/// same rewind costs no resizing or hashing of its frames.
pub(crate) type ClipMemo = AddressMemo<Clip, PreprocessedVideo>;

impl ClipMemo {
    /// The clip of `src` preprocessed, its key, and whether it was remembered.
    pub(crate) fn load(&self, src: &VideoSource, cfg: &VideoConfig) -> Result<(PreprocessedVideo, ImageKey, bool)> {
        let clip = sample(src, cfg)?;
        let fresh = || preprocess(&clip, cfg).map(|v| (ImageKey::of(&v.clip), v));
        match src {
            VideoSource::Clip(_) => self.get_or(&clip, fresh),
            _ => fresh().map(|(key, v)| (v, key, false)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use screenpilot_model::PreprocessConfig;

    fn cfg() -> VideoConfig {
        VideoConfig {
            frame: PreprocessConfig { min_pixels: 1024, max_pixels: 1 << 20, ..PreprocessConfig::default() },
            ..VideoConfig::default()
        }
    }

    fn frame(v: u8) -> Arc<DynamicImage> {
        Arc::new(DynamicImage::ImageRgb8(image::RgbImage::from_pixel(64, 64, image::Rgb([v; 3]))))
    }

    #[test]
    fn frames_are_sampled_before_they_are_decoded() {
        // 12 frames at 6 fps sample 4 (the minimum): 0, 4, 7, 11. The others are not images at
        // all, so decoding any of them would fail.
        let frames: Vec<ImageSource> = (0..12)
            .map(|i| if [0, 4, 7, 11].contains(&i) { ImageSource::Image(frame(i as u8)) } else { ImageSource::Bytes(Arc::from(&b"junk"[..])) })
            .collect();
        let clip = sample(&VideoSource::Frames { frames, fps: 6.0 }, &cfg()).unwrap();
        assert_eq!(clip.indices, vec![0, 4, 7, 11]);
        assert_eq!(clip.fps, Some(6.0));
        let v = preprocess(&clip, &cfg()).unwrap();
        assert_eq!(v.clip.grid.t, 2);
        assert_eq!(v.timestamps, vec![(0.0 + 4.0 / 6.0) / 2.0, (7.0 / 6.0 + 11.0 / 6.0) / 2.0]);
    }

    #[test]
    fn bad_clips_are_clear_errors() {
        let one = VideoSource::Frames { frames: vec![ImageSource::Image(frame(1))], fps: 2.0 };
        let e = ClipMemo::new(4).load(&one, &cfg()).unwrap_err().to_string();
        assert!(e.contains("at least 2 frames"), "{e}");
        let bad_fps = VideoSource::Frames { frames: vec![ImageSource::Image(frame(1)); 4], fps: f64::NAN };
        assert!(sample(&bad_fps, &cfg()).unwrap_err().to_string().contains("frame rate"));
        let junk = VideoSource::Frames { frames: vec![ImageSource::Bytes(Arc::from(&b"junk"[..])); 4], fps: 2.0 };
        assert!(matches!(sample(&junk, &cfg()), Err(EngineError::InvalidVideo(_))));
    }

    #[test]
    fn a_clip_still_held_is_preprocessed_once() {
        let memo = ClipMemo::new(4);
        let clip = Arc::new(Clip { frames: vec![frame(1), frame(2), frame(3)], indices: vec![0, 1, 2], fps: Some(2.0) });
        let src = VideoSource::Clip(clip.clone());
        let (a, ka, again) = memo.load(&src, &cfg()).unwrap();
        assert!(!again);
        let (b, kb, again) = memo.load(&src, &cfg()).unwrap();
        assert!(again);
        assert_eq!((a, ka), (b, kb));
        // The same frames in another clip: preprocessed again, same key (the vision cache hits).
        let copy = VideoSource::Clip(Arc::new((*clip).clone()));
        let (_, kc, again) = memo.load(&copy, &cfg()).unwrap();
        assert!(!again);
        assert_eq!(kc, ka);
    }
}
