//! Video files decoded through FFmpeg (the clips of tools/make_test_videos.py): the frames the
//! video processor samples are the ones decoded (each frame's brightness says which it is), in
//! mp4 (H.264), WebM (VP9) and Matroska (VP8); and a file that is not a decodable video, or is
//! over a limit, is one clear error naming it.
#![cfg(feature = "video-files")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::DynamicImage;
use screenpilot_engine::video_file::{self, VideoLimits};
use screenpilot_engine::{video, EngineError, VideoSource};
use screenpilot_model::preprocess::VideoConfig;

fn clip_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/video_files").join(name)
}

/// The brightness of frame `i`'s top half (tools/make_test_videos.py `level`).
fn level(i: usize) -> i32 {
    20 + 14 * i as i32
}

/// Asserts that `frame` is frame `i`: the top half's centre is grey at `level(i)`, the bottom
/// half's is red, within what the lossy codecs change.
fn assert_is_frame(frame: &DynamicImage, i: usize) {
    let rgb = frame.to_rgb8();
    assert_eq!(rgb.dimensions(), (64, 48));
    let top = rgb.get_pixel(32, 12).0.map(i32::from);
    let bottom = rgb.get_pixel(32, 36).0.map(i32::from);
    for c in top {
        assert!((c - level(i)).abs() <= 6, "frame {i}: top {top:?}, expected grey {}", level(i));
    }
    for (c, want) in bottom.iter().zip([200, 40, 40]) {
        assert!((c - want).abs() <= 12, "frame {i}: bottom {bottom:?}, expected red");
    }
}

fn check_clip(name: &str, total: usize, fps: f64, expected: &[usize]) {
    let cfg = VideoConfig::default();
    // The processor's own rule, for a clip of `total` frames at `fps`.
    assert_eq!(cfg.sample_frames(total, Some(fps)), expected);
    let clip = video_file::decode_path(&clip_path(name), &cfg).unwrap();
    assert_eq!(clip.indices, expected, "{name}");
    assert_eq!(clip.fps, Some(fps), "{name}");
    assert_eq!(clip.frames.len(), expected.len());
    for (f, &i) in clip.frames.iter().zip(expected) {
        assert_is_frame(f, i);
    }
}

#[test]
fn an_mp4_gives_the_sampled_frames() {
    // 15 frames at 5 fps: 2 fps keeps 6 of them; the count is in the mp4 header.
    check_clip("h264.mp4", 15, 5.0, &[0, 3, 6, 8, 11, 14]);
}

#[test]
fn a_webm_gives_the_sampled_frames() {
    // WebM headers carry no frame count: the packets are counted.
    check_clip("vp9.webm", 11, 4.0, &[0, 2, 5, 8, 10]);
}

#[test]
fn a_matroska_vp8_gives_the_sampled_frames() {
    check_clip("vp8.mkv", 9, 3.0, &[0, 2, 3, 5, 6, 8]);
}

#[test]
fn every_frame_comes_out_in_order_when_all_are_sampled() {
    // B-frames are decoded out of order; the clip must still list frames by display order.
    let cfg = VideoConfig { fps: 100.0, ..VideoConfig::default() };
    let clip = video_file::decode_path(&clip_path("h264.mp4"), &cfg).unwrap();
    assert_eq!(clip.indices, (0..15).collect::<Vec<_>>());
    for (i, f) in clip.frames.iter().enumerate() {
        assert_is_frame(f, i);
    }
}

#[test]
fn bytes_decode_as_the_file_does_and_through_the_engine_sampler() {
    let cfg = VideoConfig::default();
    let bytes: Arc<[u8]> = std::fs::read(clip_path("vp9.webm")).unwrap().into();
    let from_bytes = video::sample(&VideoSource::Bytes(bytes), &cfg).unwrap();
    let from_path = video::sample(&VideoSource::Path(clip_path("vp9.webm")), &cfg).unwrap();
    assert_eq!(from_bytes, from_path);
}

/// The one error of decoding `path`: an `InvalidVideo` on one line, naming the file.
fn error_of(path: &Path) -> String {
    let e = video_file::decode_path(path, &VideoConfig::default()).unwrap_err();
    let EngineError::InvalidVideo(m) = &e else { panic!("not an InvalidVideo: {e:?}") };
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(!m.contains('\n'), "{m}");
    m.clone()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("screenpilot-video-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn files_that_are_not_decodable_videos_are_one_clear_error() {
    let mp4 = std::fs::read(clip_path("h264.mp4")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("random.mp4", common::noise(7, 4096), "not a video in a supported container"),
        ("image.mp4", common::png_bytes(1, 8, 8), "not a video in a supported container"),
        ("empty.mp4", Vec::new(), "not a video in a supported container"),
        // The header is there, the frames after the first part are not.
        ("truncated.mp4", mp4[..mp4.len() / 2].to_vec(), "truncated"),
    ];
    for (name, bytes, expect) in cases {
        let path = scratch(name);
        std::fs::write(&path, &bytes).unwrap();
        let m = error_of(&path);
        assert!(m.contains(expect), "{name}: {m}");
    }
    assert!(error_of(&clip_path("audio.m4a")).contains("no video stream"));
    assert!(error_of(&scratch("missing.mp4")).contains("cannot read it"));
}

#[test]
fn every_truncation_of_a_video_is_a_clip_or_an_error_never_a_panic() {
    for name in ["h264.mp4", "vp9.webm", "vp8.mkv"] {
        let bytes = std::fs::read(clip_path(name)).unwrap();
        for cut in (0..bytes.len()).step_by(97) {
            let data: Arc<[u8]> = bytes[..cut].into();
            match video_file::decode_bytes(&data, &VideoConfig::default()) {
                Ok(clip) => assert!(!clip.frames.is_empty()),
                Err(e) => assert!(matches!(e, EngineError::InvalidVideo(_)), "{name} cut at {cut}: {e:?}"),
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let path = scratch("pipe.mp4");
    let _ = std::fs::remove_file(&path);
    assert!(std::process::Command::new("mkfifo").arg(&path).status().unwrap().success());
    let start = Instant::now();
    assert!(error_of(&path).contains("not a regular file"));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(error_of(Path::new("/dev/zero")).contains("not a regular file"));
}

fn limited(limits: VideoLimits, deadline: Option<Instant>) -> String {
    let path = clip_path("h264.mp4");
    let file = video_file::open_file(&path, &limits, true).map_err(|e| e.to_string());
    match file {
        Err(e) => e,
        Ok(f) => video_file::decode_file(f, "h264.mp4", &VideoConfig::default(), &limits, deadline)
            .unwrap_err()
            .to_string(),
    }
}

#[test]
fn limits_are_enforced_with_a_message_naming_them() {
    let d = VideoLimits::default();
    assert!(limited(VideoLimits { max_file_bytes: 1000, ..d }, None).contains("over the limit of 1000 bytes"));
    assert!(limited(VideoLimits { max_frame_pixels: 1000, ..d }, None).contains("64x48"));
    assert!(limited(VideoLimits { max_frames: 10, ..d }, None).contains("15 frames"));
    assert!(limited(VideoLimits { max_clip_bytes: 10_000, ..d }, None).contains("over the limit of 10000"));
    assert!(limited(d, Some(Instant::now())).contains("too long"));
    let bytes: Arc<[u8]> = vec![0u8; 2000].into();
    let e = video_file::decode_bytes_limited(&bytes, "upload", &VideoConfig::default(), &VideoLimits { max_file_bytes: 1000, ..d }, None);
    assert!(e.unwrap_err().to_string().contains("upload: 2000 bytes, over the limit"));
}
