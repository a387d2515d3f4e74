//! [`Recorder`]: one thread that takes a frame every `1 / fps` seconds through a
//! [`Capture`], blacks out the chosen regions and windows, and pushes the frame into the shared
//! [`RewindBuffer`] at the time step it was taken (so a slow capture leaves a repeated frame,
//! not a shorter clip). A failed capture is remembered for the indicator and recording goes
//! on; a frame whose windows could not be listed is dropped (see [`super::blackout`]).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use screenpilot_agent::{Capture, Screenshot, StopFlag};

use super::blackout::{self, WindowLocator};
use super::buffer::{Pushed, RewindBuffer};
use super::{lock, RewindConfig};
use crate::error::{DesktopError, Result};

/// What the recorder has done so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecorderStatus {
    /// Frames captured.
    pub captured: u64,
    /// Frames stored as new.
    pub stored: u64,
    /// Frames equal to the one before (referenced again).
    pub repeated: u64,
    /// Times the frame size changed and the buffer started over.
    pub restarts: u64,
    /// Frames dropped because the capture or the window list failed.
    pub failed: u64,
    /// The last failure, if any.
    pub error: Option<String>,
}

/// The recording thread; stopping it joins it.
pub struct Recorder {
    stop: StopFlag,
    status: Arc<Mutex<RecorderStatus>>,
    thread: Option<JoinHandle<()>>,
}

/// What the thread owns.
struct Job {
    cfg: RewindConfig,
    buffer: Arc<Mutex<RewindBuffer>>,
    capture: Box<dyn Capture + Send>,
    windows: Box<dyn WindowLocator>,
    status: Arc<Mutex<RecorderStatus>>,
}

impl Recorder {
    /// Starts the thread; its first frame is taken at once.
    pub fn start(
        cfg: RewindConfig,
        buffer: Arc<Mutex<RewindBuffer>>,
        capture: Box<dyn Capture + Send>,
        windows: Box<dyn WindowLocator>,
    ) -> Result<Self> {
        let stop = StopFlag::new();
        let status = Arc::new(Mutex::new(RecorderStatus::default()));
        let job = Job { cfg, buffer, capture, windows, status: Arc::clone(&status) };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("screenpilot-rewind".into())
            .spawn(move || job.run(&flag))
            .map_err(|e| DesktopError::Internal(format!("cannot start the rewind thread: {e}")))?;
        Ok(Self { stop, status, thread: Some(thread) })
    }

    /// What it has done so far.
    pub fn status(&self) -> RecorderStatus {
        lock(&self.status).clone()
    }

    /// Stops the thread and waits for it (at most one capture's time).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.raise();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.halt();
    }
}

impl Job {
    fn run(mut self, stop: &StopFlag) {
        let t0 = Instant::now();
        let step = Duration::from_secs_f64(1.0 / self.cfg.fps);
        let mut tick: u64 = 0;
        loop {
            let due = t0 + step.mul_f64(tick as f64);
            if stop.sleep(due.saturating_duration_since(Instant::now())).is_err() {
                return;
            }
            self.once(tick);
            // The next step after now: a capture slower than a step skips steps (the buffer
            // repeats the frame for them).
            let elapsed = t0.elapsed().as_secs_f64();
            tick = ((elapsed * self.cfg.fps).floor() as u64 + 1).max(tick + 1);
        }
    }

    /// Captures, blacks out and stores one frame for time step `tick`.
    fn once(&mut self, tick: u64) {
        let frame = self.frame();
        let mut st = lock(&self.status);
        st.captured += 1;
        match frame {
            Ok(shot) => match lock(&self.buffer).push(tick, shot) {
                Pushed::Stored => st.stored += 1,
                Pushed::Repeated => st.repeated += 1,
                Pushed::Restarted => {
                    st.stored += 1;
                    st.restarts += 1;
                }
                Pushed::Late => {}
            },
            Err(e) => {
                st.failed += 1;
                st.error = Some(e.to_string());
            }
        }
    }

    fn frame(&mut self) -> Result<Screenshot> {
        let shot = self.capture.capture()?;
        let b = &self.cfg.blackout;
        if b.is_empty() {
            return Ok(shot);
        }
        let windows = self.windows.locate(&b.windows)?;
        let mut image = Arc::try_unwrap(shot.image).unwrap_or_else(|shared| (*shared).clone());
        blackout::apply(&mut image, &shot.geometry, &b.regions, &windows);
        Ok(Screenshot { image: Arc::new(image), geometry: shot.geometry })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::blackout::{Blackout, FixedWindows, Region, WindowRect};
    use super::*;
    use image::{Rgb, RgbImage};
    use screenpilot_agent::coords::OsPoint;
    use screenpilot_agent::{CaptureGeometry, FakeCapture, InputSpace, MonitorGeometry};

    fn fake(frames: &[u8]) -> FakeCapture {
        let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 0, y: 0 }, width: 40, height: 20, scale_factor: 1.0, input_space: InputSpace::Physical };
        let mut cap = FakeCapture::new(CaptureGeometry::full_monitor(m, 40, 20).unwrap(), RgbImage::from_pixel(40, 20, Rgb([frames[0]; 3])));
        for v in &frames[1..] {
            cap.push(RgbImage::from_pixel(40, 20, Rgb([*v; 3])));
        }
        cap
    }

    fn wait_for(status: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !status() {
            assert!(t0.elapsed() < Duration::from_secs(10), "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn records_at_the_rate_blacks_out_before_storing_and_stops() {
        let blackout = Blackout { regions: vec![Region { x: 0, y: 0, width: 10, height: 20 }], windows: vec!["secret".into()] };
        let cfg = RewindConfig { fps: 4.0, seconds: 10, blackout, ..RewindConfig::default() };
        let buffer = Arc::new(Mutex::new(RewindBuffer::new(cfg.clone())));
        let windows = FixedWindows(vec![("My Secret notes".into(), WindowRect { x: 30, y: 0, width: 10, height: 10 })]);
        let rec = Recorder::start(cfg, Arc::clone(&buffer), Box::new(fake(&[200, 200, 100])), Box::new(windows)).unwrap();
        wait_for(|| rec.status().captured >= 4);
        rec.stop();
        let b = lock(&buffer);
        assert!(b.slots() >= 4, "{} slots", b.slots());
        assert_eq!(b.frames(), 2, "200, then 100 stored once and referenced again");
        let newest = b.newest().unwrap();
        let px = |x, y| newest.image.get_pixel(x, y).0[0];
        assert_eq!((px(0, 0), px(9, 19), px(35, 5)), (0, 0, 0), "the region and the window are black");
        assert_eq!((px(10, 0), px(35, 15)), (100, 100), "the rest is the screen");
    }

    #[test]
    fn a_window_list_that_fails_drops_the_frame_and_recording_goes_on() {
        struct Broken;
        impl WindowLocator for Broken {
            fn locate(&mut self, _: &[String]) -> Result<Vec<WindowRect>> {
                Err(DesktopError::InvalidArgument("no window list".into()))
            }
        }
        let cfg = RewindConfig { fps: 4.0, blackout: Blackout { regions: vec![], windows: vec!["x".into()] }, ..RewindConfig::default() };
        let buffer = Arc::new(Mutex::new(RewindBuffer::new(cfg.clone())));
        let rec = Recorder::start(cfg, Arc::clone(&buffer), Box::new(fake(&[1])), Box::new(Broken)).unwrap();
        wait_for(|| rec.status().failed >= 2);
        let st = rec.status();
        rec.stop();
        assert_eq!(lock(&buffer).slots(), 0, "nothing is stored when the windows to hide are unknown");
        assert!(st.error.unwrap().contains("no window list"));
    }
}
