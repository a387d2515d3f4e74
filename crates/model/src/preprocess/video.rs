//! Video preprocessing, as transformers' `Qwen3VLVideoProcessor` (5.17) and `Qwen3VLProcessor`
//! do it: which frames of a clip are sampled ([`sample_frames`]), the size every frame is resized
//! to ([`smart_resize_video`], whose pixel budget covers all frames together), the frames cut into
//! temporal patches of `temporal_patch_size` frames (the last one padded by repeating the last
//! frame), and the time written before each temporal patch in the prompt ([`timestamps`], the
//! mean time of the patch's first and last frame, written `<{t:.1f} seconds>`).
//!
//! A preprocessed clip is a [`PreprocessedImage`] whose `rgb` holds all its frames and whose
//! grid has one `t` per temporal patch; the vision tower runs it like an image (attention stays
//! within each temporal patch), and the prompt gives each temporal patch its own run of
//! `<|video_pad|>` tokens with 2-D positions of its own ([`crate::rope`]).
//!
//! Exactness: frames go through the image path's RGB conversion, resize and normalisation, which
//! are bit-exact against torchvision on uint8 frames. One difference: the video processor blends
//! a frame's transparency over white in floating point and resizes the float result; here the
//! blend is rounded to 8 bits first, so frames with transparency (rare in video) are close, not
//! bit-exact.

use std::borrow::Cow;

use image::DynamicImage;
use serde_json::Value;

use super::{config_err, patches, resize_bicubic_aa, GridThw, PreprocessConfig, PreprocessError, PreprocessedImage};

/// Settings of the video processor (`video_preprocessor_config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct VideoConfig {
    /// Patch sizes, mean and std, and the pixel bounds: `min_pixels` / `max_pixels` bound the
    /// pixels of ALL frames of a clip together (`size.shortest_edge` / `size.longest_edge`).
    pub frame: PreprocessConfig,
    /// Frames sampled per second of video (2).
    pub fps: f64,
    /// Fewest frames sampled (4), unless the clip has fewer.
    pub min_frames: usize,
    /// Most frames sampled (768).
    pub max_frames: usize,
    /// qwen-vl-utils' per-frame pixel cap (off in transformers 5.17 unless configured).
    pub cap_pixels_per_frame: bool,
    /// Tokens per frame under that cap (768).
    pub max_video_tokens: usize,
}

/// transformers' assumption when a clip's frame rate is unknown.
pub const UNKNOWN_FPS: f64 = 24.0;

impl Default for VideoConfig {
    /// `Qwen3VLVideoProcessor`'s class defaults (a model folder's file usually overrides the
    /// pixel bounds: Qwen3-VL's is 4096..=25165824).
    fn default() -> Self {
        Self {
            frame: PreprocessConfig { min_pixels: 128 * 32 * 32, max_pixels: 32 * 32 * 768, ..PreprocessConfig::default() },
            fps: 2.0,
            min_frames: 4,
            max_frames: 768,
            cap_pixels_per_frame: false,
            max_video_tokens: 768,
        }
    }
}

impl VideoConfig {
    /// Parses a `video_preprocessor_config.json`: the image keys as [`PreprocessConfig::from_json`]
    /// reads them, and `fps`, `min_frames`, `max_frames`, `cap_pixels_per_frame`,
    /// `max_video_tokens`. Missing keys take the class defaults.
    pub fn from_json(text: &str) -> Result<Self, PreprocessError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| config_err(format!("video preprocessor config is not valid JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| config_err("video preprocessor config must be a JSON object"))?;
        let mut cfg = Self::default();
        // The image keys, with the video defaults for the bounds when the file names none.
        let mut with_bounds = obj.clone();
        if !obj.contains_key("size") && !obj.contains_key("min_pixels") && !obj.contains_key("max_pixels") {
            with_bounds.insert(
                "size".into(),
                serde_json::json!({"shortest_edge": cfg.frame.min_pixels, "longest_edge": cfg.frame.max_pixels}),
            );
        }
        cfg.frame = PreprocessConfig::from_json(&Value::Object(with_bounds).to_string())?;
        let number = |key: &str| -> Result<Option<f64>, PreprocessError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_f64().map(Some).ok_or_else(|| config_err(format!("`{key}` must be a number, got {v}"))),
            }
        };
        let count = |key: &str| -> Result<Option<usize>, PreprocessError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| config_err(format!("`{key}` must be a whole number, got {v}"))),
            }
        };
        cfg.fps = number("fps")?.unwrap_or(cfg.fps);
        cfg.min_frames = count("min_frames")?.unwrap_or(cfg.min_frames);
        cfg.max_frames = count("max_frames")?.unwrap_or(cfg.max_frames);
        cfg.max_video_tokens = count("max_video_tokens")?.unwrap_or(cfg.max_video_tokens);
        cfg.cap_pixels_per_frame = match obj.get("cap_pixels_per_frame") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(config_err(format!("`cap_pixels_per_frame` must be true or false, got {v}"))),
        };
        if !(cfg.fps.is_finite() && cfg.fps > 0.0) || cfg.max_frames == 0 {
            return Err(config_err("video fps and max_frames must be positive"));
        }
        Ok(cfg)
    }

    /// The frames of a clip of `total` frames at `source_fps` (None: unknown, taken as 24)
    /// that the processor keeps: `fps` a second, at least `min_frames` and at most `max_frames`
    /// (never more than the clip has), evenly spread from the first frame to the last.
    pub fn sample_frames(&self, total: usize, source_fps: Option<f64>) -> Vec<usize> {
        let source_fps = source_fps.filter(|f| f.is_finite() && *f > 0.0).unwrap_or(UNKNOWN_FPS);
        // Python: int(total / fps * target) truncates toward zero.
        let wanted = (total as f64 / source_fps * self.fps) as usize;
        let n = wanted.max(self.min_frames).min(self.max_frames).min(total);
        linspace_round(total.saturating_sub(1), n)
    }
}

/// numpy's `linspace(0, last, n).round().astype(int)`: `i * (last / (n - 1))`, the final value
/// exactly `last`, rounded half to even.
fn linspace_round(last: usize, n: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![0];
    }
    let step = last as f64 / (n - 1) as f64;
    (0..n).map(|i| if i == n - 1 { last } else { (i as f64 * step).round_ties_even() as usize }).collect()
}

/// The time, in seconds, of each temporal patch of a clip whose sampled frames are `indices` of
/// a video at `source_fps`: the indices padded to a multiple of `temporal` with the last one,
/// each patch's time the mean of its first and last frame's (as `Qwen3VLProcessor` computes it).
pub fn timestamps(indices: &[usize], source_fps: Option<f64>, temporal: usize) -> Vec<f64> {
    let fps = source_fps.filter(|f| f.is_finite() && *f > 0.0).unwrap_or(UNKNOWN_FPS);
    let temporal = temporal.max(1);
    let mut idx = indices.to_vec();
    if let Some(&last) = idx.last() {
        while !idx.len().is_multiple_of(temporal) {
            idx.push(last);
        }
    }
    let secs: Vec<f64> = idx.iter().map(|&i| i as f64 / fps).collect();
    secs.chunks(temporal).map(|c| (c[0] + c[c.len() - 1]) / 2.0).collect()
}

/// How the prompt writes a temporal patch's time: Python's `f"<{t:.1f} seconds>"`.
pub fn timestamp_text(seconds: f64) -> String {
    format!("<{seconds:.1} seconds>")
}

/// The video processor's `smart_resize`: the frame size for a clip of `frames` frames of
/// `height x width`, with the bounds applied to `frames`-rounded-to-pairs times the frame's
/// pixels. Python's arithmetic: `round` half to even, `int` truncation of the upscaled sides.
pub fn smart_resize_video(
    frames: usize,
    height: u32,
    width: u32,
    temporal: usize,
    factor: u32,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(u32, u32), PreprocessError> {
    if height == 0 || width == 0 {
        return Err(PreprocessError::Empty { width, height });
    }
    if frames < temporal {
        return Err(PreprocessError::Video(format!("a video needs at least {temporal} frames, this one has {frames}")));
    }
    let f = f64::from(factor);
    let (mut h, mut w) = (f64::from(height), f64::from(width));
    if h < f || w < f {
        let scale = (f / h).max(f / w);
        h = (h * scale).trunc();
        w = (w * scale).trunc();
    }
    if h.max(w) / h.min(w) > 200.0 {
        return Err(PreprocessError::AspectRatio { width, height });
    }
    let fu = u64::from(factor);
    let mut h_bar = ((h / f).round_ties_even() as u64).saturating_mul(fu);
    let mut w_bar = ((w / f).round_ties_even() as u64).saturating_mul(fu);
    let t_bar = ((frames as f64 / temporal as f64).round_ties_even() as u64).saturating_mul(temporal as u64);
    let volume = u128::from(t_bar) * u128::from(h_bar) * u128::from(w_bar);
    let all = frames as f64 * h * w;
    if volume > u128::from(max_pixels) {
        let beta = (all / max_pixels as f64).sqrt();
        h_bar = fu.max(((h / beta / f).floor() as u64).saturating_mul(fu));
        w_bar = fu.max(((w / beta / f).floor() as u64).saturating_mul(fu));
    } else if volume < u128::from(min_pixels) {
        let beta = (min_pixels as f64 / all).sqrt();
        h_bar = ((h * beta / f).ceil() as u64).saturating_mul(fu);
        w_bar = ((w * beta / f).ceil() as u64).saturating_mul(fu);
    }
    let side = |v: u64| u32::try_from(v).ok().filter(|&v| v > 0);
    match (side(h_bar), side(w_bar)) {
        (Some(h), Some(w)) => Ok((h, w)),
        _ => Err(PreprocessError::TooSmall { width, height }),
    }
}

/// A preprocessed clip: the frames as one [`PreprocessedImage`] (grid `t` = temporal patches)
/// and the time of each temporal patch.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessedVideo {
    pub clip: PreprocessedImage,
    /// Seconds from the start of the video, one per temporal patch ([`timestamps`]).
    pub timestamps: Vec<f64>,
}

/// Preprocesses a clip's sampled frames: `frames[i]` is frame `indices[i]` of a video at
/// `source_fps` (None: unknown). Every frame must have the size of the first.
/// ([`clip_size`], each frame through [`resize_frame`], then [`assemble_video`]: a caller with
/// threads may resize the frames in parallel.)
pub fn preprocess_video(
    frames: &[&DynamicImage],
    indices: &[usize],
    source_fps: Option<f64>,
    cfg: &VideoConfig,
) -> Result<PreprocessedVideo, PreprocessError> {
    let size = clip_size(frames, indices, cfg)?;
    let resized = frames.iter().map(|f| resize_frame(f, size)).collect();
    assemble_video(resized, size, indices, source_fps, cfg)
}

/// The size a clip's frames are resized to, once the clip is checked: frames and indices
/// agree, at least `temporal_patch_size` frames, all of one size. Returns the source and the
/// resized size, and whether transparency must be blended (then for every frame).
pub fn clip_size(frames: &[&DynamicImage], indices: &[usize], cfg: &VideoConfig) -> Result<ClipSize, PreprocessError> {
    let fc = &cfg.frame;
    fc.validate()?;
    if frames.len() != indices.len() {
        return Err(PreprocessError::Video(format!("{} frames for {} frame indices", frames.len(), indices.len())));
    }
    let first = frames.first().ok_or_else(|| PreprocessError::Video("a video needs frames, this one has none".into()))?;
    let (width, height) = (first.width(), first.height());
    if let Some(other) = frames.iter().find(|f| (f.width(), f.height()) != (width, height)) {
        return Err(PreprocessError::Video(format!(
            "the frames of a video must share one size: {width}x{height} and {}x{}",
            other.width(),
            other.height()
        )));
    }
    let factor = u32::try_from(fc.factor()).map_err(|_| config_err("patch_size * merge_size is too large"))?;
    let mut max_pixels = fc.max_pixels;
    if cfg.cap_pixels_per_frame {
        let n = frames.len() as u64;
        let cap = (cfg.max_video_tokens as u64).saturating_mul(u64::from(factor) * u64::from(factor));
        let per_frame = cap.min(fc.max_pixels / n).max((fc.min_pixels as f64 * 1.05) as u64);
        max_pixels = per_frame.saturating_mul(n);
    }
    let (new_h, new_w) =
        smart_resize_video(frames.len(), height, width, fc.temporal_patch_size, factor, fc.min_pixels, max_pixels)?;
    let blend = frames.iter().any(|f| has_transparency(f));
    Ok(ClipSize { width, height, new_width: new_w, new_height: new_h, blend })
}

/// What [`clip_size`] decided for a clip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipSize {
    pub width: u32,
    pub height: u32,
    pub new_width: u32,
    pub new_height: u32,
    /// Some frame has transparency: every frame is blended over white.
    pub blend: bool,
}

/// One frame converted to RGB (blended over white where the clip needs it) and resized.
pub fn resize_frame(frame: &DynamicImage, size: ClipSize) -> image::RgbImage {
    let rgb = if size.blend { Cow::Owned(over_white(frame)) } else { super::to_rgb8(frame) };
    if (size.new_width, size.new_height) == (size.width, size.height) {
        rgb.into_owned()
    } else {
        resize_bicubic_aa(&rgb, size.new_width, size.new_height)
    }
}

/// The clip from its frames resized by [`resize_frame`] to `size`.
pub fn assemble_video(
    resized: Vec<image::RgbImage>,
    size: ClipSize,
    indices: &[usize],
    source_fps: Option<f64>,
    cfg: &VideoConfig,
) -> Result<PreprocessedVideo, PreprocessError> {
    let fc = &cfg.frame;
    let (new_w, new_h) = (size.new_width, size.new_height);
    if resized.len() != indices.len() || resized.iter().any(|f| f.dimensions() != (new_w, new_h)) {
        return Err(PreprocessError::Video("the resized frames do not match the clip".into()));
    }
    let n = resized.len();
    let mut rgb = Vec::with_capacity(n * new_h as usize * new_w as usize * 3);
    for f in resized {
        rgb.extend_from_slice(f.as_raw());
    }
    let p = fc.patch_size;
    let t = n.div_ceil(fc.temporal_patch_size);
    let (width, height) = (size.width, size.height);
    let clip = PreprocessedImage {
        rgb,
        frames: n,
        lut: patches::normalize_lut(fc),
        temporal: fc.temporal_patch_size,
        merge: fc.merge_size,
        grid: GridThw { t, h: new_h as usize / p, w: new_w as usize / p },
        patch_dim: fc.patch_dim(),
        resized_width: new_w,
        resized_height: new_h,
        original_width: width,
        original_height: height,
    };
    Ok(PreprocessedVideo { clip, timestamps: timestamps(indices, source_fps, fc.temporal_patch_size) })
}

fn has_transparency(img: &DynamicImage) -> bool {
    match img {
        DynamicImage::ImageRgba8(i) => i.pixels().any(|p| p.0[3] < 255),
        DynamicImage::ImageLumaA8(i) => i.pixels().any(|p| p.0[1] < 255),
        other if other.color().has_alpha() => other.to_rgba8().pixels().any(|p| p.0[3] < 255),
        _ => false,
    }
}

/// The frame over a white background, as the video processor blends it (then rounded).
fn over_white(img: &DynamicImage) -> image::RgbImage {
    let rgba = img.to_rgba8();
    image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = f32::from(p[3]) / 255.0;
        image::Rgb([0, 1, 2].map(|c| ((1.0 - a) * 255.0 + a * f32::from(p[c])).round().clamp(0.0, 255.0) as u8))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use image::RgbImage;

    #[test]
    fn linspace_matches_numpy_rounding() {
        assert_eq!(linspace_round(13, 4), vec![0, 4, 9, 13]);
        assert_eq!(linspace_round(4, 4), vec![0, 1, 3, 4]);
        assert_eq!(linspace_round(0, 1), vec![0]);
        assert!(linspace_round(9, 0).is_empty());
    }

    #[test]
    fn timestamps_average_each_temporal_patch_and_pad_with_the_last_frame() {
        assert_eq!(timestamps(&[0, 1, 2], Some(2.0), 2), vec![0.25, 1.0]);
        assert_eq!(timestamp_text(0.25), "<0.2 seconds>");
        assert_eq!(timestamp_text(0.75), "<0.8 seconds>");
    }

    #[test]
    fn an_odd_clip_pads_its_last_temporal_patch() {
        let frames: Vec<DynamicImage> =
            (0..3u8).map(|i| DynamicImage::ImageRgb8(RgbImage::from_pixel(64, 64, image::Rgb([i * 100; 3])))).collect();
        let cfg = VideoConfig {
            frame: PreprocessConfig { min_pixels: 1024, max_pixels: 1 << 20, ..PreprocessConfig::default() },
            ..VideoConfig::default()
        };
        let refs: Vec<&DynamicImage> = frames.iter().collect();
        let v = preprocess_video(&refs, &[0, 1, 2], Some(2.0), &cfg).unwrap();
        assert_eq!(v.clip.grid, GridThw { t: 2, h: 4, w: 4 });
        let px = v.clip.pixels();
        let row = v.clip.patch_dim;
        let n = 16;
        // Temporal patch 1 (rows n..2n): frame 2 twice. Value index 256 is the second frame.
        let at = |r: usize, i: usize| px[r * row + i];
        assert_eq!((at(0, 0), at(0, 256)), (-1.0, (100.0 - 127.5) / 127.5));
        assert_eq!((at(n, 0), at(n, 256)), ((200.0 - 127.5) / 127.5, (200.0 - 127.5) / 127.5));
    }

    #[test]
    fn bad_clips_get_one_clear_error() {
        let cfg = VideoConfig::default();
        let one = DynamicImage::ImageRgb8(RgbImage::new(64, 64));
        let e = preprocess_video(&[&one], &[0], None, &cfg).unwrap_err().to_string();
        assert!(e.contains("at least 2 frames"), "{e}");
        let other = DynamicImage::ImageRgb8(RgbImage::new(32, 64));
        let e = preprocess_video(&[&one, &other], &[0, 1], None, &cfg).unwrap_err().to_string();
        assert!(e.contains("share one size"), "{e}");
        assert!(preprocess_video(&[], &[], None, &cfg).is_err());
        assert!(VideoConfig::from_json("{\"fps\": \"fast\"}").is_err());
        assert!(VideoConfig::from_json("{\"fps\": 0}").is_err());
    }

    #[test]
    fn config_reads_the_video_keys_and_keeps_video_bounds() {
        let c = VideoConfig::from_json(r#"{"fps": 1, "max_frames": 16}"#).unwrap();
        assert_eq!((c.fps, c.max_frames, c.min_frames), (1.0, 16, 4));
        assert_eq!((c.frame.min_pixels, c.frame.max_pixels), (131072, 786432));
        let c = VideoConfig::from_json(r#"{"size": {"shortest_edge": 4096, "longest_edge": 25165824}}"#).unwrap();
        assert_eq!((c.frame.min_pixels, c.frame.max_pixels), (4096, 25165824));
    }
}
