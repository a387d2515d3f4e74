//! Image preprocessing for Qwen3-VL: decode → RGB → `smart_resize` → bicubic
//! antialiased resize → rescale/normalise → patchify.
//!
//! The aim is **bit-exact** agreement with Hugging Face transformers'
//! `Qwen2VLImageProcessor` (the torchvision backend, which Qwen3-VL uses) on an
//! x86-64 CPU, i.e. the same `pixel_values` (f32, compared bit for bit) and the
//! same `image_grid_thw`. What the reference does, and what we do:
//!
//! 1. `PIL.Image.convert("RGB")`: alpha is dropped (not composited), grey is
//!    replicated, palettes are expanded. See [`to_rgb8`] for 16-bit inputs.
//! 2. [`smart_resize`] picks a size that is a multiple of
//!    `patch_size * merge_size` with a pixel count in `[min_pixels, max_pixels]`,
//!    replicating Python's float arithmetic (including `round()` = round half
//!    to even).
//! 3. torchvision `resize(BICUBIC, antialias=True)` on the uint8 tensor, which
//!    on CPU runs torch's native uint8 kernel (PIL-SIMD style): a horizontal
//!    pass then a vertical pass, each with a uint8 intermediate, Keys cubic
//!    (a = -0.5) weights widened by the downscale factor, normalised, and
//!    converted to int16 fixed point with a precision chosen from the largest
//!    weight. [`resize_bicubic_aa`] reproduces that integer arithmetic exactly.
//!    A pass whose size does not change is skipped, as torch does.
//! 4. Fused rescale + normalise in f32: `(x - mean/r) / (std/r)` with `r` the
//!    rescale factor (1/255), i.e. `(x - 127.5) / 127.5` for Qwen3-VL.
//! 5. Patchify into rows of `3 * temporal_patch_size * patch_size²` values,
//!    the single frame repeated `temporal_patch_size` times, rows ordered by
//!    `merge_size × merge_size` windows (see [`PreprocessedImage`]).
//!
//! [`load_image`] / [`decode_image`] also apply the EXIF orientation, as
//! transformers' `load_image` (`ImageOps.exif_transpose`) does for paths/URLs.
//! Both enforce the default [`ImageLimits`] (dimensions checked from the header
//! before decoding, regular files only, a size cap); [`load_image_limited`] /
//! [`decode_image_limited`] take other limits.
//!
//! Exactness, as checked with `tools/check_preprocess.py` (see its header for
//! how to run it) against torch 2.11 / torchvision 0.26 / transformers 5.17
//! on an AVX-512 CPU: resize, normalise and patchify are bit-exact; PNG, BMP,
//! GIF and lossless WebP decode to the same pixels as PIL. Not exact: JPEG
//! (and presumably lossy WebP), decoded here by zune-jpeg / image-webp rather
//! than libjpeg-turbo / libwebp, differ from PIL by a few levels (more in
//! chroma-heavy content). Other CPUs: torch's non-AVX fallback uses the same
//! integer arithmetic, so it should agree, but only AVX-512 was tested.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};

mod limits;
pub use limits::{decode_image_limited, load_image_limited, read_image_file, ImageLimits};

/// Qwen3-VL's default `size.shortest_edge` (minimum pixel count).
pub const QWEN3_VL_MIN_PIXELS: u64 = 65_536;
/// Qwen3-VL's default `size.longest_edge` (maximum pixel count).
pub const QWEN3_VL_MAX_PIXELS: u64 = 16_777_216;
/// Largest accepted `max(h, w) / min(h, w)`, as in transformers.
const MAX_ASPECT_RATIO: f64 = 200.0;
/// transformers' default rescale factor.
const DEFAULT_RESCALE: f64 = 1.0 / 255.0;

/// Everything that can go wrong while loading or preprocessing an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PreprocessError {
    /// The file could not be opened or read.
    #[error("cannot read image file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The data is truncated, corrupt, or otherwise undecodable.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// The data is not in a format we can decode (PNG, JPEG, WebP, BMP, GIF).
    #[error("unsupported image format: {0}")]
    UnsupportedFormat(String),
    /// The image has no pixels.
    #[error("image is empty ({width}x{height} pixels)")]
    Empty { width: u32, height: u32 },
    /// The image is too elongated for the model (more than 200:1).
    #[error("image is {width}x{height}: its aspect ratio must be at most 200:1")]
    AspectRatio { width: u32, height: u32 },
    /// `smart_resize` produced a zero-sized image (only with `min_pixels = 0`).
    #[error("image {width}x{height} resizes to nothing; use a positive min_pixels")]
    TooSmall { width: u32, height: u32 },
    /// The preprocessor configuration is invalid or unsupported.
    #[error("bad preprocessor config: {0}")]
    Config(String),
    /// The header announces more pixels than [`ImageLimits`] allow; refused before decoding.
    #[error("image is {width}x{height} pixels, over the limit of {limit}")]
    TooLarge { width: u32, height: u32, limit: String },
    /// The file or data is bigger than [`ImageLimits::max_file_bytes`].
    #[error("image data {what} is over the limit of {max_bytes} bytes")]
    FileTooLarge { what: String, max_bytes: u64 },
    /// The path names a FIFO, a device, a directory or another non-regular file.
    #[error("{path} is not a regular file")]
    NotRegularFile { path: PathBuf },
}

impl PreprocessError {
    /// Prefix decode-type messages with the file they came from.
    fn in_file(self, path: &Path) -> Self {
        match self {
            Self::Decode(m) => Self::Decode(format!("{}: {m}", path.display())),
            Self::UnsupportedFormat(m) => {
                Self::UnsupportedFormat(format!("{}: {m}", path.display()))
            }
            other => other,
        }
    }
}

fn config_err(msg: impl Into<String>) -> PreprocessError {
    PreprocessError::Config(msg.into())
}

/// Settings of the image processor (from `preprocessor_config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessConfig {
    /// Spatial patch size of the vision encoder (16 for Qwen3-VL).
    pub patch_size: usize,
    /// Frames per temporal patch; a still image is repeated this many times (2).
    pub temporal_patch_size: usize,
    /// Side of the square of patches merged into one LLM token (2).
    pub merge_size: usize,
    /// Minimum pixel count after resizing (`size.shortest_edge`).
    pub min_pixels: u64,
    /// Maximum pixel count after resizing (`size.longest_edge`).
    pub max_pixels: u64,
    /// Per-channel mean, in units of the rescaled image (0.5 for Qwen3-VL).
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation, in units of the rescaled image (0.5).
    pub image_std: [f32; 3],
    /// Rescale factor applied to uint8 pixels before normalising (1/255).
    pub rescale_factor: f64,
    /// Optional user cap on image tokens: lowers the effective `max_pixels`
    /// to `tokens * (patch_size * merge_size)²` (and `min_pixels` with it, if
    /// needed), see [`PreprocessConfig::pixel_bounds`].
    pub max_image_tokens: Option<usize>,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self::qwen3_vl_default()
    }
}

impl PreprocessConfig {
    /// Qwen3-VL's settings: 16px patches, 2 frames, 2×2 merge, 65536..=16777216
    /// pixels, mean = std = 0.5, rescale 1/255, no token cap.
    pub fn qwen3_vl_default() -> Self {
        Self {
            patch_size: 16,
            temporal_patch_size: 2,
            merge_size: 2,
            min_pixels: QWEN3_VL_MIN_PIXELS,
            max_pixels: QWEN3_VL_MAX_PIXELS,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            rescale_factor: DEFAULT_RESCALE,
            max_image_tokens: None,
        }
    }

    /// Parse a `preprocessor_config.json`. Keys read: `size.shortest_edge` /
    /// `size.longest_edge` (or `size.min_pixels` / `size.max_pixels`), top-level
    /// `min_pixels` / `max_pixels` (which win, as in transformers), `patch_size`,
    /// `temporal_patch_size`, `merge_size`, `image_mean`, `image_std`,
    /// `rescale_factor`. Missing keys take Qwen3-VL's defaults. `do_resize`,
    /// `do_rescale`, `do_normalize` or `do_convert_rgb` set to false are rejected
    /// rather than silently ignored. Other keys are ignored.
    pub fn from_json(text: &str) -> Result<Self, PreprocessError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| config_err(format!("preprocessor config is not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| config_err("preprocessor config must be a JSON object"))?;
        let mut cfg = Self::qwen3_vl_default();
        if let Some(size) = obj.get("size").filter(|v| !v.is_null()) {
            let size = size
                .as_object()
                .ok_or_else(|| config_err("`size` must be an object"))?;
            let min = json_uint(size, "shortest_edge")?.or(json_uint(size, "min_pixels")?);
            let max = json_uint(size, "longest_edge")?.or(json_uint(size, "max_pixels")?);
            cfg.min_pixels = min.unwrap_or(cfg.min_pixels);
            cfg.max_pixels = max.unwrap_or(cfg.max_pixels);
        }
        cfg.min_pixels = json_uint(obj, "min_pixels")?.unwrap_or(cfg.min_pixels);
        cfg.max_pixels = json_uint(obj, "max_pixels")?.unwrap_or(cfg.max_pixels);
        cfg.patch_size = json_usize(obj, "patch_size")?.unwrap_or(cfg.patch_size);
        cfg.temporal_patch_size =
            json_usize(obj, "temporal_patch_size")?.unwrap_or(cfg.temporal_patch_size);
        cfg.merge_size = json_usize(obj, "merge_size")?.unwrap_or(cfg.merge_size);
        cfg.image_mean = json_triple(obj, "image_mean")?.unwrap_or(cfg.image_mean);
        cfg.image_std = json_triple(obj, "image_std")?.unwrap_or(cfg.image_std);
        if let Some(r) = obj.get("rescale_factor").filter(|v| !v.is_null()) {
            cfg.rescale_factor = r
                .as_f64()
                .ok_or_else(|| config_err("`rescale_factor` must be a number"))?;
        }
        for key in ["do_resize", "do_rescale", "do_normalize", "do_convert_rgb"] {
            if obj.get(key).and_then(serde_json::Value::as_bool) == Some(false) {
                return Err(config_err(format!("`{key}: false` is not supported")));
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// `patch_size * merge_size`: resized sides are multiples of this (32).
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Values per patch row: `3 * temporal_patch_size * patch_size²` (1536).
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Effective `(min_pixels, max_pixels)`: the configured bounds, with
    /// `max_pixels` lowered to `max_image_tokens * factor²` when a token cap is
    /// set, and `min_pixels` lowered to that too if it was larger (so the cap
    /// holds; only the `max(factor, ..)` clamp of very elongated images can
    /// still exceed it slightly).
    pub fn pixel_bounds(&self) -> (u64, u64) {
        let mut max = self.max_pixels;
        if let Some(tokens) = self.max_image_tokens {
            let f = self.factor() as u64;
            max = max.min((tokens as u64).saturating_mul(f.saturating_mul(f)));
        }
        (self.min_pixels.min(max), max)
    }

    /// Check the settings are usable (positive sizes, non-zero std, ...).
    pub fn validate(&self) -> Result<(), PreprocessError> {
        if self.patch_size == 0 || self.temporal_patch_size == 0 || self.merge_size == 0 {
            return Err(config_err(
                "patch_size, temporal_patch_size and merge_size must be positive",
            ));
        }
        if u32::try_from(self.factor()).is_err() {
            return Err(config_err("patch_size * merge_size is too large"));
        }
        if self.min_pixels == 0 || self.max_pixels == 0 {
            return Err(config_err("min_pixels (size.shortest_edge) and max_pixels (size.longest_edge) must be positive"));
        }
        if self.max_image_tokens == Some(0) {
            return Err(config_err("max_image_tokens must be positive"));
        }
        if self.image_std.iter().any(|&s| s == 0.0 || !s.is_finite())
            || self.image_mean.iter().any(|m| !m.is_finite())
        {
            return Err(config_err(
                "image_std must be non-zero and image_mean/image_std finite",
            ));
        }
        if !(self.rescale_factor.is_finite() && self.rescale_factor > 0.0) {
            return Err(config_err("rescale_factor must be a positive number"));
        }
        Ok(())
    }
}

fn json_uint(
    obj: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<u64>, PreprocessError> {
    let Some(v) = obj.get(key).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    if let Some(n) = v.as_u64() {
        return Ok(Some(n));
    }
    match v.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(63) => Ok(Some(f as u64)),
        _ => Err(config_err(format!(
            "`{key}` must be a non-negative integer, got {v}"
        ))),
    }
}

fn json_usize(
    obj: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<usize>, PreprocessError> {
    json_uint(obj, key)?
        .map(|n| usize::try_from(n).map_err(|_| config_err(format!("`{key}` is too large"))))
        .transpose()
}

/// A number (applied to all channels) or an array of 3 numbers, rounded to
/// f32 as `torch.tensor(list)` does.
fn json_triple(
    obj: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<[f32; 3]>, PreprocessError> {
    let Some(v) = obj.get(key).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bad = || {
        config_err(format!(
            "`{key}` must be a number or a list of 3 numbers, got {v}"
        ))
    };
    if let Some(x) = v.as_f64() {
        return Ok(Some([x as f32; 3]));
    }
    let arr = v.as_array().filter(|a| a.len() == 3).ok_or_else(bad)?;
    let mut out = [0f32; 3];
    for (o, x) in out.iter_mut().zip(arr) {
        *o = x.as_f64().ok_or_else(bad)? as f32;
    }
    Ok(Some(out))
}

/// transformers' `smart_resize`: returns `(height, width)`, both multiples of
/// `factor`, with a pixel count in `[min_pixels, max_pixels]` where possible,
/// keeping the aspect ratio as close as possible.
///
/// Exactly Python's semantics: `round()` is round-half-to-even (208×656 at
/// factor 32 gives 6.5 → 6 and 20.5 → 20), the downscale branch clamps each
/// side to at least `factor`, the upscale branch does not. Errors: a zero side
/// ([`PreprocessError::Empty`]), aspect ratio above 200
/// ([`PreprocessError::AspectRatio`]), a zero result (only possible with
/// `min_pixels == 0`, [`PreprocessError::TooSmall`]).
pub fn smart_resize(
    height: u32,
    width: u32,
    factor: u32,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(u32, u32), PreprocessError> {
    if height == 0 || width == 0 {
        return Err(PreprocessError::Empty { width, height });
    }
    if factor == 0 {
        return Err(config_err("smart_resize factor must be positive"));
    }
    let (h, w, f) = (f64::from(height), f64::from(width), f64::from(factor));
    if h.max(w) / h.min(w) > MAX_ASPECT_RATIO {
        return Err(PreprocessError::AspectRatio { width, height });
    }
    let fu = u64::from(factor);
    // Python: `round(x / f) * f` etc. For any real image every value here is
    // below 2^53, so the casts are exact and `(h * w) as f64` equals Python's
    // int → float; absurd bounds saturate and are rejected below.
    let area = (u64::from(height) * u64::from(width)) as f64;
    let mut h_bar = ((h / f).round_ties_even() as u64).saturating_mul(fu);
    let mut w_bar = ((w / f).round_ties_even() as u64).saturating_mul(fu);
    if u128::from(h_bar) * u128::from(w_bar) > u128::from(max_pixels) {
        let beta = (area / max_pixels as f64).sqrt();
        h_bar = fu.max(((h / beta / f).floor() as u64).saturating_mul(fu));
        w_bar = fu.max(((w / beta / f).floor() as u64).saturating_mul(fu));
    } else if u128::from(h_bar) * u128::from(w_bar) < u128::from(min_pixels) {
        let beta = (min_pixels as f64 / area).sqrt();
        h_bar = ((h * beta / f).ceil() as u64).saturating_mul(fu);
        w_bar = ((w * beta / f).ceil() as u64).saturating_mul(fu);
    }
    if h_bar == 0 || w_bar == 0 {
        return Err(PreprocessError::TooSmall { width, height });
    }
    let too_big = || {
        config_err(format!(
            "{width}x{height} would resize beyond 2^32 pixels per side"
        ))
    };
    Ok((
        u32::try_from(h_bar).map_err(|_| too_big())?,
        u32::try_from(w_bar).map_err(|_| too_big())?,
    ))
}

/// Keys' cubic convolution kernel with a = -0.5 (PIL's / torch's antialiased
/// bicubic), evaluated in the same operation order as torch's C++
/// (`((A + 2) * x - (A + 3)) * x * x + 1` and
/// `((A * x - 5 * A) * x + 8 * A) * x - 4 * A`). Whether the compiler fused
/// these multiply-adds in torch's build does not matter: evaluating them with
/// FMA instead changes no int16 weight for any (in, out) size pair up to
/// 1200 × 1200 nor in a sample up to 3000 (checked while writing this).
fn keys_cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// Precomputed resampling taps of one axis, in torch's int16 fixed point.
#[derive(Clone, Debug, PartialEq)]
struct AxisFilter {
    /// First input index read by each output index.
    starts: Vec<usize>,
    /// Number of taps used by each output index.
    lens: Vec<usize>,
    /// Row stride of `weights` (the maximum number of taps).
    taps: usize,
    /// `out_size * taps` fixed-point weights (only `lens[i]` used per row).
    weights: Vec<i16>,
    /// Fixed-point precision: weights are scaled by `2^precision`.
    precision: u32,
}

/// torch's `_compute_index_ranges_int16_weights` for bicubic, antialias=True,
/// align_corners=False and no explicit scale factor: float weights in f64,
/// normalised per output index, then scaled to int16 with the largest
/// precision that keeps `2 * max_weight` below 2^15, rounded half away from 0.
fn axis_filter(in_size: usize, out_size: usize) -> AxisFilter {
    let scale = in_size as f64 / out_size as f64;
    let (support, invscale) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    let taps = support.ceil() as usize * 2 + 1;
    let mut float_w = vec![0f64; out_size * taps];
    let (mut starts, mut lens) = (Vec::with_capacity(out_size), Vec::with_capacity(out_size));
    let mut wt_max = 0f64;
    for (i, row) in float_w.chunks_exact_mut(taps).enumerate() {
        let center = scale * (i as f64 + 0.5);
        // `as i64` truncates toward zero like C++'s static_cast.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let len = (xmax - xmin).clamp(0, taps as i64) as usize;
        let mut total = 0f64;
        for (j, w) in row[..len].iter_mut().enumerate() {
            *w = keys_cubic(((j as i64 + xmin) as f64 - center + 0.5) * invscale);
            total += *w;
        }
        if total != 0.0 {
            for w in &mut row[..len] {
                *w /= total;
                wt_max = wt_max.max(*w);
            }
        }
        starts.push(xmin as usize);
        lens.push(len);
    }
    let mut precision = 0u32;
    while precision < 22 && ((0.5 + wt_max * f64::from(1u32 << (precision + 1))) as i32) < (1 << 15)
    {
        precision += 1;
    }
    let unit = f64::from(1u32 << precision);
    let weights = float_w
        .iter()
        .map(|&w| {
            let v = w * unit;
            // C++ `(int)(v ± 0.5)` then stored as int16_t.
            (if v < 0.0 {
                (v - 0.5) as i32
            } else {
                (v + 0.5) as i32
            }) as i16
        })
        .collect();
    AxisFilter {
        starts,
        lens,
        taps,
        weights,
        precision,
    }
}

#[inline]
fn fixed_to_u8(acc: i32, precision: u32) -> u8 {
    (acc >> precision).clamp(0, 255) as u8
}

/// Horizontal pass: `rows` rows of `in_w` RGB pixels → rows of `out_w` pixels.
fn resample_horizontal(src: &[u8], in_w: usize, out_w: usize, f: &AxisFilter) -> Vec<u8> {
    let rows = src.len() / (in_w * 3);
    let mut dst = vec![0u8; rows * out_w * 3];
    let half = 1i32 << (f.precision.max(1) - 1);
    for (src_row, dst_row) in src
        .chunks_exact(in_w * 3)
        .zip(dst.chunks_exact_mut(out_w * 3))
    {
        for (x, px) in dst_row.chunks_exact_mut(3).enumerate() {
            let (start, len) = (f.starts[x], f.lens[x]);
            let ws = &f.weights[x * f.taps..x * f.taps + len];
            let pixels = &src_row[start * 3..(start + len) * 3];
            let (mut r, mut g, mut b) = (half, half, half);
            for (&w, p) in ws.iter().zip(pixels.chunks_exact(3)) {
                let w = i32::from(w);
                r += w * i32::from(p[0]);
                g += w * i32::from(p[1]);
                b += w * i32::from(p[2]);
            }
            px[0] = fixed_to_u8(r, f.precision);
            px[1] = fixed_to_u8(g, f.precision);
            px[2] = fixed_to_u8(b, f.precision);
        }
    }
    dst
}

/// Vertical pass: rows of `row_len` bytes, `f` maps input rows to output rows.
fn resample_vertical(src: &[u8], row_len: usize, out_h: usize, f: &AxisFilter) -> Vec<u8> {
    let mut dst = vec![0u8; out_h * row_len];
    let mut acc = vec![0i32; row_len];
    let half = 1i32 << (f.precision.max(1) - 1);
    for (y, dst_row) in dst.chunks_exact_mut(row_len).enumerate() {
        acc.fill(half);
        let (start, len) = (f.starts[y], f.lens[y]);
        let ws = &f.weights[y * f.taps..y * f.taps + len];
        for (k, &w) in ws.iter().enumerate() {
            let src_row = &src[(start + k) * row_len..(start + k + 1) * row_len];
            // i16 x i16 -> i32 products let the compiler use pmaddwd-style SIMD.
            for (a, &p) in acc.iter_mut().zip(src_row) {
                *a += i32::from(w) * i32::from(i16::from(p));
            }
        }
        for (d, &a) in dst_row.iter_mut().zip(&acc) {
            *d = fixed_to_u8(a, f.precision);
        }
    }
    dst
}

/// Resize like `torchvision.transforms.v2.functional.resize(img_uint8,
/// [new_h, new_w], BICUBIC, antialias=True)` on CPU, bit for bit: horizontal
/// pass first, then vertical, with uint8 rounding in between; an axis whose
/// size is unchanged is not resampled. An empty input or output gives a black
/// image of the requested size (torch would raise).
pub fn resize_bicubic_aa(img: &RgbImage, new_w: u32, new_h: u32) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    if in_w == 0 || in_h == 0 || new_w == 0 || new_h == 0 {
        return RgbImage::new(new_w, new_h);
    }
    let (iw, ih, ow, oh) = (in_w as usize, in_h as usize, new_w as usize, new_h as usize);
    let mut data: Cow<'_, [u8]> = Cow::Borrowed(img.as_raw());
    if ow != iw {
        data = Cow::Owned(resample_horizontal(&data, iw, ow, &axis_filter(iw, ow)));
    }
    if oh != ih {
        data = Cow::Owned(resample_vertical(&data, ow * 3, oh, &axis_filter(ih, oh)));
    }
    let buf = data.into_owned();
    // The buffer length is exactly new_w * new_h * 3 by construction.
    RgbImage::from_raw(new_w, new_h, buf).unwrap_or_else(|| RgbImage::new(new_w, new_h))
}

/// Size of an image in patches: `t` frames-groups × `h` rows × `w` columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GridThw {
    pub t: usize,
    pub h: usize,
    pub w: usize,
}

impl GridThw {
    /// `t * h * w`: rows of `pixel_values`.
    pub fn num_patches(&self) -> usize {
        self.t * self.h * self.w
    }

    /// LLM tokens after the `merge × merge` patch merger: `t*h*w / merge²`.
    pub fn num_tokens(&self, merge: usize) -> usize {
        self.num_patches() / (merge * merge).max(1)
    }
}

/// The model input for one image.
///
/// The model input is `num_patches × patch_dim`, row-major, like HF's
/// `pixel_values` ([`Self::pixels`]). Patch rows run over merge windows: for
/// each window row `bh`, window column `bw`, then `mh`, `mw` inside the
/// `merge × merge` window, the patch at patch row `bh*merge + mh` and column
/// `bw*merge + mw`. Inside a row, value `((c * temporal + t) * patch + py) *
/// patch + px` is channel `c`, frame `t`, pixel `(py, px)` of that patch,
/// normalised. All `temporal` frames of a still image are the same.
///
/// What is kept is the resized 8-bit image and the normalisation table, a
/// quarter of the f32 values of one frame: the input is cut, normalised and
/// repeated where it is built ([`Self::to_tensor`], on the device), so the host
/// only converts and resizes.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessedImage {
    /// The resized image, RGB, row-major: `resized_height × resized_width × 3`.
    pub rgb: Vec<u8>,
    /// The fused rescale + normalise per channel: value `v` of channel `c`
    /// becomes `lut[c][v]` (see `normalize_lut`).
    pub lut: [[f32; 256]; 3],
    /// Frames per patch (`temporal_patch_size`).
    pub temporal: usize,
    /// Patches per side of a merge window (`merge_size`).
    pub merge: usize,
    pub grid: GridThw,
    pub patch_dim: usize,
    pub resized_width: u32,
    pub resized_height: u32,
    pub original_width: u32,
    pub original_height: u32,
}

impl PreprocessedImage {
    /// Side of a patch in pixels.
    fn patch(&self) -> usize {
        let per_frame = self.patch_dim / (3 * self.temporal.max(1));
        (per_frame as f64).sqrt().round() as usize
    }

    /// The model input as a `(num_patches, patch_dim)` f32 tensor on `device`:
    /// the 8-bit image is uploaded, then cut into patch rows, normalised and
    /// repeated over the frames there; the same values as [`Self::pixels`].
    pub fn to_tensor(
        &self,
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let (img, lut) = self.upload(device)?;
        self.rows(&img, &lut)
    }

    /// [`Self::to_tensor`] in `dtype`. On CUDA in bf16 one kernel cuts,
    /// normalises and rounds the uploaded bytes (the same values as
    /// `to_tensor` then a cast, without its f32 and index intermediates).
    pub fn to_tensor_as(
        &self,
        device: &candle_core::Device,
        dtype: candle_core::DType,
    ) -> crate::error::Result<candle_core::Tensor> {
        let (img, lut) = self.upload(device)?;
        if dtype == candle_core::DType::BF16 {
            let (p, m, t) = (self.patch(), self.merge.max(1), self.temporal.max(1));
            if let Some(rows) = crate::kernels::patch_rows(&img, &lut, (self.grid.h, self.grid.w), p, m, t)? {
                return Ok(rows);
            }
        }
        Ok(self.rows(&img, &lut)?.to_dtype(dtype)?)
    }

    /// The 8-bit image (flat) and the normalisation tables (3 x 256, f32) on
    /// `device`, once the image is checked against its grid.
    fn upload(
        &self,
        device: &candle_core::Device,
    ) -> candle_core::Result<(candle_core::Tensor, candle_core::Tensor)> {
        use candle_core::Tensor;
        let (p, m) = (self.patch(), self.merge.max(1));
        let (gh, gw) = (self.grid.h, self.grid.w);
        if gh % m != 0 || gw % m != 0 || self.rgb.len() != gh * p * gw * p * 3 || self.grid.t != 1 {
            candle_core::bail!("preprocessed image of {} bytes does not match its grid {:?}", self.rgb.len(), self.grid);
        }
        let img = Tensor::from_slice(&self.rgb, self.rgb.len(), device)?;
        let lut = Tensor::from_iter(self.lut.iter().flatten().copied(), device)?;
        Ok((img, lut))
    }

    /// The patch rows of the uploaded image `img` with the tables `lut` ([`Self::upload`]'s),
    /// by tensor ops.
    fn rows(
        &self,
        img: &candle_core::Tensor,
        lut: &candle_core::Tensor,
    ) -> candle_core::Result<candle_core::Tensor> {
        use candle_core::{DType, Tensor};
        let (p, m, t) = (self.patch(), self.merge.max(1), self.temporal.max(1));
        let (gh, gw) = (self.grid.h, self.grid.w);
        let n = self.grid.num_patches();
        let img = img.reshape(vec![gh / m, m, p, gw / m, m, p, 3])?;
        // (bh, mh, py, bw, mw, px, c) -> (bh, bw, mh, mw, c, py, px): patch rows.
        let rows = img.permute(vec![0, 3, 1, 4, 6, 2, 5])?.contiguous()?.reshape((n, 3, 1, p * p))?;
        let offsets = Tensor::new(&[0u32, 256, 512], img.device())?.reshape((1, 3, 1, 1))?;
        let index = rows.to_dtype(DType::U32)?.broadcast_add(&offsets)?.flatten_all()?;
        let frame = lut.index_select(&index, 0)?.reshape((n, 3, 1, p * p))?;
        if t == 1 {
            return frame.reshape((n, self.patch_dim));
        }
        Tensor::cat(&vec![&frame; t], 2)?.reshape((n, self.patch_dim))
    }

    /// The model input on the host, `num_patches × patch_dim` (HF's
    /// `pixel_values`).
    pub fn pixels(&self) -> Vec<f32> {
        let (p, m, t) = (self.patch(), self.merge.max(1), self.temporal.max(1));
        let width = self.resized_width as usize;
        let windows_per_row = (self.grid.w / m).max(1);
        let mut out = Vec::with_capacity(self.grid.num_patches() * self.patch_dim);
        for index in 0..self.grid.num_patches() {
            let (window, inner) = (index / (m * m), index % (m * m));
            let y0 = ((window / windows_per_row) * m + inner / m) * p;
            let x0 = ((window % windows_per_row) * m + inner % m) * p;
            for (c, table) in self.lut.iter().enumerate() {
                for _ in 0..t {
                    for py in 0..p {
                        let start = ((y0 + py) * width + x0) * 3;
                        out.extend(self.rgb[start..start + 3 * p].chunks_exact(3).map(|px| table[usize::from(px[c])]));
                    }
                }
            }
        }
        out
    }
}

/// Convert to 8-bit RGB the way `PIL.Image.convert("RGB")` does for the image
/// PIL would have opened: alpha dropped (not composited), grey replicated.
/// 16-bit data: PIL opens 16-bit RGB(A)/grey+alpha PNGs as 8-bit using the high
/// byte, so we take `v >> 8`; 16-bit grey opens as mode `I;16`, whose RGB
/// conversion clips, so we take `min(v, 255)`. Float images (not produced by
/// our decoders) are clamped to [0, 1] and scaled by 255 with rounding.
pub fn to_rgb8(img: &DynamicImage) -> Cow<'_, RgbImage> {
    let (w, h) = (img.width(), img.height());
    let out = match img {
        DynamicImage::ImageRgb8(rgb) => return Cow::Borrowed(rgb),
        DynamicImage::ImageRgba8(i) => {
            map_pixels::<u8, 4>(i.as_raw(), w, h, |p| [p[0], p[1], p[2]])
        }
        DynamicImage::ImageLuma8(i) => map_pixels::<u8, 1>(i.as_raw(), w, h, |p| [p[0]; 3]),
        DynamicImage::ImageLumaA8(i) => map_pixels::<u8, 2>(i.as_raw(), w, h, |p| [p[0]; 3]),
        DynamicImage::ImageRgb16(i) => {
            map_pixels::<u16, 3>(i.as_raw(), w, h, |p| rgb3(p).map(high_byte))
        }
        DynamicImage::ImageRgba16(i) => {
            map_pixels::<u16, 4>(i.as_raw(), w, h, |p| rgb3(p).map(high_byte))
        }
        DynamicImage::ImageLumaA16(i) => {
            map_pixels::<u16, 2>(i.as_raw(), w, h, |p| [high_byte(p[0]); 3])
        }
        DynamicImage::ImageLuma16(i) => {
            map_pixels::<u16, 1>(i.as_raw(), w, h, |p| [p[0].min(255) as u8; 3])
        }
        _ => None,
    };
    Cow::Owned(out.unwrap_or_else(|| img.to_rgb8()))
}

/// Build an RGB image from `N`-channel samples with `f` per pixel (`None` if
/// the buffer does not match the size, which the `image` crate rules out).
fn map_pixels<T, const N: usize>(
    raw: &[T],
    w: u32,
    h: u32,
    f: impl Fn(&[T]) -> [u8; 3],
) -> Option<RgbImage> {
    let mut buf = vec![0u8; raw.len() / N * 3];
    for (out, p) in buf.chunks_exact_mut(3).zip(raw.chunks_exact(N)) {
        out.copy_from_slice(&f(p));
    }
    RgbImage::from_raw(w, h, buf)
}

fn rgb3<T: Copy>(p: &[T]) -> [T; 3] {
    [p[0], p[1], p[2]]
}

fn high_byte(v: u16) -> u8 {
    (v >> 8) as u8
}

/// Per-channel lookup table of the fused rescale + normalise, in f32 exactly
/// as torch computes it: `mean' = f32(mean) * f32(1/rescale)` (likewise
/// `std'`), then `(f32(x) - mean') / std'`.
fn normalize_lut(cfg: &PreprocessConfig) -> [[f32; 256]; 3] {
    let inv = (1.0 / cfg.rescale_factor) as f32;
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        let (mean, std) = (cfg.image_mean[c] * inv, cfg.image_std[c] * inv);
        for (v, out) in table.iter_mut().enumerate() {
            *out = (v as f32 - mean) / std;
        }
    }
    lut
}

/// The whole pipeline: RGB conversion ([`to_rgb8`]), [`smart_resize`] with
/// [`PreprocessConfig::pixel_bounds`], [`resize_bicubic_aa`] (skipped when the
/// size is unchanged), normalisation and patchify.
pub fn preprocess(
    img: &DynamicImage,
    cfg: &PreprocessConfig,
) -> Result<PreprocessedImage, PreprocessError> {
    cfg.validate()?;
    let (width, height) = (img.width(), img.height());
    if width == 0 || height == 0 {
        return Err(PreprocessError::Empty { width, height });
    }
    let rgb = to_rgb8(img);
    let (min_pixels, max_pixels) = cfg.pixel_bounds();
    // validate() checked that the factor fits in u32.
    let factor = u32::try_from(cfg.factor())
        .map_err(|_| config_err("patch_size * merge_size is too large"))?;
    let (new_h, new_w) = smart_resize(height, width, factor, min_pixels, max_pixels)?;
    let resized = if (new_w, new_h) == (width, height) {
        rgb
    } else {
        Cow::Owned(resize_bicubic_aa(&rgb, new_w, new_h))
    };
    let p = cfg.patch_size;
    let grid = GridThw { t: 1, h: new_h as usize / p, w: new_w as usize / p };
    Ok(PreprocessedImage {
        rgb: resized.into_owned().into_raw(),
        lut: normalize_lut(cfg),
        temporal: cfg.temporal_patch_size,
        merge: cfg.merge_size,
        grid,
        patch_dim: cfg.patch_dim(),
        resized_width: new_w,
        resized_height: new_h,
        original_width: width,
        original_height: height,
    })
}

/// Read and decode an image file (see [`decode_image`]) under the default
/// [`ImageLimits`]. Errors name the file: [`PreprocessError::Read`] when it
/// cannot be read, `NotRegularFile` / `FileTooLarge` / `TooLarge` when a limit
/// refuses it, `Decode` / `UnsupportedFormat` / `Empty` otherwise.
pub fn load_image(path: &Path) -> Result<DynamicImage, PreprocessError> {
    load_image_limited(path, &ImageLimits::default())
}

/// Decode PNG / JPEG / WebP / BMP / GIF bytes (format sniffed from the
/// content; GIF: first frame) under the default [`ImageLimits`], and apply the
/// EXIF orientation if there is one, like transformers' `load_image`.
/// Truncated or corrupt data gives [`PreprocessError::Decode`], unknown data
/// [`PreprocessError::UnsupportedFormat`], a 0-pixel image
/// [`PreprocessError::Empty`], too many pixels [`PreprocessError::TooLarge`].
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage, PreprocessError> {
    decode_image_limited(bytes, &ImageLimits::default())
}

fn map_image_error(e: image::ImageError) -> PreprocessError {
    use image::ImageError as E;
    match e {
        E::Unsupported(u) => PreprocessError::UnsupportedFormat(u.to_string()),
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            PreprocessError::Decode(format!("data is truncated ({io})"))
        }
        E::Limits(l) => PreprocessError::Decode(format!("image too large to decode: {l}")),
        other => PreprocessError::Decode(other.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const DEFAULT_BOUNDS: (u64, u64) = (QWEN3_VL_MIN_PIXELS, QWEN3_VL_MAX_PIXELS);

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/preprocess")
    }

    fn resize_default(h: u32, w: u32) -> (u32, u32) {
        smart_resize(h, w, 32, DEFAULT_BOUNDS.0, DEFAULT_BOUNDS.1).expect("valid size")
    }

    /// Small-bounds config with mean 0, std 1, rescale 1: pixel values come out unchanged.
    fn identity_norm_config() -> PreprocessConfig {
        PreprocessConfig {
            min_pixels: 1024,
            max_pixels: 1 << 20,
            image_mean: [0.0; 3],
            image_std: [1.0; 3],
            rescale_factor: 1.0,
            ..PreprocessConfig::default()
        }
    }

    #[test]
    fn smart_resize_rounds_half_to_even_like_python() {
        // 208/32 = 6.5 -> 6 and 656/32 = 20.5 -> 20 (round-half-up would give 224x672).
        assert_eq!(resize_default(208, 656), (192, 640));
        assert_eq!(resize_default(1080, 1920), (1088, 1920));
    }

    #[test]
    fn smart_resize_upscales_below_min_pixels() {
        assert_eq!(resize_default(100, 300), (160, 448));
        assert_eq!(resize_default(50, 50), (256, 256));
    }

    #[test]
    fn smart_resize_downscales_above_max_pixels_with_factor_floor() {
        assert_eq!(resize_default(10000, 5000), (5792, 2880));
        // The downscale branch clamps the short side to at least `factor`.
        assert_eq!(resize_default(20000, 150), (20000, 160));
        assert_eq!(resize_default(30, 5000), (32, 4992));
    }

    #[test]
    fn smart_resize_keeps_sizes_already_on_the_grid() {
        assert_eq!(resize_default(1440, 2560), (1440, 2560));
    }

    #[test]
    fn max_image_tokens_caps_the_token_count() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(2560, 1440));
        let uncapped = preprocess(&img, &PreprocessConfig::default()).expect("preprocess");
        assert_eq!(uncapped.grid.num_tokens(2), 3600);
        let cfg = PreprocessConfig {
            max_image_tokens: Some(1024),
            ..PreprocessConfig::default()
        };
        assert_eq!(cfg.pixel_bounds(), (QWEN3_VL_MIN_PIXELS, 1024 * 32 * 32));
        let capped = preprocess(&img, &cfg).expect("preprocess");
        assert!(capped.grid.num_tokens(2) <= 1024, "{:?}", capped.grid);
        assert_eq!((capped.resized_height, capped.resized_width), (768, 1344));
        // A cap below min_pixels lowers min_pixels too.
        let tiny = PreprocessConfig {
            max_image_tokens: Some(16),
            ..PreprocessConfig::default()
        };
        assert_eq!(tiny.pixel_bounds(), (16 * 1024, 16 * 1024));
        let small =
            preprocess(&DynamicImage::ImageRgb8(RgbImage::new(40, 40)), &tiny).expect("preprocess");
        assert!(small.grid.num_tokens(2) <= 16, "{:?}", small.grid);
    }

    #[test]
    fn smart_resize_rejects_aspect_ratio_over_200() {
        assert!(matches!(
            smart_resize(1, 201, 32, DEFAULT_BOUNDS.0, DEFAULT_BOUNDS.1),
            Err(PreprocessError::AspectRatio {
                width: 201,
                height: 1
            })
        ));
        assert!(matches!(
            smart_resize(403, 2, 32, 1, u64::MAX),
            Err(PreprocessError::AspectRatio { .. })
        ));
        assert_eq!(resize_default(1, 200), (32, 3648));
    }

    #[test]
    fn smart_resize_rejects_zero_sizes_and_zero_results() {
        assert!(matches!(
            smart_resize(0, 10, 32, 1, 100),
            Err(PreprocessError::Empty {
                width: 10,
                height: 0
            })
        ));
        assert!(matches!(
            smart_resize(10, 0, 32, 1, 100),
            Err(PreprocessError::Empty { .. })
        ));
        assert!(matches!(
            smart_resize(10, 10, 32, u64::MAX, u64::MAX),
            Err(PreprocessError::Config(_))
        ));
        assert!(matches!(
            smart_resize(10, 10, 32, 0, 100),
            Err(PreprocessError::TooSmall { .. })
        ));
    }

    #[test]
    fn preprocess_rejects_empty_images() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(0, 0));
        assert!(matches!(
            preprocess(&img, &PreprocessConfig::default()),
            Err(PreprocessError::Empty { .. })
        ));
        let img = DynamicImage::ImageRgba8(image::RgbaImage::new(5, 0));
        assert!(matches!(
            preprocess(&img, &PreprocessConfig::default()),
            Err(PreprocessError::Empty { .. })
        ));
    }

    #[test]
    fn patch_rows_follow_merge_windows_then_channel_frame_y_x() {
        // 96x64 px, on the 32-px grid already: no resize, grid 4 rows x 6 columns.
        let img = RgbImage::from_fn(96, 64, |x, y| {
            image::Rgb([x as u8, y as u8, (x * 2 + y) as u8])
        });
        let cfg = identity_norm_config();
        let out = preprocess(&DynamicImage::ImageRgb8(img.clone()), &cfg).expect("preprocess");
        assert_eq!(out.grid, GridThw { t: 1, h: 4, w: 6 });
        let pixels = out.pixels();
        assert_eq!((out.patch_dim, pixels.len(), out.rgb.len()), (1536, 24 * 1536, 96 * 64 * 3));
        let mut row = 0;
        for bh in 0..2 {
            for bw in 0..3 {
                for (mh, mw) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let (py0, px0) = ((bh * 2 + mh) * 16, (bw * 2 + mw) * 16);
                    for (i, &v) in pixels[row * 1536..(row + 1) * 1536].iter().enumerate() {
                        let (c, t, y, x) = (i / 512, i / 256 % 2, i / 16 % 16, i % 16);
                        let _ = t; // both frames are the same image
                        let expect = img.get_pixel((px0 + x) as u32, (py0 + y) as u32).0[c];
                        assert_eq!(v, f32::from(expect), "row {row} index {i}");
                    }
                    row += 1;
                }
            }
        }
    }

    #[test]
    fn normalisation_maps_0_255_to_minus_one_one() {
        let img = RgbImage::from_fn(32, 32, |x, _| {
            if x < 16 {
                image::Rgb([0, 128, 255])
            } else {
                image::Rgb([255; 3])
            }
        });
        let cfg = PreprocessConfig {
            min_pixels: 1024,
            ..PreprocessConfig::default()
        };
        let out = preprocess(&DynamicImage::ImageRgb8(img), &cfg).expect("preprocess");
        assert_eq!(out.grid, GridThw { t: 1, h: 2, w: 2 });
        let pixels = out.pixels();
        let first = &pixels[..1536];
        assert_eq!(
            (first[0], first[512], first[1024]),
            (-1.0, (128.0 - 127.5) / 127.5, 1.0)
        );
        assert_eq!(first[256], -1.0, "second frame repeats the first");
        assert!(pixels[1536..2 * 1536].iter().all(|&v| v == 1.0));
        // The tensor repeats the frame where it is built: the same values as on the host.
        let t = out.to_tensor(&candle_core::Device::Cpu).expect("tensor");
        assert_eq!(t.dims(), &[4, 1536]);
        assert_eq!(t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("values"), pixels);
    }

    #[test]
    fn to_rgb8_matches_pil_convert_rgb() {
        let rgba =
            image::RgbaImage::from_raw(2, 1, vec![10, 20, 30, 0, 40, 50, 60, 128]).expect("rgba");
        let rgb = to_rgb8(&DynamicImage::ImageRgba8(rgba)).into_owned();
        assert_eq!(
            rgb.as_raw(),
            &[10, 20, 30, 40, 50, 60],
            "alpha is dropped, not composited"
        );
        let la = image::GrayAlphaImage::from_raw(1, 1, vec![77, 3]).expect("la");
        assert_eq!(
            to_rgb8(&DynamicImage::ImageLumaA8(la)).as_raw(),
            &[77, 77, 77]
        );
        let l16 = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(3, 1, vec![200, 256, 65535])
            .expect("l16");
        assert_eq!(
            to_rgb8(&DynamicImage::ImageLuma16(l16)).as_raw(),
            &[200, 200, 200, 255, 255, 255, 255, 255, 255]
        );
        let rgb16 =
            image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(1, 1, vec![255, 32768, 65535])
                .expect("rgb16");
        assert_eq!(
            to_rgb8(&DynamicImage::ImageRgb16(rgb16)).as_raw(),
            &[0, 128, 255]
        );
    }

    #[test]
    fn resize_skips_unchanged_axes_and_is_identity_at_same_size() {
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([(x * 30) as u8, (y * 50) as u8, 9]));
        assert_eq!(resize_bicubic_aa(&img, 7, 5), img);
        // Only the width changes: every output column is a function of its row only.
        let wide = resize_bicubic_aa(&img, 13, 5);
        assert_eq!(wide.dimensions(), (13, 5));
        assert!(wide.rows().all(|row| row.clone().all(|p| p.0[2] == 9)));
        let empty = resize_bicubic_aa(&RgbImage::new(0, 3), 4, 4);
        assert_eq!(empty.dimensions(), (4, 4));
    }

    #[test]
    fn axis_filter_weights_sum_to_one_in_fixed_point() {
        for (inp, out) in [
            (10, 3),
            (3, 10),
            (1000, 7),
            (7, 1000),
            (1440, 1088),
            (656, 640),
        ] {
            let f = axis_filter(inp, out);
            let unit = 1i32 << f.precision;
            for i in 0..out {
                let sum: i32 = f.weights[i * f.taps..i * f.taps + f.lens[i]]
                    .iter()
                    .map(|&w| i32::from(w))
                    .sum();
                assert!(
                    (sum - unit).abs() <= f.lens[i] as i32,
                    "{inp}->{out} row {i}: {sum} vs {unit}"
                );
                assert!(f.starts[i] + f.lens[i] <= inp);
            }
        }
    }

    #[test]
    fn resize_matches_torch_fixture_byte_for_byte() {
        let dir = fixture_dir();
        let mut cases = 0;
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .expect("fixture dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for input in entries
            .iter()
            .filter(|p| p.to_string_lossy().ends_with("_in.png"))
        {
            let expected_path =
                PathBuf::from(input.to_string_lossy().replace("_in.png", "_out.png"));
            let src = load_image(input).expect("fixture input").to_rgb8();
            let expected = load_image(&expected_path)
                .expect("fixture output")
                .to_rgb8();
            let got = resize_bicubic_aa(&src, expected.width(), expected.height());
            let diffs = got
                .as_raw()
                .iter()
                .zip(expected.as_raw())
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                diffs,
                0,
                "{}: {diffs} bytes differ from torch",
                input.display()
            );
            cases += 1;
        }
        assert!(
            cases >= 8,
            "expected at least 8 resize fixtures in {}, found {cases}",
            dir.display()
        );
    }

    #[test]
    fn preprocess_matches_transformers_fixture_bit_for_bit() {
        let dir = fixture_dir();
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("e2e.json")).expect("e2e.json"))
                .expect("json");
        let cfg = PreprocessConfig::from_json(&meta["config"].to_string()).expect("config");
        let img = load_image(&dir.join("e2e_image.png")).expect("e2e image");
        assert!(
            img.color().has_alpha(),
            "the fixture exercises alpha dropping"
        );
        let out = preprocess(&img, &cfg).expect("preprocess");
        let grid: Vec<usize> = serde_json::from_value(meta["grid"].clone()).expect("grid");
        assert_eq!(vec![out.grid.t, out.grid.h, out.grid.w], grid);
        let expected = read_f32(&dir.join("e2e_pixels.f32"));
        let pixels = out.pixels();
        assert_eq!(pixels.len(), expected.len());
        let diffs = pixels
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(diffs, 0, "{diffs} values differ from transformers");
        // What the model consumes: cut and normalised by tensor ops (on the device on a GPU).
        let t = out.to_tensor(&candle_core::Device::Cpu).expect("tensor");
        let from_tensor = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("values");
        assert!(from_tensor.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    fn read_f32(path: &Path) -> Vec<f32> {
        let bytes = std::fs::read(path).expect("f32 file");
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn png_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (y * 3) as u8, 200])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("encode png");
        out.into_inner()
    }

    #[test]
    fn decode_image_roundtrips_png() {
        let img = decode_image(&png_bytes(20, 10)).expect("decode");
        assert_eq!((img.width(), img.height()), (20, 10));
    }

    #[test]
    fn decode_image_reports_truncated_png() {
        let bytes = png_bytes(64, 64);
        let err = decode_image(&bytes[..bytes.len() / 2]).expect_err("truncated");
        assert!(matches!(err, PreprocessError::Decode(_)), "{err:?}");
        let err = decode_image(&bytes[..20]).expect_err("header only");
        assert!(matches!(err, PreprocessError::Decode(_)), "{err:?}");
    }

    #[test]
    fn decode_image_reports_garbage_and_empty_input() {
        let err = decode_image(b"definitely not an image, just some text").expect_err("garbage");
        assert!(
            matches!(err, PreprocessError::UnsupportedFormat(_)),
            "{err:?}"
        );
        assert!(matches!(decode_image(&[]), Err(PreprocessError::Decode(_))));
        // Right signature, corrupt body.
        let mut bytes = png_bytes(16, 16);
        for b in bytes.iter_mut().skip(40) {
            *b ^= 0x5a;
        }
        assert!(matches!(
            decode_image(&bytes),
            Err(PreprocessError::Decode(_))
        ));
    }

    #[test]
    fn load_image_reports_missing_file_with_its_path() {
        let path = Path::new("/nonexistent/screenpilot/missing.png");
        let err = load_image(path).expect_err("missing");
        assert!(
            matches!(&err, PreprocessError::Read { path: p, .. } if p == path),
            "{err:?}"
        );
        assert!(err.to_string().contains("missing.png"));
    }

    #[test]
    fn config_parses_qwen3_vl_preprocessor_json() {
        let text = r#"{"size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16,
            "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5], "processor_class": "Qwen3VLProcessor",
            "image_processor_type": "Qwen2VLImageProcessorFast"}"#;
        assert_eq!(
            PreprocessConfig::from_json(text).expect("parse"),
            PreprocessConfig::qwen3_vl_default()
        );
        assert_eq!(
            PreprocessConfig::from_json("{}").expect("empty"),
            PreprocessConfig::default()
        );
        let old = r#"{"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "size": {"shortest_edge": 1, "longest_edge": 2},
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": 0.5}"#;
        let cfg = PreprocessConfig::from_json(old).expect("qwen2-vl style");
        assert_eq!(
            (
                cfg.min_pixels,
                cfg.max_pixels,
                cfg.factor(),
                cfg.patch_dim()
            ),
            (3136, 12845056, 28, 1176)
        );
        assert_eq!((cfg.image_mean[0], cfg.image_std), (0.48145466, [0.5; 3]));
    }

    #[test]
    fn config_rejects_bad_or_unsupported_settings() {
        for bad in [
            "[1]",
            "not json",
            r#"{"patch_size": 0}"#,
            r#"{"patch_size": -3}"#,
            r#"{"image_std": [0.5, 0.0, 0.5]}"#,
            r#"{"image_mean": [0.5, 0.5]}"#,
            r#"{"size": {"shortest_edge": 0, "longest_edge": 10}}"#,
            r#"{"do_resize": false}"#,
        ] {
            assert!(
                matches!(
                    PreprocessConfig::from_json(bad),
                    Err(PreprocessError::Config(_))
                ),
                "{bad}"
            );
        }
    }

    /// Development check driven by `tools/check_preprocess.py`: compares our
    /// output with torch / transformers outputs it wrote to the directory in
    /// `SCREENPILOT_PREPROCESS_SWEEP` and writes `report.json` there.
    #[test]
    #[ignore = "run by tools/check_preprocess.py"]
    fn sweep_against_torch_outputs() {
        let Ok(dir) = std::env::var("SCREENPILOT_PREPROCESS_SWEEP") else {
            panic!("set SCREENPILOT_PREPROCESS_SWEEP to a directory written by tools/check_preprocess.py");
        };
        let dir = PathBuf::from(dir);
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("manifest.json")).expect("manifest"),
        )
        .expect("json");
        let mut report = Vec::new();
        let mut failures = 0;
        for case in manifest["cases"].as_array().expect("cases") {
            let result = if case["kind"] == "resize" {
                sweep_resize(&dir, case)
            } else {
                sweep_e2e(&dir, case)
            };
            let exact = case["exact"].as_bool().unwrap_or(true);
            failures += usize::from(
                exact
                    && (result["mismatch"].as_u64().unwrap_or(1) > 0
                        || result["error"].is_string()),
            );
            report.push(result);
        }
        let out = serde_json::json!({ "cases": report, "failures": failures });
        std::fs::write(dir.join("report.json"), out.to_string()).expect("write report");
        assert_eq!(
            failures,
            0,
            "{failures} cases differ; see {}",
            dir.join("report.json").display()
        );
    }

    fn sweep_resize(dir: &Path, case: &serde_json::Value) -> serde_json::Value {
        let dim = |k: &str| case[k].as_u64().expect("dimension") as u32;
        let (in_w, in_h, out_w, out_h) = (dim("in_w"), dim("in_h"), dim("out_w"), dim("out_h"));
        let src = std::fs::read(dir.join(case["input"].as_str().expect("input"))).expect("input");
        let expected = std::fs::read(dir.join(case["expected"].as_str().expect("expected")))
            .expect("expected");
        let src = RgbImage::from_raw(in_w, in_h, src).expect("input size");
        let got = resize_bicubic_aa(&src, out_w, out_h);
        let mismatch = got
            .as_raw()
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a != b)
            .count();
        serde_json::json!({ "id": case["id"], "mismatch": mismatch })
    }

    fn sweep_e2e(dir: &Path, case: &serde_json::Value) -> serde_json::Value {
        let cfg = PreprocessConfig::from_json(&case["config"].to_string()).expect("config");
        let run = || -> Result<(Vec<f32>, Vec<usize>), PreprocessError> {
            let img = load_image(&dir.join(case["image"].as_str().unwrap_or_default()))?;
            let out = preprocess(&img, &cfg)?;
            Ok((out.pixels(), vec![out.grid.t, out.grid.h, out.grid.w]))
        };
        match run() {
            Err(e) => serde_json::json!({ "id": case["id"], "error": e.to_string() }),
            Ok((pixels, grid)) => {
                let expected = read_f32(&dir.join(case["expected"].as_str().unwrap_or_default()));
                let grid_ok = serde_json::json!(grid) == case["grid"];
                let diff = pixels
                    .iter()
                    .zip(&expected)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count()
                    + pixels.len().abs_diff(expected.len());
                let max_abs = pixels
                    .iter()
                    .zip(&expected)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                serde_json::json!({ "id": case["id"], "mismatch": diff + usize::from(!grid_ok), "grid": grid,
                    "max_abs_diff": max_abs })
            }
        }
    }
}
