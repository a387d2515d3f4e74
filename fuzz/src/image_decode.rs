//! Fuzz target: image bytes from a request (PNG / JPEG / WebP / BMP / GIF, sniffed) are decoded
//! under the server's limits without panicking, hanging or allocating past them, and a small
//! decoded image goes through the whole preprocessing (resize, normalise, patchify).
//!
//! Only std and screenpilot-model are used: crates/model/tests/fuzz_regressions.rs includes
//! this file to replay the corpus in `cargo test`.

use screenpilot_model::preprocess::{decode_image_limited, preprocess, ImageLimits};
use screenpilot_model::PreprocessConfig;

/// The server's checks with lower bounds than its defaults (100 Mpx, 16384 a side, 64 MiB),
/// so that an admitted image decodes in milliseconds (not the second a 100 Mpx one takes):
/// the same code, and the fuzzer reaches the limits with small inputs.
pub const LIMITS: ImageLimits = ImageLimits { max_pixels: 1 << 20, max_side: 4096, max_file_bytes: 1 << 20 };

/// Qwen3-VL's preprocessing with smaller pixel bounds (1 to 16 merge windows of 32x32 instead
/// of 64 to 16384): the same resize, normalisation and patchify code, both the upscale and the
/// downscale branch, at a fraction of the cost.
fn preprocess_config() -> PreprocessConfig {
    PreprocessConfig { min_pixels: 32 * 32, max_pixels: 16 * 32 * 32, ..PreprocessConfig::default() }
}

/// One input: must not panic.
pub fn run(data: &[u8]) {
    let Ok(img) = decode_image_limited(data, &LIMITS) else { return };
    let (w, h) = (img.width(), img.height());
    assert!(w > 0 && h > 0);
    assert!(w <= LIMITS.max_side && h <= LIMITS.max_side && u64::from(w) * u64::from(h) <= LIMITS.max_pixels, "{w}x{h}");
    // Resizing a large image is slow (and its decoding is what is fuzzed): small ones only.
    if u64::from(w) * u64::from(h) > 1 << 16 {
        return;
    }
    let cfg = preprocess_config();
    let Ok(p) = preprocess(&img, &cfg) else { return };
    let (min, max) = cfg.pixel_bounds();
    let pixels = u64::from(p.resized_width) * u64::from(p.resized_height);
    // Within the bounds, except that smart_resize keeps each side at least one merge window
    // (as transformers does), which exceeds max_pixels for a long thin image.
    let factor = cfg.factor() as u32;
    let thin = p.resized_width.min(p.resized_height) == factor;
    assert!(pixels >= min && (pixels <= max || thin), "{}x{} outside {min}..={max}", p.resized_width, p.resized_height);
    assert_eq!(p.rgb.len(), pixels as usize * 3);
    assert_eq!(p.pixels().len(), p.grid.num_patches() * p.patch_dim);
}
