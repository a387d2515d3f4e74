//! [`PreprocessConfig`]: the image processor's settings, from `preprocessor_config.json` or
//! Qwen3-VL's defaults, and the checks that make them usable.

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
