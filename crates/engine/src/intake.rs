//! Reading and decoding a request's images and videos before it reaches the engine: the engine
//! has one worker thread that every client shares, so a slow file, a huge file or a decompression
//! bomb must never run there. [`resolve_images`] turns every `ImageSource::Bytes` / `Path` into a
//! decoded `ImageSource::Image` on tokio's blocking pool, under [`ImageLimits`], a timeout and
//! a cap on concurrent decodes; [`resolve_videos`] likewise turns every `VideoSource::Bytes` /
//! `Path` into a sampled `VideoSource::Clip` under [`VideoLimits`] (the decoder stops at the
//! timeout). Local files are read only from the folders an [`ImagePolicy`] allows, and every
//! refusal of a path outside them reads the same, so the server's answers tell nothing about
//! which paths exist.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::DynamicImage;
pub use screenpilot_model::preprocess::ImageLimits;
use screenpilot_model::preprocess::{decode_image_limited, open_regular_file, read_image_file, PreprocessError, VideoConfig};
use tokio::sync::Semaphore;

use crate::error::{EngineError, Result};
use crate::request::{Clip, ContentPart, ImageSource, Request, VideoSource};
pub use crate::video_file::VideoLimits;

/// Default time to read and decode all images of one request.
pub const DEFAULT_IMAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to read and decode all videos of one request.
pub const DEFAULT_VIDEO_TIMEOUT: Duration = Duration::from_secs(60);

/// Where images and videos may come from and what they may cost.
#[derive(Debug, Clone)]
pub struct ImagePolicy {
    limits: ImageLimits,
    video_limits: VideoLimits,
    video_timeout: Duration,
    /// Canonical folders (no symlinks, no `..`); empty: no local files.
    allowed_dirs: Vec<PathBuf>,
    timeout: Duration,
    /// Decodes running at once: each may hold `max_pixels` x 8 bytes.
    decoders: Arc<Semaphore>,
}

impl Default for ImagePolicy {
    fn default() -> Self {
        Self {
            limits: ImageLimits::default(),
            video_limits: VideoLimits::default(),
            video_timeout: DEFAULT_VIDEO_TIMEOUT,
            allowed_dirs: Vec::new(),
            timeout: DEFAULT_IMAGE_TIMEOUT,
            decoders: Arc::new(Semaphore::new(default_decoders())),
        }
    }
}

fn default_decoders() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8)
}

impl ImagePolicy {
    /// Canonicalises `allowed_dirs` now, so a folder that is later replaced by a symlink does not
    /// widen what is allowed; each must exist and be a directory.
    pub fn new(limits: ImageLimits, allowed_dirs: &[PathBuf], timeout: Duration) -> Result<Self> {
        let allowed_dirs = allowed_dirs
            .iter()
            .map(|d| {
                let canon = std::fs::canonicalize(d)
                    .map_err(|e| EngineError::Io(format!("cannot allow local files under {}: {e}", d.display())))?;
                if !canon.is_dir() {
                    return Err(EngineError::Io(format!(
                        "cannot allow local files under {}: not a folder",
                        d.display()
                    )));
                }
                Ok(canon)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { limits, allowed_dirs, timeout, ..Default::default() })
    }

    /// The same policy with these bounds on videos and this time to decode one request's
    /// videos (defaults: [`VideoLimits::default`], [`DEFAULT_VIDEO_TIMEOUT`]).
    pub fn with_videos(mut self, limits: VideoLimits, timeout: Duration) -> Self {
        self.video_limits = limits;
        self.video_timeout = timeout;
        self
    }
}

/// Decodes every encoded or file image of `request` off the caller's thread; images already
/// decoded pass through. Errors are [`EngineError::InvalidImage`] (including a timeout).
pub async fn resolve_images(mut request: Request, policy: &ImagePolicy) -> Result<Request> {
    let todo: Vec<(usize, usize, ImageSource)> = request
        .messages
        .iter()
        .enumerate()
        .flat_map(|(i, m)| m.parts.iter().enumerate().map(move |(j, p)| (i, j, p)))
        .filter_map(|(i, j, p)| match p {
            ContentPart::Image(src @ (ImageSource::Bytes(_) | ImageSource::Path(_))) => Some((i, j, src.clone())),
            _ => None,
        })
        .collect();
    if todo.is_empty() {
        return Ok(request);
    }
    let policy_owned = policy.clone();
    let work = async move {
        // The permit moves into the blocking task, so a decode that outlives the timeout still
        // counts against the cap until it really ends.
        let permit = policy_owned.decoders.clone().acquire_owned().await.map_err(|_| EngineError::Stopped)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            todo.into_iter()
                .map(|(i, j, src)| decode(&src, &policy_owned).map(|img| (i, j, img)))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| EngineError::InvalidImage(format!("image decoding failed: {e}")))?
    };
    let decoded = tokio::time::timeout(policy.timeout, work).await.map_err(|_| {
        EngineError::InvalidImage(format!("reading and decoding the images took over {:?}", policy.timeout))
    })??;
    for (i, j, img) in decoded {
        request.messages[i].parts[j] = ContentPart::Image(ImageSource::Image(Arc::new(img)));
    }
    Ok(request)
}

fn decode(src: &ImageSource, policy: &ImagePolicy) -> Result<DynamicImage> {
    let invalid = |e: PreprocessError| EngineError::InvalidImage(e.to_string());
    match src {
        ImageSource::Bytes(b) => decode_image_limited(b, &policy.limits).map_err(invalid),
        ImageSource::Path(p) => {
            let bytes = read_allowed(p, policy)?;
            decode_image_limited(&bytes, &policy.limits)
                .map_err(|e| EngineError::InvalidImage(format!("{}: {e}", p.display())))
        }
        ImageSource::Image(i) => Ok((**i).clone()),
    }
}

/// `path` in canonical form if it lies under an allowed folder.
fn allowed(path: &Path, policy: &ImagePolicy) -> Option<std::path::PathBuf> {
    if !path.is_absolute() || policy.allowed_dirs.is_empty() {
        return None;
    }
    // Canonical form: symlinks resolved and `..` gone, so `starts_with` compares real places.
    let canon = std::fs::canonicalize(path).ok()?;
    policy.allowed_dirs.iter().any(|d| canon.starts_with(d)).then_some(canon)
}

/// The bytes of `path` if it is a regular file under an allowed folder. Missing, outside,
/// unreadable and not-allowed paths all get the same message.
pub fn read_allowed(path: &Path, policy: &ImagePolicy) -> Result<Vec<u8>> {
    let denied = || {
        EngineError::InvalidImage(format!(
            "{}: no such image file in the folders this server allows (--allow-local-files)",
            path.display()
        ))
    };
    let canon = allowed(path, policy).ok_or_else(denied)?;
    // O_NOFOLLOW: the last component cannot have become a symlink since canonicalisation.
    read_image_file(&canon, policy.limits.max_file_bytes, false).map_err(|e| match e {
        PreprocessError::Read { .. } => denied(),
        other => EngineError::InvalidImage(format!("{}: {other}", path.display())),
    })
}

/// Decodes every video file or video data of `request` into its sampled clip (the frames `cfg`
/// samples) off the caller's thread; clips and lists of frames pass through. Errors are
/// [`EngineError::InvalidVideo`] (including the timeout, at which the decoder also stops).
pub async fn resolve_videos(mut request: Request, policy: &ImagePolicy, cfg: &VideoConfig) -> Result<Request> {
    let todo: Vec<(usize, usize, VideoSource)> = request
        .messages
        .iter()
        .enumerate()
        .flat_map(|(i, m)| m.parts.iter().enumerate().map(move |(j, p)| (i, j, p)))
        .filter_map(|(i, j, p)| match p {
            ContentPart::Video(src @ (VideoSource::Bytes(_) | VideoSource::Path(_))) => Some((i, j, src.clone())),
            _ => None,
        })
        .collect();
    if todo.is_empty() {
        return Ok(request);
    }
    let (policy_owned, cfg) = (policy.clone(), cfg.clone());
    let too_long = || EngineError::InvalidVideo(format!("reading and decoding the videos took over {:?}", policy.video_timeout));
    let work = async move {
        let permit = policy_owned.decoders.clone().acquire_owned().await.map_err(|_| EngineError::Stopped)?;
        // The decoder checks the deadline itself, so it does not run on after the answer.
        let deadline = Instant::now() + policy_owned.video_timeout;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            todo.into_iter()
                .map(|(i, j, src)| decode_video(&src, &policy_owned, &cfg, deadline).map(|clip| (i, j, clip)))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| EngineError::InvalidVideo(format!("video decoding failed: {e}")))?
    };
    let decoded = tokio::time::timeout(policy.video_timeout, work).await.map_err(|_| too_long())??;
    for (i, j, clip) in decoded {
        request.messages[i].parts[j] = ContentPart::Video(VideoSource::Clip(clip));
    }
    Ok(request)
}

fn decode_video(src: &VideoSource, policy: &ImagePolicy, cfg: &VideoConfig, deadline: Instant) -> Result<Arc<Clip>> {
    let limits = &policy.video_limits;
    match src {
        VideoSource::Bytes(b) => crate::video_file::decode_bytes_limited(b, "the video data", cfg, limits, Some(deadline)),
        VideoSource::Path(p) => {
            let denied = || {
                EngineError::InvalidVideo(format!(
                    "{}: no such video file in the folders this server allows (--allow-local-files)",
                    p.display()
                ))
            };
            let canon = allowed(p, policy).ok_or_else(denied)?;
            // O_NOFOLLOW, as for images; FIFOs and devices are refused before anything is read.
            let (file, _) = open_regular_file(&canon, limits.max_file_bytes, false).map_err(|e| match e {
                PreprocessError::Read { .. } => denied(),
                other => crate::video_file::open_error(p, other),
            })?;
            crate::video_file::decode_file(file, &p.display().to_string(), cfg, limits, Some(deadline))
        }
        VideoSource::Frames { .. } | VideoSource::Clip(_) => crate::video::sample(src, cfg),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::request::{ChatMessage, Role};

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        DynamicImage::new_rgb8(w, h).write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn with_image(src: ImageSource) -> Request {
        Request {
            messages: vec![ChatMessage { role: Role::User, parts: vec![ContentPart::Image(src)] }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn bytes_and_allowed_files_become_decoded_images() {
        let dir = std::env::temp_dir().join(format!("screenpilot-intake-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.png"), png(6, 4)).unwrap();
        let policy =
            ImagePolicy::new(ImageLimits::default(), std::slice::from_ref(&dir), DEFAULT_IMAGE_TIMEOUT).unwrap();
        for src in [ImageSource::Bytes(Arc::from(png(6, 4))), ImageSource::Path(dir.join("a.png"))] {
            let r = resolve_images(with_image(src), &policy).await.unwrap();
            match &r.messages[0].parts[0] {
                ContentPart::Image(ImageSource::Image(i)) => assert_eq!((i.width(), i.height()), (6, 4)),
                other => panic!("not decoded: {other:?}"),
            }
        }
        let none = ImagePolicy::default();
        let e = resolve_images(with_image(ImageSource::Path(dir.join("a.png"))), &none).await.unwrap_err();
        assert!(e.to_string().contains("no such image file in the folders"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn oversized_images_are_refused_with_the_limit() {
        let limits = ImageLimits { max_pixels: 100, ..Default::default() };
        let policy = ImagePolicy::new(limits, &[], DEFAULT_IMAGE_TIMEOUT).unwrap();
        let e = resolve_images(with_image(ImageSource::Bytes(Arc::from(png(20, 20)))), &policy).await.unwrap_err();
        assert!(matches!(&e, EngineError::InvalidImage(m) if m.contains("20x20")), "{e}");
    }
}
