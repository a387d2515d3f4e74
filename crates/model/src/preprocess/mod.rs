//! Image preprocessing for Qwen3-VL: decode → RGB → `smart_resize` → bicubic
//! antialiased resize → rescale/normalise → patchify.
//!
//! The aim is **bit-exact** agreement with Hugging Face transformers'
//! `Qwen2VLImageProcessor` (the torchvision backend, which Qwen3-VL uses) on an
//! x86-64 CPU, i.e. the same `pixel_values` (f32, compared bit for bit) and the
//! same `image_grid_thw`. What the reference does, and what we do, in order
//! ([`preprocess`] runs steps 1 to 4; the model runs step 5 where its input is built):
//!
//! 1. `PIL.Image.convert("RGB")`: alpha is dropped (not composited), grey is
//!    replicated, palettes are expanded. See [`to_rgb8`] (`decode.rs`) for 16-bit inputs.
//! 2. [`smart_resize`] (`smart_resize.rs`) picks a size that is a multiple of
//!    `patch_size * merge_size` with a pixel count in `[min_pixels, max_pixels]`,
//!    replicating Python's float arithmetic (including `round()` = round half
//!    to even).
//! 3. torchvision `resize(BICUBIC, antialias=True)` on the uint8 tensor, which
//!    on CPU runs torch's native uint8 kernel (PIL-SIMD style): a horizontal
//!    pass then a vertical pass, each with a uint8 intermediate, Keys cubic
//!    (a = -0.5) weights widened by the downscale factor, normalised, and
//!    converted to int16 fixed point with a precision chosen from the largest
//!    weight. [`resize_bicubic_aa`] (`resize.rs`) reproduces that integer arithmetic
//!    exactly. A pass whose size does not change is skipped, as torch does.
//! 4. Fused rescale + normalise in f32: `(x - mean/r) / (std/r)` with `r` the
//!    rescale factor (1/255), i.e. `(x - 127.5) / 127.5` for Qwen3-VL. It is kept
//!    as a table of the 256 values of each channel (`patches.rs`).
//! 5. Patchify into rows of `3 * temporal_patch_size * patch_size²` values,
//!    the single frame repeated `temporal_patch_size` times, rows ordered by
//!    `merge_size × merge_size` windows ([`crate::patch_layout`]). On the host:
//!    [`PreprocessedImage::pixels`] (`patches.rs`); for the model, on its device:
//!    [`crate::vision::input`].
//!
//! The settings come from `preprocessor_config.json` ([`PreprocessConfig`], `config.rs`).
//! [`load_image`] / [`decode_image`] (`decode.rs`) also apply the EXIF orientation, as
//! transformers' `load_image` (`ImageOps.exif_transpose`) does for paths/URLs.
//! Both enforce the default [`ImageLimits`] (dimensions checked from the header
//! before decoding, regular files only, a size cap); [`load_image_limited`] /
//! [`decode_image_limited`] take other limits (`limits.rs`).
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

use image::DynamicImage;

mod config;
mod decode;
mod limits;
mod patches;
mod resize;
mod smart_resize;
mod video;

pub use config::{PreprocessConfig, QWEN3_VL_MAX_PIXELS, QWEN3_VL_MIN_PIXELS};
pub use decode::{decode_image, load_image, to_rgb8};
pub use limits::{decode_image_limited, load_image_limited, open_regular_file, read_image_file, ImageLimits};
pub use resize::resize_bicubic_aa;
pub use smart_resize::smart_resize;
pub use video::{
    assemble_video, clip_size, preprocess_video, resize_frame, smart_resize_video, timestamp_text, timestamps, ClipSize,
    PreprocessedVideo, VideoConfig, UNKNOWN_FPS,
};

use decode::map_image_error;

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
    /// A clip that cannot be a video input (too few frames, frames of different sizes, ...).
    #[error("bad video: {0}")]
    Video(String),
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
/// `pixel_values` ([`Self::pixels`]). Patch rows run over merge windows
/// ([`crate::patch_layout`]): for each window row `bh`, window column `bw`,
/// then `mh`, `mw` inside the `merge × merge` window, the patch at patch row
/// `bh*merge + mh` and column `bw*merge + mw`. Inside a row, value `((c * temporal + t) * patch + py) *
/// patch + px` is channel `c`, frame `t`, pixel `(py, px)` of that patch,
/// normalised. All `temporal` frames of a still image are the same. A clip
/// (`video::preprocess_video`) has `grid.t` temporal patches, each with its rows in that order.
///
/// What is kept is the resized 8-bit image and the normalisation table, a
/// quarter of the f32 values of one frame: the input is cut, normalised and
/// repeated where it is built ([`crate::vision::input::pixel_rows`], on the
/// device), so the host only converts and resizes.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessedImage {
    /// The resized frames, RGB, row-major, one after the other: `frames × resized_height ×
    /// resized_width × 3`.
    pub rgb: Vec<u8>,
    /// Frames in `rgb`: 1 for a still image (repeated over the `temporal` frames of its one
    /// temporal patch), the sampled frames of a clip (`grid.t` temporal patches; the last
    /// patch repeats the last frame where `frames` is not a multiple of `temporal`).
    pub frames: usize,
    /// The fused rescale + normalise per channel: value `v` of channel `c`
    /// becomes `lut[c][v]` (see `normalize_lut` in `patches.rs`).
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
    pub(crate) fn patch(&self) -> usize {
        let per_frame = self.patch_dim / (3 * self.temporal.max(1));
        (per_frame as f64).sqrt().round() as usize
    }

    /// Which stored frame is frame `k` of temporal patch `t`: frame 0 for a still image, else
    /// `t * temporal + k`, the last frame standing in for the padding.
    pub(crate) fn frame_of(&self, t: usize, k: usize) -> usize {
        if self.frames <= 1 {
            0
        } else {
            (t * self.temporal.max(1) + k).min(self.frames - 1)
        }
    }
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
        frames: 1,
        lut: patches::normalize_lut(cfg),
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use image::RgbImage;

    pub(crate) fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/preprocess")
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
        // What the model consumes, built on the device: vision::input's tests.
    }

    pub(crate) fn read_f32(path: &Path) -> Vec<f32> {
        let bytes = std::fs::read(path).expect("f32 file");
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
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
