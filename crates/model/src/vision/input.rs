//! The vision tower's input, built on the device from a [`PreprocessedImage`]: the 8-bit
//! resized image and the normalisation tables are uploaded, then cut into patch rows,
//! normalised and repeated over the frames there, so the host never holds the f32 rows.
//!
//! The values are [`PreprocessedImage::pixels`]'s (HF's `pixel_values`), bit for bit in f32;
//! the rows are in [`crate::patch_layout`]'s order. On CUDA in bf16 one kernel
//! (`sp_patch_rows_bf16`, through [`Ops::patch_rows`]) does the whole cut of a still image;
//! elsewhere, and for the frames of a clip, tensor ops do ([`pixel_rows`]).

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::ops::Ops;
use crate::patch_layout;
use crate::preprocess::PreprocessedImage;

/// The model input as a `(num_patches, patch_dim)` f32 tensor on `device`:
/// the 8-bit image is uploaded, then cut into patch rows, normalised and
/// repeated over the frames there; the same values as [`PreprocessedImage::pixels`].
pub fn pixel_rows(img: &PreprocessedImage, device: &Device) -> candle_core::Result<Tensor> {
    let (rgb, lut) = upload(img, device)?;
    rows(img, &rgb, &lut)
}

/// [`pixel_rows`] in `dtype`. On CUDA in bf16 one kernel cuts,
/// normalises and rounds the uploaded bytes (the same values as
/// `pixel_rows` then a cast, without its f32 and index intermediates).
pub(crate) fn pixel_rows_as(img: &PreprocessedImage, device: &Device, dtype: DType, ops: &Ops) -> Result<Tensor> {
    let (rgb, lut) = upload(img, device)?;
    if dtype == DType::BF16 && img.frames <= 1 {
        let (p, m, t) = (img.patch(), img.merge.max(1), img.temporal.max(1));
        if let Some(rows) = ops.patch_rows(&rgb, &lut, (img.grid.h, img.grid.w), p, m, t)? {
            return Ok(rows);
        }
    }
    Ok(rows(img, &rgb, &lut)?.to_dtype(dtype)?)
}

/// The 8-bit image (flat) and the normalisation tables (3 x 256, f32) on
/// `device`, once the image is checked against its grid.
fn upload(img: &PreprocessedImage, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let (p, m) = (img.patch(), img.merge.max(1));
    let (gh, gw) = (img.grid.h, img.grid.w);
    let frames = img.frames.max(1);
    let still = frames == 1 && img.grid.t == 1;
    let clip = frames > 1 && img.grid.t == frames.div_ceil(img.temporal.max(1));
    if gh % m != 0 || gw % m != 0 || img.rgb.len() != frames * gh * p * gw * p * 3 || !(still || clip) {
        candle_core::bail!("preprocessed image of {} bytes does not match its grid {:?}", img.rgb.len(), img.grid);
    }
    let rgb = Tensor::from_slice(&img.rgb, img.rgb.len(), device)?;
    let lut = Tensor::from_iter(img.lut.iter().flatten().copied(), device)?;
    Ok((rgb, lut))
}

/// The patch rows of the uploaded image `rgb` with the tables `lut` ([`upload`]'s), by tensor
/// ops.
fn rows(img: &PreprocessedImage, rgb: &Tensor, lut: &Tensor) -> candle_core::Result<Tensor> {
    let t = img.temporal.max(1);
    let frames = img.frames.max(1);
    let n = img.grid.h * img.grid.w;
    let per_frame = rgb.dim(0)? / frames;
    // Each frame's rows once: (n, 3, 1, p*p).
    let cut: Vec<Tensor> =
        (0..frames).map(|f| frame_rows(img, &rgb.narrow(0, f * per_frame, per_frame)?, lut)).collect::<candle_core::Result<_>>()?;
    let mut patches = Vec::with_capacity(img.grid.t);
    for gt in 0..img.grid.t {
        let group: Vec<&Tensor> = (0..t).map(|k| &cut[img.frame_of(gt, k)]).collect();
        patches.push(Tensor::cat(&group, 2)?.reshape((n, img.patch_dim))?);
    }
    if patches.len() == 1 {
        return patches.pop().ok_or_else(|| candle_core::Error::Msg("no temporal patch".into()));
    }
    Tensor::cat(&patches, 0)
}

/// The rows of one uploaded frame, normalised, before the frames of a temporal patch are put
/// side by side: (patches of a frame, 3, 1, p*p).
fn frame_rows(img: &PreprocessedImage, rgb: &Tensor, lut: &Tensor) -> candle_core::Result<Tensor> {
    let (p, m) = (img.patch(), img.merge.max(1));
    let (gh, gw) = (img.grid.h, img.grid.w);
    let n = gh * gw;
    // The row order is patch_layout's: viewed as (bh, mh, py, bw, mw, px, c), permuted to
    // (bh, bw, mh, mw, c, py, px), row i is the patch `patch_layout::patch_at(i, gw, m)`
    // (checked against it in patch_layout's tests).
    let view = rgb.reshape(patch_layout::window_view(gh, gw, p, m, 3).to_vec())?;
    let rows = view.permute(patch_layout::ROWS_FROM_WINDOW_VIEW.to_vec())?.contiguous()?.reshape((n, 3, 1, p * p))?;
    let offsets = Tensor::new(&[0u32, 256, 512], rgb.device())?.reshape((1, 3, 1, 1))?;
    let index = rows.to_dtype(DType::U32)?.broadcast_add(&offsets)?.flatten_all()?;
    lut.index_select(&index, 0)?.reshape((n, 3, 1, p * p))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::preprocess::tests::{fixture_dir, read_f32};
    use crate::preprocess::{load_image, preprocess, GridThw, PreprocessConfig};
    use image::{DynamicImage, RgbImage};

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("values")
    }

    #[test]
    fn rows_repeat_the_frame_where_they_are_built_with_the_host_values() {
        let img = RgbImage::from_fn(32, 32, |x, _| {
            if x < 16 {
                image::Rgb([0, 128, 255])
            } else {
                image::Rgb([255; 3])
            }
        });
        let cfg = PreprocessConfig { min_pixels: 1024, ..PreprocessConfig::default() };
        let out = preprocess(&DynamicImage::ImageRgb8(img), &cfg).expect("preprocess");
        assert_eq!(out.grid, GridThw { t: 1, h: 2, w: 2 });
        let t = pixel_rows(&out, &Device::Cpu).expect("tensor");
        assert_eq!(t.dims(), &[4, 1536]);
        assert_eq!(values(&t), out.pixels());
        let half = pixel_rows_as(&out, &Device::Cpu, DType::BF16, &Ops::new(&Device::Cpu, Default::default())).expect("bf16");
        assert_eq!(half.dtype(), DType::BF16);
        assert_eq!(values(&half.to_dtype(DType::F32).expect("f32")), values(&t.to_dtype(DType::BF16).and_then(|t| t.to_dtype(DType::F32)).expect("cast")));
    }

    #[test]
    fn rows_match_transformers_fixture_bit_for_bit() {
        let dir = fixture_dir();
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("e2e.json")).expect("e2e.json")).expect("json");
        let cfg = PreprocessConfig::from_json(&meta["config"].to_string()).expect("config");
        let out = preprocess(&load_image(&dir.join("e2e_image.png")).expect("e2e image"), &cfg).expect("preprocess");
        let expected = read_f32(&dir.join("e2e_pixels.f32"));
        // What the model consumes: cut and normalised by tensor ops (on the device on a GPU).
        let from_tensor = values(&pixel_rows(&out, &Device::Cpu).expect("tensor"));
        assert_eq!(from_tensor.len(), expected.len());
        assert!(from_tensor.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn clip_rows_put_each_temporal_patch_s_frames_side_by_side_as_the_host_does() {
        let frames: Vec<DynamicImage> = (0..5u32)
            .map(|i| DynamicImage::ImageRgb8(RgbImage::from_fn(64, 96, move |x, y| image::Rgb([(x * 3 + i * 40) as u8, (y + i) as u8, (x ^ y) as u8]))))
            .collect();
        let refs: Vec<&DynamicImage> = frames.iter().collect();
        let cfg = crate::preprocess::VideoConfig {
            frame: PreprocessConfig { min_pixels: 1024, max_pixels: 1 << 20, ..PreprocessConfig::default() },
            ..Default::default()
        };
        let v = crate::preprocess::preprocess_video(&refs, &[0, 1, 2, 3, 4], Some(2.0), &cfg).expect("clip");
        assert_eq!(v.clip.grid, GridThw { t: 3, h: 6, w: 4 });
        let t = pixel_rows(&v.clip, &Device::Cpu).expect("tensor");
        assert_eq!(t.dims(), &[72, 1536]);
        assert_eq!(values(&t), v.clip.pixels());
    }

    #[test]
    fn an_image_that_does_not_match_its_grid_is_refused() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(64, 64));
        let mut out = preprocess(&img, &PreprocessConfig { min_pixels: 1024, ..PreprocessConfig::default() }).unwrap();
        out.rgb.pop();
        let e = pixel_rows(&out, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("does not match its grid"), "{e}");
    }
}
