//! [`resize_bicubic_aa`]: torchvision's `resize(BICUBIC, antialias=True)` on a uint8 image, bit
//! for bit.
//!
//! On CPU torch runs its native uint8 kernel (PIL-SIMD style): a horizontal pass then a vertical
//! pass, each rounding to uint8, with Keys cubic weights (a = -0.5, [`keys_cubic`]) widened by
//! the downscale factor, normalised, and converted to int16 fixed point with a precision chosen
//! from the largest weight ([`axis_filter`]). The passes ([`resample_horizontal`],
//! [`resample_vertical`]) reproduce that integer arithmetic exactly; a pass whose size does not
//! change is skipped, as torch does.

use std::borrow::Cow;

use image::RgbImage;

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

/// Horizontal pass: `rows` rows of `in_w` RGB pixels → rows of `out_w` pixels. The image is
/// transposed so that the taps of one output column run down memory like the vertical pass's
/// rows, whose loop the compiler vectorises across the row; every output is the same integer
/// sum as a pixel-by-pixel pass (integer addition does not depend on order).
fn resample_horizontal(src: &[u8], in_w: usize, out_w: usize, f: &AxisFilter) -> Vec<u8> {
    let rows = src.len() / (in_w * 3);
    let columns = transpose_rgb(src, rows, in_w);
    let resampled = resample_vertical(&columns, rows * 3, out_w, f);
    transpose_rgb(&resampled, out_w, rows)
}

/// An `h x w` RGB image as a `w x h` one (row y of the result is column y of the input), by
/// tiles so that both sides stay in cache.
fn transpose_rgb(src: &[u8], h: usize, w: usize) -> Vec<u8> {
    const TILE: usize = 32;
    let mut dst = vec![0u8; src.len()];
    for y0 in (0..h).step_by(TILE) {
        for x0 in (0..w).step_by(TILE) {
            for y in y0..(y0 + TILE).min(h) {
                for x in x0..(x0 + TILE).min(w) {
                    let (s, d) = ((y * w + x) * 3, (x * h + y) * 3);
                    dst[d..d + 3].copy_from_slice(&src[s..s + 3]);
                }
            }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::preprocess::load_image;
    use std::path::{Path, PathBuf};

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/preprocess")
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
}
