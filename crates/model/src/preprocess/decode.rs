//! Reading images: [`load_image`] / [`decode_image`] (under the default [`ImageLimits`], see
//! `limits.rs` for the limited forms), [`to_rgb8`] (PIL's `convert("RGB")`), and the mapping of
//! the `image` crate's errors to [`PreprocessError`].
//!
//! The EXIF orientation is applied, as transformers' `load_image` (`ImageOps.exif_transpose`)
//! does for paths and URLs. PNG, BMP, GIF and lossless WebP decode to the same pixels as PIL;
//! JPEG (and presumably lossy WebP), decoded by zune-jpeg / image-webp rather than
//! libjpeg-turbo / libwebp, differ from PIL by a few levels.

use std::borrow::Cow;
use std::path::Path;

use image::{DynamicImage, RgbImage};

use super::{decode_image_limited, load_image_limited, ImageLimits, PreprocessError};

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

/// The `image` crate's error as ours: an unknown format is [`PreprocessError::UnsupportedFormat`],
/// anything else (truncated data, a decoder limit, corrupt data) [`PreprocessError::Decode`].
pub(super) fn map_image_error(e: image::ImageError) -> PreprocessError {
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
}
