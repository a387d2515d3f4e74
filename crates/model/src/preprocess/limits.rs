//! Bounds on untrusted images, enforced before anything big is allocated: a file is opened only
//! if it is a regular file (checked with `fstat` on the open handle, so a FIFO, `/dev/zero` or
//! `/proc/self/fd/1` is never read), its size is capped before and while reading, and the
//! dimensions are read from the header and checked before the pixels are decoded (a 200 KB PNG
//! can announce 40000x40000 pixels, i.e. gigabytes once decoded).

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::Path;

use image::{DynamicImage, ImageDecoder};

use super::{map_image_error, PreprocessError};

/// What an image may cost. The defaults admit any real screenshot (an 8K screen is 33 Mpx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest `width * height`.
    pub max_pixels: u64,
    /// Largest width and largest height.
    pub max_side: u32,
    /// Largest encoded size (file or data) in bytes.
    pub max_file_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_pixels: 100_000_000,
            max_side: 16384,
            max_file_bytes: 64 << 20,
        }
    }
}

impl ImageLimits {
    /// Refuses dimensions over the limits, naming them and the limit.
    pub fn check_dimensions(&self, width: u32, height: u32) -> Result<(), PreprocessError> {
        let too_large = |limit: String| {
            Err(PreprocessError::TooLarge {
                width,
                height,
                limit,
            })
        };
        if width > self.max_side || height > self.max_side {
            return too_large(format!("{} pixels a side", self.max_side));
        }
        if u64::from(width) * u64::from(height) > self.max_pixels {
            return too_large(format!("{} pixels in all", self.max_pixels));
        }
        Ok(())
    }

    /// Bytes a decoder may allocate: the largest admitted image at 8 bytes a pixel (RGBA with
    /// 16 bits a channel), so the decoder's own bound never refuses what the pixel limit allows,
    /// and still catches what a header check cannot see (e.g. a huge embedded ICC profile).
    fn max_alloc(&self) -> u64 {
        self.max_pixels.saturating_mul(8).max(64 << 20)
    }

    fn decoder_limits(&self) -> image::Limits {
        let mut l = image::Limits::default();
        l.max_image_width = Some(self.max_side);
        l.max_image_height = Some(self.max_side);
        l.max_alloc = Some(self.max_alloc());
        l
    }
}

/// Refuses a WebP whose RIFF chunks claim more bytes than the data holds. The WebP decoder
/// allocates a chunk's claimed size before reading it (the EXIF chunk read for the orientation
/// has no memory limit), so a 98-byte file claiming a 4 GB EXIF chunk made it allocate 4 GB.
fn check_webp_chunks(bytes: &[u8]) -> Result<(), PreprocessError> {
    let corrupt = |m: &str| Err(PreprocessError::Decode(format!("corrupt WebP: {m}")));
    let u32_at = |i: usize| bytes.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64);
    if bytes.get(..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WEBP") {
        return corrupt("no RIFF/WEBP header");
    }
    let mut at = 12u64;
    let len = bytes.len() as u64;
    while at + 8 <= len {
        let Some(size) = u32_at(at as usize + 4) else { break };
        let end = at + 8 + size + (size & 1);
        // The last chunk may lack its padding byte; anything more is missing data.
        if at + 8 + size > len {
            return corrupt(&format!("a chunk at byte {at} claims {size} bytes, {} are left", len - at - 8));
        }
        at = end;
    }
    Ok(())
}

/// [`super::decode_image`] under `limits`: the data's size and the header's dimensions are
/// checked before any pixel is decoded ([`PreprocessError::FileTooLarge`],
/// [`PreprocessError::TooLarge`]).
///
/// A panic inside a decoder (a bug in a codec crate on malformed data, e.g. zune-jpeg 0.5.15
/// asserting in its upsampler on a malformed progressive JPEG,
/// fuzz/regressions/image_decode/jpeg_progressive_upsampler_assert.jpg) is caught here and
/// becomes [`PreprocessError::Decode`] for this image alone.
pub fn decode_image_limited(
    bytes: &[u8],
    limits: &ImageLimits,
) -> Result<DynamicImage, PreprocessError> {
    std::panic::catch_unwind(|| decode_unguarded(bytes, limits)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown reason".into());
        Err(PreprocessError::Decode(format!(
            "malformed image: the decoder gave up ({why})"
        )))
    })
}

fn decode_unguarded(bytes: &[u8], limits: &ImageLimits) -> Result<DynamicImage, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Decode("no data (0 bytes)".into()));
    }
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(PreprocessError::FileTooLarge {
            what: format!("of {} bytes", bytes.len()),
            max_bytes: limits.max_file_bytes,
        });
    }
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PreprocessError::Decode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(PreprocessError::UnsupportedFormat(
            "not a PNG, JPEG, WebP, BMP or GIF image (unrecognised signature)".into(),
        ));
    }
    if reader.format() == Some(image::ImageFormat::WebP) {
        check_webp_chunks(bytes)?;
    }
    // Only the allocation bound while the header is read: with the side limits set here the
    // PNG decoder would refuse an oversized image with a generic message that hides its size.
    let mut header_limits = image::Limits::default();
    header_limits.max_alloc = Some(limits.max_alloc());
    reader.limits(header_limits);
    let mut decoder = reader.into_decoder().map_err(map_image_error)?;
    let (width, height) = decoder.dimensions();
    limits.check_dimensions(width, height)?;
    decoder
        .set_limits(limits.decoder_limits())
        .map_err(map_image_error)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(map_image_error)?;
    img.apply_orientation(orientation);
    if img.width() == 0 || img.height() == 0 {
        return Err(PreprocessError::Empty {
            width: img.width(),
            height: img.height(),
        });
    }
    Ok(img)
}

/// [`super::load_image`] under `limits`: [`read_image_file`] (symlinks followed: the caller
/// named the file) then [`decode_image_limited`]. Errors name the file.
pub fn load_image_limited(
    path: &Path,
    limits: &ImageLimits,
) -> Result<DynamicImage, PreprocessError> {
    let bytes = read_image_file(path, limits.max_file_bytes, true)?;
    decode_image_limited(&bytes, limits).map_err(|e| e.in_file(path))
}

/// Reads a regular file of at most `max_bytes` bytes. The file is opened without blocking (a
/// FIFO's `open` would wait for a writer) and, unless `follow_symlinks`, without following a
/// symlink as its last component; then `fstat` on the handle refuses anything but a regular
/// file, and the size is checked from it before reading and again while reading (the file
/// may grow).
pub fn read_image_file(
    path: &Path,
    max_bytes: u64,
    follow_symlinks: bool,
) -> Result<Vec<u8>, PreprocessError> {
    let (file, meta) = open_regular_file(path, max_bytes, follow_symlinks)?;
    let read_err = |source| PreprocessError::Read {
        path: path.to_path_buf(),
        source,
    };
    let too_large = |size: u64| PreprocessError::FileTooLarge {
        what: format!("{} ({size} bytes)", path.display()),
        max_bytes,
    };
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Opens a regular file of at most `max_bytes` bytes, as [`read_image_file`] does, without
/// reading it (for a caller that streams it, e.g. a video decoder); the size it had when opened
/// comes with it.
pub fn open_regular_file(
    path: &Path,
    max_bytes: u64,
    follow_symlinks: bool,
) -> Result<(File, std::fs::Metadata), PreprocessError> {
    let read_err = |source| PreprocessError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = open(path, follow_symlinks).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(PreprocessError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > max_bytes {
        return Err(PreprocessError::FileTooLarge {
            what: format!("{} ({} bytes)", path.display(), meta.len()),
            max_bytes,
        });
    }
    Ok((file, meta))
}

#[cfg(unix)]
fn open(path: &Path, follow_symlinks: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = libc::O_NONBLOCK | if follow_symlinks { 0 } else { libc::O_NOFOLLOW };
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
}

#[cfg(not(unix))]
fn open(path: &Path, follow_symlinks: bool) -> std::io::Result<File> {
    if !follow_symlinks && std::fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path is a symbolic link",
        ));
    }
    File::open(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A valid 1-bit greyscale PNG of `side` x `side` zeros, encoded row by row (a few hundred
    /// KB for 40000 a side; decoded it would be `side²` bytes).
    fn bomb(side: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, side, side);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::One);
        enc.set_compression(png::Compression::High);
        let mut header = enc.write_header().unwrap();
        let mut w = header.stream_writer().unwrap();
        let row = vec![0u8; side.div_ceil(8) as usize];
        for _ in 0..side {
            std::io::Write::write_all(&mut w, &row).unwrap();
        }
        w.finish().unwrap();
        header.finish().unwrap();
        out
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        DynamicImage::new_rgb8(w, h)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn a_webp_is_decoded_unless_a_chunk_claims_more_than_the_data() {
        let img = image::RgbaImage::from_fn(7, 5, |x, y| image::Rgba([x as u8 * 30, y as u8 * 40, 9, 255]));
        let mut webp = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
            .encode(img.as_raw(), 7, 5, image::ExtendedColorType::Rgba8)
            .unwrap();
        let limits = ImageLimits::default();
        let decoded = decode_image_limited(&webp, &limits).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (7, 5));
        // The first chunk's size raised past the end of the data.
        let mut lying = webp.clone();
        lying[16..20].copy_from_slice(&0xF000_0000u32.to_le_bytes());
        let err = decode_image_limited(&lying, &limits).unwrap_err();
        assert!(err.to_string().contains("claims"), "{err}");
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header_at_once() {
        let bytes = bomb(40_000);
        assert!(
            bytes.len() < 8 << 20,
            "the bomb is small: {} bytes",
            bytes.len()
        );
        let t = Instant::now();
        let err = super::super::decode_image(&bytes).unwrap_err();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "took {:?}",
            t.elapsed()
        );
        assert!(
            matches!(
                err,
                PreprocessError::TooLarge {
                    width: 40_000,
                    height: 40_000,
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("40000x40000") && msg.contains("16384"),
            "{msg}"
        );
    }

    #[test]
    fn pixel_count_side_and_size_limits_are_each_enforced() {
        let limits = ImageLimits {
            max_pixels: 1000,
            max_side: 64,
            max_file_bytes: 1 << 20,
        };
        assert!(decode_image_limited(&png(40, 25), &limits).is_ok());
        let e = decode_image_limited(&png(40, 26), &limits).unwrap_err();
        assert!(e.to_string().contains("1000 pixels in all"), "{e}");
        let e = decode_image_limited(&png(65, 1), &limits).unwrap_err();
        assert!(e.to_string().contains("64 pixels a side"), "{e}");
        let small = ImageLimits {
            max_file_bytes: 10,
            ..limits
        };
        assert!(matches!(
            decode_image_limited(&png(4, 4), &small),
            Err(PreprocessError::FileTooLarge { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_under_the_size_cap_are_read() {
        let dir = std::env::temp_dir().join(format!("screenpilot-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("pipe");
        std::fs::remove_file(&fifo).ok();
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let t = Instant::now();
        for p in [fifo.as_path(), Path::new("/dev/zero"), dir.as_path()] {
            let e = read_image_file(p, 1 << 20, true).unwrap_err();
            assert!(
                matches!(e, PreprocessError::NotRegularFile { .. }),
                "{}: {e}",
                p.display()
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a FIFO or device blocked: {:?}",
            t.elapsed()
        );
        let file = dir.join("a.png");
        std::fs::write(&file, png(8, 8)).unwrap();
        assert!(load_image_limited(&file, &ImageLimits::default()).is_ok());
        let e = load_image_limited(
            &file,
            &ImageLimits {
                max_file_bytes: 16,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(e, PreprocessError::FileTooLarge { .. }), "{e}");
        let link = dir.join("link.png");
        std::fs::remove_file(&link).ok();
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(read_image_file(&link, 1 << 20, true).is_ok());
        assert!(matches!(
            read_image_file(&link, 1 << 20, false),
            Err(PreprocessError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
