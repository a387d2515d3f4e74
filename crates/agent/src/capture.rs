//! Screen capture: the [`Capture`] trait, the [`Screenshot`] it yields (image plus the
//! geometry needed to map model coordinates back to the screen), a scripted
//! [`FakeCapture`], and waiting until the screen settles (frame difference).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::actuator::StopFlag;
use crate::coords::CaptureGeometry;
use crate::error::{AgentError, Result};

/// A captured frame and where on screen it came from.
#[derive(Debug, Clone)]
pub struct Screenshot {
    /// The pixels (shared: the conversation keeps it).
    pub image: Arc<RgbImage>,
    /// How image pixels relate to the monitor and to OS coordinates.
    pub geometry: CaptureGeometry,
}

/// Takes screenshots of the target monitor (or a region of it).
pub trait Capture {
    /// One new frame.
    fn capture(&mut self) -> Result<Screenshot>;
}

/// A fake: returns queued frames in order, then repeats the last one.
#[derive(Debug)]
pub struct FakeCapture {
    geometry: CaptureGeometry,
    queued: VecDeque<RgbImage>,
    last: Arc<RgbImage>,
    /// Number of frames taken.
    pub count: usize,
}

impl FakeCapture {
    /// A fake showing `first` until more frames are queued; its size must match `geometry`.
    pub fn new(geometry: CaptureGeometry, first: RgbImage) -> Self {
        Self { geometry, queued: VecDeque::new(), last: Arc::new(first), count: 0 }
    }

    /// Queues frames returned by the following captures.
    pub fn push(&mut self, frame: RgbImage) {
        self.queued.push_back(frame);
    }
}

impl Capture for FakeCapture {
    fn capture(&mut self) -> Result<Screenshot> {
        if let Some(next) = self.queued.pop_front() {
            self.last = Arc::new(next);
        }
        self.count += 1;
        let (w, h) = self.last.dimensions();
        if (w, h) != (self.geometry.image_width, self.geometry.image_height) {
            return Err(AgentError::Capture(format!("fake frame is {w}x{h}, geometry says otherwise")));
        }
        Ok(Screenshot { image: Arc::clone(&self.last), geometry: self.geometry.clone() })
    }
}

/// When the screen counts as settled after an action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SettleConfig {
    /// Time between frames compared.
    pub poll: Duration,
    /// Settled when [`frame_difference`] of consecutive frames is below this.
    pub threshold: f64,
    /// Give up waiting after this long and go on with the newest frame.
    pub timeout: Duration,
}

impl Default for SettleConfig {
    fn default() -> Self {
        Self { poll: Duration::from_millis(150), threshold: 0.002, timeout: Duration::from_secs(3) }
    }
}

/// Fraction (0..=1) of sampled pixels (every 2nd row and column) that differ by more than
/// 24 in some channel; frames of different sizes differ completely.
pub fn frame_difference(a: &RgbImage, b: &RgbImage) -> f64 {
    if a.dimensions() != b.dimensions() {
        return 1.0;
    }
    let (w, h) = a.dimensions();
    let (mut total, mut changed) = (0u64, 0u64);
    for y in (0..h).step_by(2) {
        for x in (0..w).step_by(2) {
            total += 1;
            let (p, q) = (a.get_pixel(x, y).0, b.get_pixel(x, y).0);
            if p.iter().zip(q.iter()).any(|(u, v)| u.abs_diff(*v) > 24) {
                changed += 1;
            }
        }
    }
    if total == 0 {
        0.0
    } else {
        changed as f64 / total as f64
    }
}

/// Captures frames until two consecutive ones differ less than the threshold, or the
/// timeout passes. Returns the newest frame and whether the screen settled.
pub fn wait_until_settled(capture: &mut dyn Capture, cfg: &SettleConfig, stop: &StopFlag) -> Result<(Screenshot, bool)> {
    let start = Instant::now();
    let mut prev = capture.capture()?;
    loop {
        stop.sleep(cfg.poll)?;
        let next = capture.capture()?;
        let diff = frame_difference(&prev.image, &next.image);
        if diff < cfg.threshold {
            return Ok((next, true));
        }
        if start.elapsed() >= cfg.timeout {
            return Ok((next, false));
        }
        prev = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coords::{InputSpace, MonitorGeometry, OsPoint};

    fn fake(first: RgbImage) -> FakeCapture {
        let (w, h) = first.dimensions();
        let m = MonitorGeometry { name: "f".into(), origin: OsPoint { x: 0, y: 0 }, width: w, height: h, scale_factor: 1.0, input_space: InputSpace::Physical };
        FakeCapture::new(CaptureGeometry::full_monitor(m, w, h).unwrap(), first)
    }

    fn filled(v: u8) -> RgbImage {
        RgbImage::from_pixel(20, 10, image::Rgb([v, v, v]))
    }

    #[test]
    fn difference_counts_changed_pixels() {
        assert_eq!(frame_difference(&filled(0), &filled(0)), 0.0);
        assert_eq!(frame_difference(&filled(0), &filled(200)), 1.0);
        assert_eq!(frame_difference(&filled(0), &filled(10)), 0.0, "small noise is ignored");
    }

    #[test]
    fn settles_after_the_screen_stops_changing() {
        let mut cap = fake(filled(0));
        for v in [50, 100, 150, 150] {
            cap.push(filled(v));
        }
        let cfg = SettleConfig { poll: Duration::from_millis(1), threshold: 0.01, timeout: Duration::from_secs(5) };
        let (shot, settled) = wait_until_settled(&mut cap, &cfg, &StopFlag::new()).unwrap();
        assert!(settled);
        assert_eq!(shot.image.get_pixel(0, 0).0, [150, 150, 150]);
        assert_eq!(cap.count, 4, "frames 50, 100, 150, 150");
    }

    #[test]
    fn gives_up_after_the_timeout_when_the_screen_keeps_changing() {
        let mut cap = fake(filled(0));
        for i in 0..1000u32 {
            cap.push(filled(if i % 2 == 0 { 200 } else { 0 }));
        }
        let cfg = SettleConfig { poll: Duration::from_millis(5), threshold: 0.01, timeout: Duration::from_millis(60) };
        let t0 = Instant::now();
        let (_, settled) = wait_until_settled(&mut cap, &cfg, &StopFlag::new()).unwrap();
        assert!(!settled);
        assert!(t0.elapsed() < Duration::from_millis(500));
    }
}
