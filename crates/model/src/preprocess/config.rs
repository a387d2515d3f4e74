//! [`PreprocessConfig`]: the image processor's settings, from `preprocessor_config.json` or
//! Qwen3-VL's defaults, and the checks that make them usable.
//!
//! The file is read into serde structs ([`RawConfig`]) whose every field accepts any JSON value:
//! a value of the wrong type is kept as it was written, so the error can name its key and show
//! it (serde's own errors name neither). Missing and `null` keys take the defaults.

use std::marker::PhantomData;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::{config_err, PreprocessError};

/// Qwen3-VL's default `size.shortest_edge` (minimum pixel count).
pub const QWEN3_VL_MIN_PIXELS: u64 = 65_536;
/// Qwen3-VL's default `size.longest_edge` (maximum pixel count).
pub const QWEN3_VL_MAX_PIXELS: u64 = 16_777_216;
/// transformers' default rescale factor.
const DEFAULT_RESCALE: f64 = 1.0 / 255.0;

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
        // Through a `Value` first: a repeated key keeps its last value (as Python's `json`
        // does) instead of failing, and "not JSON" and "not an object" stay two messages.
        let value: Value = serde_json::from_str(text)
            .map_err(|e| config_err(format!("preprocessor config is not valid JSON: {e}")))?;
        // Every field of `RawConfig` accepts any value, so only a non-object can fail here.
        let Object(raw) = Object::<RawConfig>::deserialize(&value)
            .map_err(|_| config_err("preprocessor config must be a JSON object"))?;
        let mut cfg = Self::qwen3_vl_default();
        if let Some(size) = raw.size {
            let Object(size) = size.get("size", "an object")?;
            let min = count(size.shortest_edge, "shortest_edge")?.or(count(size.min_pixels, "min_pixels")?);
            let max = count(size.longest_edge, "longest_edge")?.or(count(size.max_pixels, "max_pixels")?);
            cfg.min_pixels = min.unwrap_or(cfg.min_pixels);
            cfg.max_pixels = max.unwrap_or(cfg.max_pixels);
        }
        cfg.min_pixels = count(raw.min_pixels, "min_pixels")?.unwrap_or(cfg.min_pixels);
        cfg.max_pixels = count(raw.max_pixels, "max_pixels")?.unwrap_or(cfg.max_pixels);
        cfg.patch_size = size(raw.patch_size, "patch_size")?.unwrap_or(cfg.patch_size);
        cfg.temporal_patch_size =
            size(raw.temporal_patch_size, "temporal_patch_size")?.unwrap_or(cfg.temporal_patch_size);
        cfg.merge_size = size(raw.merge_size, "merge_size")?.unwrap_or(cfg.merge_size);
        cfg.image_mean = triple(raw.image_mean, "image_mean")?.unwrap_or(cfg.image_mean);
        cfg.image_std = triple(raw.image_std, "image_std")?.unwrap_or(cfg.image_std);
        if let Some(r) = raw.rescale_factor {
            cfg.rescale_factor = r.get("rescale_factor", "a number")?;
        }
        for (key, flag) in [
            ("do_resize", raw.do_resize),
            ("do_rescale", raw.do_rescale),
            ("do_normalize", raw.do_normalize),
            ("do_convert_rgb", raw.do_convert_rgb),
        ] {
            // Only a boolean false is refused; other values are ignored, as before.
            if matches!(flag, Some(Field::Given(false))) {
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
        // Checked products: `factor()` and `patch_dim()` would overflow (a panic in debug builds,
        // such as the fuzzers') for sizes like `patch_size: 2^63`.
        let factor = self.patch_size.checked_mul(self.merge_size);
        if factor.and_then(|f| u32::try_from(f).ok()).is_none() {
            return Err(config_err("patch_size * merge_size is too large"));
        }
        let patch_dim = [self.temporal_patch_size, self.patch_size, self.patch_size]
            .into_iter()
            .try_fold(3usize, usize::checked_mul);
        if patch_dim.is_none() {
            return Err(config_err("3 * temporal_patch_size * patch_size² is too large"));
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

/// `preprocessor_config.json` as written: the keys [`PreprocessConfig::from_json`] reads, each
/// `None` when missing or `null`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawConfig {
    size: Option<Field<Object<RawSize>>>,
    min_pixels: Option<Field<Count>>,
    max_pixels: Option<Field<Count>>,
    patch_size: Option<Field<Count>>,
    temporal_patch_size: Option<Field<Count>>,
    merge_size: Option<Field<Count>>,
    image_mean: Option<Field<Triple>>,
    image_std: Option<Field<Triple>>,
    rescale_factor: Option<Field<f64>>,
    do_resize: Option<Field<bool>>,
    do_rescale: Option<Field<bool>>,
    do_normalize: Option<Field<bool>>,
    do_convert_rgb: Option<Field<bool>>,
}

/// The `size` object: the pixel bounds under their current or their older names.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawSize {
    shortest_edge: Option<Field<Count>>,
    longest_edge: Option<Field<Count>>,
    min_pixels: Option<Field<Count>>,
    max_pixels: Option<Field<Count>>,
}

/// A value of the expected type, or whatever else was written, kept for the error message.
#[derive(Deserialize)]
#[serde(untagged)]
enum Field<T> {
    Given(T),
    Other(Value),
}

impl<T> Field<T> {
    /// The value, or an error naming `key`, what it must be, and what it was.
    fn get(self, key: &str, expected: &str) -> Result<T, PreprocessError> {
        match self {
            Field::Given(v) => Ok(v),
            Field::Other(v) => Err(config_err(format!("`{key}` must be {expected}, got {v}"))),
        }
    }
}

/// A non-negative integer, also written as an integral float below 2^63 (`65536.0`).
#[derive(Deserialize)]
#[serde(try_from = "serde_json::Number")]
struct Count(u64);

impl TryFrom<serde_json::Number> for Count {
    type Error = &'static str;

    fn try_from(n: serde_json::Number) -> Result<Self, Self::Error> {
        if let Some(n) = n.as_u64() {
            return Ok(Count(n));
        }
        match n.as_f64() {
            Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(63) => Ok(Count(f as u64)),
            _ => Err("not a non-negative integer"),
        }
    }
}

/// A number for all three channels, or one number per channel.
#[derive(Deserialize)]
#[serde(untagged)]
enum Triple {
    All(f64),
    Each([f64; 3]),
}

impl Triple {
    /// Rounded to f32 as `torch.tensor(list)` does.
    fn channels(self) -> [f32; 3] {
        match self {
            Triple::All(x) => [x as f32; 3],
            Triple::Each(xs) => xs.map(|x| x as f32),
        }
    }
}

/// `T` read from a JSON object only: a derived struct would also take an array, by position.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

fn count(field: Option<Field<Count>>, key: &str) -> Result<Option<u64>, PreprocessError> {
    field.map(|f| f.get(key, "a non-negative integer").map(|c| c.0)).transpose()
}

fn size(field: Option<Field<Count>>, key: &str) -> Result<Option<usize>, PreprocessError> {
    count(field, key)?
        .map(|n| usize::try_from(n).map_err(|_| config_err(format!("`{key}` is too large"))))
        .transpose()
}

fn triple(field: Option<Field<Triple>>, key: &str) -> Result<Option<[f32; 3]>, PreprocessError> {
    field.map(|f| f.get(key, "a number or a list of 3 numbers").map(Triple::channels)).transpose()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
    fn config_reads_integral_floats_nulls_old_size_names_and_repeated_keys() {
        let cfg = PreprocessConfig::from_json(
            r#"{"size": {"min_pixels": 4096.0, "max_pixels": 1e6}, "patch_size": null, "merge_size": 2.0,
                "rescale_factor": null, "image_std": null, "do_resize": true, "do_rescale": "no",
                "temporal_patch_size": 1, "temporal_patch_size": 2}"#,
        )
        .expect("parse");
        let want = PreprocessConfig { min_pixels: 4096, max_pixels: 1_000_000, ..PreprocessConfig::default() };
        assert_eq!(cfg, want);
        // `shortest_edge` wins over `size.min_pixels`; the top-level key wins over both.
        let cfg = PreprocessConfig::from_json(r#"{"size": {"shortest_edge": 10, "min_pixels": 20}}"#).unwrap();
        assert_eq!(cfg.min_pixels, 10);
        let cfg = PreprocessConfig::from_json(r#"{"min_pixels": 30, "size": {"shortest_edge": 10}}"#).unwrap();
        assert_eq!(cfg.min_pixels, 30);
        // `size: null` is no size.
        assert_eq!(PreprocessConfig::from_json(r#"{"size": null}"#).unwrap(), PreprocessConfig::default());
    }

    #[test]
    fn config_errors_name_the_key_and_the_value() {
        for (bad, want) in [
            ("[1]", "must be a JSON object"),
            ("not json", "not valid JSON"),
            (r#"{"patch_size": -3}"#, "`patch_size` must be a non-negative integer, got -3"),
            (r#"{"merge_size": 1.5}"#, "`merge_size` must be a non-negative integer, got 1.5"),
            (r#"{"min_pixels": "10"}"#, "`min_pixels` must be a non-negative integer, got \"10\""),
            (r#"{"max_pixels": 1e19}"#, "`max_pixels` must be a non-negative integer"),
            (r#"{"size": {"longest_edge": true}}"#, "`longest_edge` must be a non-negative integer, got true"),
            (r#"{"size": {"shortest_edge": 5, "min_pixels": -1}}"#, "`min_pixels` must be a non-negative integer"),
            (r#"{"size": [65536, 1000000]}"#, "`size` must be an object"),
            (r#"{"size": 3}"#, "`size` must be an object"),
            (r#"{"image_mean": [0.5, 0.5]}"#, "`image_mean` must be a number or a list of 3 numbers, got [0.5,0.5]"),
            (r#"{"image_std": [0.5, "a", 0.5]}"#, "`image_std` must be a number or a list of 3 numbers"),
            (r#"{"rescale_factor": "1/255"}"#, "`rescale_factor` must be a number"),
            (r#"{"rescale_factor": 0}"#, "rescale_factor must be a positive number"),
            (r#"{"do_convert_rgb": false}"#, "`do_convert_rgb: false` is not supported"),
            (r#"{"patch_size": 0}"#, "must be positive"),
            (r#"{"image_std": [0.5, 0.0, 0.5]}"#, "image_std must be non-zero"),
            (r#"{"patch_size": 18446744073709551615}"#, "patch_size * merge_size is too large"),
            (r#"{"merge_size": 9223372036854775807}"#, "patch_size * merge_size is too large"),
            (r#"{"patch_size": 2147483648, "merge_size": 1}"#, "3 * temporal_patch_size * patch_size² is too large"),
            (r#"{"temporal_patch_size": 9223372036854775807}"#, "3 * temporal_patch_size * patch_size² is too large"),
        ] {
            let e = PreprocessConfig::from_json(bad).expect_err(bad);
            assert!(matches!(e, PreprocessError::Config(_)), "{bad}: {e:?}");
            let msg = e.to_string();
            assert!(msg.starts_with("bad preprocessor config: ") && msg.contains(want), "{bad}: {msg}");
        }
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
}
