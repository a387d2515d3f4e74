//! [`smart_resize`]: the size an image is resized to before it is cut into patches, with
//! transformers' arithmetic (Python's float operations and `round()`), so the grid, and hence
//! the number of image tokens, is the reference's.

use super::{config_err, PreprocessError};

/// Largest accepted `max(h, w) / min(h, w)`, as in transformers.
const MAX_ASPECT_RATIO: f64 = 200.0;

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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::preprocess::{QWEN3_VL_MAX_PIXELS, QWEN3_VL_MIN_PIXELS};

    const DEFAULT_BOUNDS: (u64, u64) = (QWEN3_VL_MIN_PIXELS, QWEN3_VL_MAX_PIXELS);

    fn resize_default(h: u32, w: u32) -> (u32, u32) {
        smart_resize(h, w, 32, DEFAULT_BOUNDS.0, DEFAULT_BOUNDS.1).expect("valid size")
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
}
