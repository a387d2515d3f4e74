//! Tests of [`super::Rewind`] and [`super::RewindConfig`]: off by default, validation,
//! "what changed" pairs, stopping drops the frames.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use screenpilot_agent::coords::OsPoint;
use screenpilot_agent::{CaptureGeometry, FakeCapture, InputSpace, MonitorGeometry};

use super::blackout::FixedWindows;
use super::*;

fn fake(values: &[u8]) -> Box<FakeCapture> {
    let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 0, y: 0 }, width: 16, height: 8, scale_factor: 1.0, input_space: InputSpace::Physical };
    let mut cap = FakeCapture::new(CaptureGeometry::full_monitor(m, 16, 8).unwrap(), RgbImage::new(16, 8));
    for v in values {
        cap.push(RgbImage::from_pixel(16, 8, Rgb([*v; 3])));
    }
    Box::new(cap)
}

fn wait_for_slots(r: &Rewind, n: f64) {
    let t0 = Instant::now();
    while r.status().seconds * r.status().fps < n {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out: {:?}", r.status());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn settings_out_of_range_are_one_clear_error_each() {
    assert!(RewindConfig::default().validate().is_ok());
    let cases = [
        (RewindConfig { fps: 10.0, ..RewindConfig::default() }, "frames per second"),
        (RewindConfig { fps: f64::NAN, ..RewindConfig::default() }, "frames per second"),
        (RewindConfig { seconds: 301, ..RewindConfig::default() }, "length"),
        (RewindConfig { max_bytes: 1 << 20, ..RewindConfig::default() }, "memory"),
        (RewindConfig { threshold: -1.0, ..RewindConfig::default() }, "threshold"),
    ];
    for (c, word) in cases {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(word), "{e}");
    }
    assert_eq!(RewindConfig::default().capacity_slots(), 60);
}

#[test]
fn off_by_default_and_stopping_drops_every_frame() {
    let r = Rewind::new();
    assert!(!r.is_recording());
    assert_eq!(r.status(), RewindStatus::default());
    assert!(r.clip(5.0).unwrap_err().to_string().contains("rewind is off"));
    let cfg = RewindConfig { fps: 4.0, ..RewindConfig::default() };
    r.start(cfg, fake(&[1, 2, 3]), Box::new(FixedWindows::default())).unwrap();
    wait_for_slots(&r, 3.0);
    let st = r.status();
    assert!(st.recording && st.frames >= 1 && st.bytes > 0 && st.capacity_seconds == 30.0, "{st:?}");
    r.stop();
    assert!(!r.is_recording());
    assert_eq!(r.status().bytes, 0);
    assert!(r.change().is_err());
}

#[test]
fn bad_settings_do_not_start_recording() {
    let r = Rewind::new();
    assert!(r.start(RewindConfig { seconds: 0, ..RewindConfig::default() }, fake(&[1]), Box::new(FixedWindows::default())).is_err());
    assert!(!r.is_recording());
}

#[test]
fn what_changed_compares_the_frame_at_the_last_question_with_now() {
    let r = Rewind::new();
    r.start(RewindConfig { fps: 4.0, ..RewindConfig::default() }, fake(&[10, 20]), Box::new(FixedWindows::default())).unwrap();
    wait_for_slots(&r, 2.0);
    let first = r.change().unwrap();
    let px = |s: &Screenshot| s.image.get_pixel(0, 0).0[0];
    assert_eq!((px(&first.before), px(&first.after)), (10, 20), "no question yet: the oldest frame");
    let again = r.change().unwrap();
    assert_eq!((px(&again.before), px(&again.after)), (20, 20), "since the last question");
    let clip = r.clip(10.0).unwrap();
    assert_eq!(px(&clip.newest), 20);
    r.stop();
}
