//! The model input on the host: the normalisation table ([`normalize_lut`]) and
//! [`PreprocessedImage::pixels`], the rows of `pixel_values` as HF lays them out.
//!
//! The rows are the patches in [`crate::patch_layout`]'s order (merge windows row-major, patches
//! row-major inside a window); inside a row, channel by channel, each channel's `p x p` values
//! repeated over the `temporal` frames. The model builds the same rows on its device from the
//! 8-bit image (`vision::input`); this host copy is what the exactness tests and the fuzzer
//! compare against.

use super::{PreprocessConfig, PreprocessedImage};
use crate::patch_layout;

/// Per-channel lookup table of the fused rescale + normalise, in f32 exactly
/// as torch computes it: `mean' = f32(mean) * f32(1/rescale)` (likewise
/// `std'`), then `(f32(x) - mean') / std'`.
pub(super) fn normalize_lut(cfg: &PreprocessConfig) -> [[f32; 256]; 3] {
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

impl PreprocessedImage {
    /// The model input on the host, `num_patches × patch_dim` (HF's
    /// `pixel_values`).
    pub fn pixels(&self) -> Vec<f32> {
        let (p, m, t) = (self.patch(), self.merge.max(1), self.temporal.max(1));
        let width = self.resized_width as usize;
        let frame_len = width * self.resized_height as usize * 3;
        let per_t = self.grid.h * self.grid.w;
        let mut out = Vec::with_capacity(self.grid.num_patches() * self.patch_dim);
        for gt in 0..self.grid.t {
            for index in 0..per_t {
                let (row, col) = patch_layout::patch_at(index, self.grid.w, m);
                let (y0, x0) = (row * p, col * p);
                for (c, table) in self.lut.iter().enumerate() {
                    for k in 0..t {
                        let frame = &self.rgb[self.frame_of(gt, k) * frame_len..];
                        for py in 0..p {
                            let start = ((y0 + py) * width + x0) * 3;
                            out.extend(frame[start..start + 3 * p].chunks_exact(3).map(|px| table[usize::from(px[c])]));
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::preprocess::{preprocess, GridThw, PreprocessConfig};
    use image::{DynamicImage, RgbImage};

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
    }
}
