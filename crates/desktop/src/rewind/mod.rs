//! Rewind: the recent screen kept in memory so a question can be about what just happened
//! ("what did that dialog say?", "what changed since I last asked?"). Off until turned on.
//!
//! - [`RewindConfig`]: frames per second, length, a hard memory cap, the difference under
//!   which a frame counts as unchanged, and what is blacked out ([`blackout::Blackout`]).
//! - [`buffer::RewindBuffer`]: the ring of frames (unchanged frames stored once, oldest out
//!   first, the memory cap held whatever the screen size, one frame size per buffer).
//! - [`recorder::Recorder`]: the thread that captures through a [`screenpilot_agent::Capture`]
//!   at the chosen rate and blacks out regions and windows before a frame is stored.
//! - [`Rewind`]: what the app and `screenpilot watch` hold: start, stop, status, the clip of
//!   the last N seconds and the pair of frames for "what changed".
//! - [`ask`]: questions about the last N seconds (a video) and about what changed (two images).
//! - [`save`]: the only path to the disk, taken when the user saves a clip.
//! - [`settings`]: the app settings page's part (off by default), checked field by field.

pub mod ask;
pub mod blackout;
pub mod buffer;
pub mod recorder;
pub mod save;
pub mod settings;

use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use screenpilot_agent::Screenshot;

use crate::error::{DesktopError, Result};
use blackout::{Blackout, WindowLocator};
use buffer::{ClipView, RewindBuffer};
use recorder::{Recorder, RecorderStatus};

/// Frames per second: the default and the accepted range.
pub const DEFAULT_FPS: f64 = 2.0;
pub const FPS_RANGE: (f64, f64) = (0.5, 4.0);
/// Seconds kept: the default and the most.
pub const DEFAULT_SECONDS: u32 = 30;
pub const MAX_SECONDS: u32 = 300;
/// Memory cap in MiB: the default and the accepted range.
pub const DEFAULT_MAX_MIB: u64 = 512;
pub const MIB_RANGE: (u64, u64) = (16, 8192);

/// How rewind records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewindConfig {
    /// Frames per second ([`FPS_RANGE`], default 2).
    pub fps: f64,
    /// Seconds kept (2..=[`MAX_SECONDS`], default 30).
    pub seconds: u32,
    /// Most bytes of pixels held (default 512 MiB); the oldest frames go first.
    pub max_bytes: u64,
    /// A frame whose [`screenpilot_agent::capture::frame_difference`] from the one before is at
    /// most this counts as unchanged (0, the default: only byte-equal frames do).
    pub threshold: f64,
    /// What is blacked out before a frame is stored.
    pub blackout: Blackout,
}

impl Default for RewindConfig {
    fn default() -> Self {
        Self { fps: DEFAULT_FPS, seconds: DEFAULT_SECONDS, max_bytes: DEFAULT_MAX_MIB << 20, threshold: 0.0, blackout: Blackout::default() }
    }
}

impl RewindConfig {
    /// Checks every field; one message per problem.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DesktopError::InvalidArgument(m));
        if !(self.fps.is_finite() && (FPS_RANGE.0..=FPS_RANGE.1).contains(&self.fps)) {
            return bad(format!("rewind frames per second must be {} to {}, not {}", FPS_RANGE.0, FPS_RANGE.1, self.fps));
        }
        if !(2..=MAX_SECONDS).contains(&self.seconds) {
            return bad(format!("rewind length must be 2 to {MAX_SECONDS} seconds, not {}", self.seconds));
        }
        let (lo, hi) = (MIB_RANGE.0 << 20, MIB_RANGE.1 << 20);
        if !(lo..=hi).contains(&self.max_bytes) {
            return bad(format!("rewind memory must be {} to {} MiB, not {} bytes", MIB_RANGE.0, MIB_RANGE.1, self.max_bytes));
        }
        if !(self.threshold.is_finite() && (0.0..=0.5).contains(&self.threshold)) {
            return bad(format!("rewind change threshold must be 0 to 0.5, not {}", self.threshold));
        }
        self.blackout.validate()
    }

    /// Time steps the length holds (`seconds * fps`, at least 2).
    pub fn capacity_slots(&self) -> usize {
        ((f64::from(self.seconds) * self.fps).round() as usize).max(2)
    }
}

/// What the indicator shows.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RewindStatus {
    /// Recording now.
    pub recording: bool,
    /// Frames per second.
    pub fps: f64,
    /// Seconds of screen held.
    pub seconds: f64,
    /// Seconds the buffer can hold.
    pub capacity_seconds: f64,
    /// Distinct frames stored.
    pub frames: usize,
    /// Bytes of pixels stored.
    pub bytes: u64,
    /// The memory cap.
    pub max_bytes: u64,
    /// The last capture failure (recording goes on), if any.
    pub error: Option<String>,
}

/// The two frames "what changed" compares.
#[derive(Debug, Clone)]
pub struct Change {
    /// The newest frame when the previous rewind question was asked (or the oldest held).
    pub before: Screenshot,
    /// The newest frame now.
    pub after: Screenshot,
}

/// Rewind as a front end holds it: off until [`Rewind::start`], frames dropped on [`Rewind::stop`].
#[derive(Default)]
pub struct Rewind {
    recorder: Mutex<Option<Recorder>>,
    buffer: Mutex<Option<Arc<Mutex<RewindBuffer>>>>,
    /// The newest frame when a rewind question was last asked.
    asked: Mutex<Option<Screenshot>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Rewind {
    /// Rewind, off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts recording with `cfg` (validated) from `capture`, finding blacked-out windows with
    /// `windows`. Already recording: it starts over with the new settings.
    pub fn start(
        &self,
        cfg: RewindConfig,
        capture: Box<dyn screenpilot_agent::Capture + Send>,
        windows: Box<dyn WindowLocator>,
    ) -> Result<()> {
        cfg.validate()?;
        self.stop();
        let buffer = Arc::new(Mutex::new(RewindBuffer::new(cfg.clone())));
        let recorder = Recorder::start(cfg, Arc::clone(&buffer), capture, windows)?;
        *lock(&self.buffer) = Some(buffer);
        *lock(&self.recorder) = Some(recorder);
        Ok(())
    }

    /// Stops recording and drops every frame held (also the one "what changed" compares with).
    pub fn stop(&self) {
        let recorder = lock(&self.recorder).take();
        if let Some(r) = recorder {
            r.stop();
        }
        *lock(&self.buffer) = None;
        *lock(&self.asked) = None;
    }

    /// The settings it records with (None: off).
    pub fn running_config(&self) -> Option<RewindConfig> {
        lock(&self.buffer).as_ref().map(|b| lock(b).config().clone())
    }

    /// Whether it is recording.
    pub fn is_recording(&self) -> bool {
        lock(&self.recorder).is_some()
    }

    fn buffer(&self) -> Result<Arc<Mutex<RewindBuffer>>> {
        lock(&self.buffer).clone().ok_or_else(|| DesktopError::InvalidArgument("rewind is off: turn it on first".into()))
    }

    /// What the indicator shows.
    pub fn status(&self) -> RewindStatus {
        let Ok(buffer) = self.buffer() else { return RewindStatus::default() };
        let error = lock(&self.recorder).as_ref().and_then(|r| r.status().error);
        let b = lock(&buffer);
        RewindStatus {
            recording: true,
            fps: b.config().fps,
            seconds: b.seconds(),
            capacity_seconds: b.config().capacity_slots() as f64 / b.config().fps,
            frames: b.frames(),
            bytes: b.bytes(),
            max_bytes: b.config().max_bytes,
            error,
        }
    }

    /// The recorder's counters (tests, the CLI).
    pub fn recorder_status(&self) -> Option<RecorderStatus> {
        lock(&self.recorder).as_ref().map(Recorder::status)
    }

    /// The last `seconds` as a clip (the same `Arc` for the same span), marked as asked.
    pub fn clip(&self, seconds: f64) -> Result<ClipView> {
        let buffer = self.buffer()?;
        let view = lock(&buffer).clip(seconds)?;
        *lock(&self.asked) = Some(view.newest.clone());
        Ok(view)
    }

    /// "What changed": the newest frame at the previous rewind question (the oldest frame held
    /// when there was none) and the newest frame now; now becomes the frame asked about.
    pub fn change(&self) -> Result<Change> {
        let buffer = self.buffer()?;
        let (oldest, newest) = {
            let b = lock(&buffer);
            (b.oldest(), b.newest())
        };
        let after = newest.ok_or_else(|| DesktopError::InvalidArgument("rewind has no frame yet: wait a moment".into()))?;
        let mut asked = lock(&self.asked);
        let before = asked.clone().or(oldest).unwrap_or_else(|| after.clone());
        *asked = Some(after.clone());
        Ok(Change { before, after })
    }
}

impl Drop for Rewind {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
