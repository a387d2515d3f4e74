//! Tests of [`super::RewindBuffer`]: dedupe, the length and memory bounds, eviction order,
//! resolution changes and the clips it builds.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use image::{Rgb, RgbImage};
use screenpilot_agent::coords::OsPoint;
use screenpilot_agent::{CaptureGeometry, InputSpace, MonitorGeometry, Screenshot};

use super::*;

fn shot_sized(w: u32, h: u32, v: u8) -> Screenshot {
    let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 0, y: 0 }, width: w, height: h, scale_factor: 1.0, input_space: InputSpace::Physical };
    Screenshot { image: Arc::new(RgbImage::from_pixel(w, h, Rgb([v, v, v]))), geometry: CaptureGeometry::full_monitor(m, w, h).unwrap() }
}

fn shot(v: u8) -> Screenshot {
    shot_sized(16, 8, v)
}

fn cfg(fps: f64, seconds: u32, max_bytes: u64) -> RewindConfig {
    RewindConfig { fps, seconds, max_bytes, ..RewindConfig::default() }
}

/// The first pixel of every frame of a clip.
fn values(clip: &Clip) -> Vec<u8> {
    clip.frames.iter().map(|f| f.as_rgb8().unwrap().get_pixel(0, 0).0[0]).collect()
}

#[test]
fn unchanged_frames_are_stored_once_and_keep_their_time_steps() {
    let mut b = RewindBuffer::new(cfg(2.0, 30, 1 << 20));
    assert_eq!(b.push(0, shot(1)), Pushed::Stored);
    assert_eq!(b.push(1, shot(1)), Pushed::Repeated);
    assert_eq!(b.push(2, shot(1)), Pushed::Repeated);
    assert_eq!(b.push(3, shot(2)), Pushed::Stored);
    assert_eq!((b.slots(), b.frames(), b.bytes()), (4, 2, 2 * 16 * 8 * 3));
    let v = b.clip(10.0).unwrap();
    assert_eq!(values(&v.clip), [1, 1, 1, 2]);
    assert_eq!(v.clip.indices, [0, 1, 2, 3]);
    assert_eq!(v.clip.fps, Some(2.0));
    assert!(Arc::ptr_eq(&v.clip.frames[0], &v.clip.frames[2]), "a repeated frame is the same stored image");
    assert_eq!(v.seconds, 2.0);
}

#[test]
fn small_differences_count_as_unchanged_only_with_a_threshold() {
    let mut noisy = shot(50);
    Arc::make_mut(&mut noisy.image).put_pixel(0, 0, Rgb([255, 255, 255]));
    let mut exact = RewindBuffer::new(cfg(2.0, 30, 1 << 20));
    exact.push(0, shot(50));
    assert_eq!(exact.push(1, noisy.clone()), Pushed::Stored);
    let mut tolerant = RewindBuffer::new(RewindConfig { threshold: 0.05, ..cfg(2.0, 30, 1 << 20) });
    tolerant.push(0, shot(50));
    assert_eq!(tolerant.push(1, noisy), Pushed::Repeated, "1 of 32 sampled pixels changed");
}

#[test]
fn missed_steps_repeat_the_frame_before_them_and_late_frames_are_ignored() {
    let mut b = RewindBuffer::new(cfg(1.0, 30, 1 << 20));
    b.push(0, shot(1));
    b.push(3, shot(2));
    assert_eq!(b.push(2, shot(9)), Pushed::Late);
    assert_eq!(values(&b.clip(30.0).unwrap().clip), [1, 1, 1, 2]);
}

#[test]
fn the_length_drops_the_oldest_time_steps_first() {
    let mut b = RewindBuffer::new(cfg(1.0, 3, 1 << 20));
    for (t, v) in [1, 1, 2, 3, 4].into_iter().enumerate() {
        b.push(t as u64, shot(v));
    }
    assert_eq!(b.slots(), 3);
    assert_eq!(b.frames(), 3, "the run of 1 went when its last step did");
    assert_eq!(values(&b.clip(60.0).unwrap().clip), [2, 3, 4]);
    assert_eq!(b.bytes(), 3 * 16 * 8 * 3);
}

#[test]
fn the_memory_cap_holds_and_drops_the_oldest_frames_first() {
    let frame = 16 * 8 * 3;
    let mut b = RewindBuffer::new(cfg(2.0, 300, 3 * frame));
    for v in 0..10u8 {
        b.push(u64::from(v), shot(v));
        assert!(b.bytes() <= 3 * frame, "{} bytes after frame {v}", b.bytes());
    }
    assert_eq!(b.frames(), 3);
    assert_eq!(values(&b.clip(300.0).unwrap().clip), [7, 8, 9], "the newest stay");
}

#[test]
fn a_screen_larger_than_the_cap_is_scaled_down_to_keep_two_frames() {
    let max = 1000;
    let mut b = RewindBuffer::new(cfg(2.0, 30, max));
    for v in 0..4u8 {
        b.push(u64::from(v), shot_sized(200, 100, v)); // 60 000 bytes each
    }
    assert!(b.bytes() <= max, "{} bytes", b.bytes());
    assert_eq!(b.frames(), 2);
    let newest = b.newest().unwrap();
    let (w, h) = newest.image.dimensions();
    assert!(w * h * 3 <= 500 && (w as f64 / h as f64 - 2.0).abs() < 0.2, "{w}x{h}");
    assert_eq!((newest.geometry.image_width, newest.geometry.image_height), (w, h));
    assert_eq!(newest.geometry.region.width, 200, "the geometry still maps to the whole monitor");
}

#[test]
fn a_new_screen_size_starts_over_so_a_clip_has_one_size() {
    let mut b = RewindBuffer::new(cfg(2.0, 30, 1 << 20));
    b.push(0, shot(1));
    b.push(1, shot(2));
    let before = b.clip(10.0).unwrap();
    assert_eq!(b.push(2, shot_sized(8, 8, 3)), Pushed::Restarted);
    assert_eq!((b.slots(), b.frames(), b.bytes()), (1, 1, 8 * 8 * 3));
    assert!(b.clip(10.0).is_err(), "one frame is not a clip yet");
    b.push(3, shot_sized(8, 8, 4));
    let after = b.clip(10.0).unwrap();
    assert!(after.clip.frames.iter().all(|f| (f.width(), f.height()) == (8, 8)));
    assert_eq!(values(&after.clip), [3, 4]);
    assert_eq!(values(&before.clip), [1, 2], "a clip handed out keeps its frames");
}

#[test]
fn a_clip_covers_the_last_seconds_asked_and_the_same_span_is_the_same_arc() {
    let mut b = RewindBuffer::new(cfg(2.0, 30, 1 << 20));
    for t in 0..10u64 {
        b.push(t, shot(t as u8));
    }
    let v = b.clip(2.0).unwrap();
    assert_eq!((values(&v.clip), v.clip.indices.clone()), (vec![6, 7, 8, 9], vec![0, 1, 2, 3]));
    assert_eq!(v.newest.image.get_pixel(0, 0).0[0], 9);
    assert!(Arc::ptr_eq(&v.clip, &b.clip(2.0).unwrap().clip), "a follow-up gets the same clip");
    assert!(!Arc::ptr_eq(&v.clip, &b.clip(3.0).unwrap().clip));
    b.push(10, shot(10));
    let later = b.clip(2.0).unwrap();
    assert_eq!(values(&later.clip), [7, 8, 9, 10]);
    assert_eq!(values(&b.clip(0.1).unwrap().clip), [9, 10], "at least two frames");
    assert!(b.clip(0.0).is_err() && b.clip(f64::NAN).is_err());
}

#[test]
fn long_clips_are_subsampled_with_true_indices_ending_on_the_newest_frame() {
    let mut b = RewindBuffer::new(cfg(4.0, 300, 1 << 24));
    for t in 0..300u64 {
        b.push(t, shot((t % 251) as u8));
    }
    let v = b.clip(75.0).unwrap();
    assert!(v.clip.frames.len() <= MAX_CLIP_FRAMES);
    assert_eq!(v.clip.indices.len(), v.clip.frames.len());
    assert_eq!(*v.clip.indices.last().unwrap(), 299);
    assert!(v.clip.indices.windows(2).all(|w| w[1] - w[0] == 3), "an even step: {:?}", &v.clip.indices[..4]);
    assert_eq!(values(&v.clip).last(), Some(&((299 % 251) as u8)));
}
