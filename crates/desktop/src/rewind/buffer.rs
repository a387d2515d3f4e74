//! [`RewindBuffer`]: the recent screen in memory, one slot per time step (`1 / fps` seconds).
//! A frame equal to the one before it (byte-equal, or within the configured pixel difference)
//! is stored once and referenced again by the following slots (a run), so a clip still has
//! uniform time steps; a missed time step repeats the frame before it. Memory is counted in
//! bytes of stored pixels and never exceeds the cap: the oldest runs go first, and a frame too
//! large for half the cap is scaled down before it is stored (so two distinct frames always
//! fit, whatever the screen size). A frame of another size (the resolution changed) starts the
//! buffer over, since a clip has one frame size.
//!
//! Nothing here touches the disk; [`super::save`] writes a clip when the user asks.

use std::collections::VecDeque;
use std::sync::Arc;

use image::{imageops::FilterType, DynamicImage, RgbImage};

use screenpilot_agent::capture::frame_difference;
use screenpilot_agent::{CaptureGeometry, Screenshot};
use screenpilot_engine::Clip;

use super::RewindConfig;
use crate::error::{DesktopError, Result};

/// Most frames in one clip sent to the model; longer spans are subsampled evenly (the
/// timestamps stay true: indices keep their place in time).
pub const MAX_CLIP_FRAMES: usize = 128;

/// One stored frame and the number of consecutive slots showing it.
#[derive(Debug, Clone)]
struct Run {
    image: Arc<DynamicImage>,
    geometry: CaptureGeometry,
    slots: usize,
}

/// What [`RewindBuffer::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Stored as a new frame.
    Stored,
    /// Equal to the frame before it: referenced again, no memory used.
    Repeated,
    /// Its size differs from the stored frames': the buffer started over with it.
    Restarted,
    /// Its time step is already filled (a late frame): ignored.
    Late,
}

/// A clip for the model, and the frame it ends on (the conversation's capture).
#[derive(Debug, Clone)]
pub struct ClipView {
    /// Frames `0..n` of the span, at the buffer's fps (subsampled to [`MAX_CLIP_FRAMES`]).
    pub clip: Arc<Clip>,
    /// The newest frame of the span with its geometry.
    pub newest: Screenshot,
    /// Seconds the clip spans.
    pub seconds: f64,
}

/// The ring of recent frames. Not shared by itself: [`super::Rewind`] keeps it behind a lock.
#[derive(Debug)]
pub struct RewindBuffer {
    cfg: RewindConfig,
    runs: VecDeque<Run>,
    bytes: u64,
    slots: usize,
    /// The time step the next slot stands for (None: empty).
    next_tick: Option<u64>,
    /// Bumped whenever the buffer starts over, so clips of different contents get different keys.
    generation: u64,
    /// Slots dropped from the front since the last restart (the absolute index of slot 0).
    dropped: u64,
    /// The last clip handed out and its key: the same span gives the same `Arc` (the engine
    /// remembers the preprocessing of a clip still held, so a follow-up is cheap).
    last_clip: Option<((u64, u64, usize), ClipView)>,
}

impl RewindBuffer {
    /// An empty buffer with `cfg` (validated by the caller).
    pub fn new(cfg: RewindConfig) -> Self {
        Self { cfg, runs: VecDeque::new(), bytes: 0, slots: 0, next_tick: None, generation: 0, dropped: 0, last_clip: None }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &RewindConfig {
        &self.cfg
    }

    /// Time steps held (each `1 / fps` seconds).
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Distinct frames stored.
    pub fn frames(&self) -> usize {
        self.runs.len()
    }

    /// Bytes of pixels stored (at most the configured cap).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Seconds of screen held.
    pub fn seconds(&self) -> f64 {
        self.slots as f64 / self.cfg.fps
    }

    /// The newest frame and its geometry.
    pub fn newest(&self) -> Option<Screenshot> {
        self.runs.back().map(screenshot_of)
    }

    /// The oldest frame still held.
    pub fn oldest(&self) -> Option<Screenshot> {
        self.runs.front().map(screenshot_of)
    }

    /// Drops every frame (memory is freed once no clip holds them).
    pub fn clear(&mut self) {
        self.runs.clear();
        self.bytes = 0;
        self.slots = 0;
        self.next_tick = None;
        self.generation += 1;
        self.dropped = 0;
        self.last_clip = None;
    }

    /// Adds the frame captured at time step `tick` (`tick / fps` seconds after recording began).
    /// Steps skipped since the last frame repeat that frame.
    pub fn push(&mut self, tick: u64, shot: Screenshot) -> Pushed {
        if self.next_tick.is_some_and(|next| tick < next) {
            return Pushed::Late;
        }
        let (image, geometry) = self.fit(shot);
        let mut outcome = Pushed::Stored;
        if self.runs.back().is_some_and(|last| last.image.width() != image.width() || last.image.height() != image.height()) {
            self.clear();
            outcome = Pushed::Restarted;
        }
        if let (Some(next), Some(last)) = (self.next_tick, self.runs.back_mut()) {
            // Missed steps show the frame before them; at most a full buffer of them counts.
            let gap = (tick - next).min(self.cfg.capacity_slots() as u64) as usize;
            last.slots += gap;
            self.slots += gap;
        }
        let same = self.runs.back().is_some_and(|last| same_frame(&last.image, &image, self.cfg.threshold));
        match self.runs.back_mut() {
            Some(last) if same => {
                last.slots += 1;
                outcome = Pushed::Repeated;
            }
            _ => {
                self.bytes += image_bytes(&image);
                self.runs.push_back(Run { image: Arc::new(DynamicImage::ImageRgb8(image)), geometry, slots: 1 });
            }
        }
        self.slots += 1;
        self.next_tick = Some(tick + 1);
        self.evict();
        outcome
    }

    /// The frame as stored: scaled down when it alone would take more than half the cap.
    fn fit(&self, shot: Screenshot) -> (RgbImage, CaptureGeometry) {
        let budget = self.cfg.max_bytes / 2;
        let bytes = image_bytes(&shot.image);
        if bytes <= budget {
            let image = Arc::try_unwrap(shot.image).unwrap_or_else(|shared| (*shared).clone());
            return (image, shot.geometry);
        }
        let scale = (budget as f64 / bytes as f64).sqrt();
        let (w, h) = shot.image.dimensions();
        let (nw, nh) = (((f64::from(w) * scale).floor() as u32).max(1), ((f64::from(h) * scale).floor() as u32).max(1));
        let image = image::imageops::resize(shot.image.as_ref(), nw, nh, FilterType::Triangle);
        let g = &shot.geometry;
        let geometry = CaptureGeometry::region(g.monitor.clone(), g.region, nw, nh).unwrap_or_else(|_| g.clone());
        (image, geometry)
    }

    /// Oldest slots go until the length holds, then oldest runs until the memory cap holds.
    fn evict(&mut self) {
        let capacity = self.cfg.capacity_slots();
        while self.slots > capacity {
            let Some(first) = self.runs.front_mut() else { break };
            let drop = (self.slots - capacity).min(first.slots);
            first.slots -= drop;
            self.slots -= drop;
            self.dropped += drop as u64;
            if first.slots == 0 {
                self.pop_front();
            }
        }
        while self.bytes > self.cfg.max_bytes && !self.runs.is_empty() {
            if let Some(first) = self.runs.front() {
                let n = first.slots;
                self.slots -= n;
                self.dropped += n as u64;
            }
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(run) = self.runs.pop_front() {
            self.bytes -= image_bytes_dyn(&run.image);
        }
    }

    /// The last `seconds` as a clip (all that is held when it is less): at least 2 time steps.
    /// Asking again for the same span, with no new frame in between, gives the same `Arc`.
    pub fn clip(&mut self, seconds: f64) -> Result<ClipView> {
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(DesktopError::InvalidArgument(format!("seconds must be a positive number, not {seconds}")));
        }
        let wanted = ((seconds * self.cfg.fps).round() as usize).max(2);
        let n = wanted.min(self.slots);
        if n < 2 {
            return Err(DesktopError::InvalidArgument(format!(
                "rewind holds {} frame(s) so far; a clip needs 2 (wait {:.1} s)",
                self.slots,
                2.0 / self.cfg.fps
            )));
        }
        let key = (self.generation, self.dropped + (self.slots - n) as u64, n);
        if let Some((k, view)) = &self.last_clip {
            if *k == key {
                return Ok(view.clone());
            }
        }
        let slots = self.span(n);
        let step = n.div_ceil(MAX_CLIP_FRAMES);
        // Sample from the newest backwards, so the newest frame is always in the clip.
        let mut picked: Vec<usize> = (0..n).rev().step_by(step).collect();
        picked.reverse();
        let frames = picked.iter().map(|&i| Arc::clone(&slots[i].image)).collect();
        let newest = screenshot_of(slots[n - 1]);
        let clip = Arc::new(Clip { frames, indices: picked, fps: Some(self.cfg.fps) });
        let view = ClipView { clip, newest, seconds: n as f64 / self.cfg.fps };
        self.last_clip = Some((key, view.clone()));
        Ok(view)
    }

    /// The run of each of the last `n` slots, oldest first.
    fn span(&self, n: usize) -> Vec<&Run> {
        let mut out: Vec<&Run> = Vec::with_capacity(n);
        for run in self.runs.iter().rev() {
            for _ in 0..run.slots {
                if out.len() == n {
                    break;
                }
                out.push(run);
            }
        }
        out.reverse();
        out
    }
}

fn screenshot_of(run: &Run) -> Screenshot {
    let image = match run.image.as_ref() {
        DynamicImage::ImageRgb8(rgb) => rgb.clone(),
        other => other.to_rgb8(),
    };
    Screenshot { image: Arc::new(image), geometry: run.geometry.clone() }
}

fn image_bytes(img: &RgbImage) -> u64 {
    img.as_raw().len() as u64
}

fn image_bytes_dyn(img: &DynamicImage) -> u64 {
    img.as_bytes().len() as u64
}

/// Byte-equal frames are the same; with `threshold > 0`, so are frames whose
/// [`frame_difference`] is at most `threshold`.
fn same_frame(stored: &DynamicImage, new: &RgbImage, threshold: f64) -> bool {
    let Some(stored) = stored.as_rgb8() else { return false };
    if stored.dimensions() != new.dimensions() {
        return false;
    }
    stored.as_raw() == new.as_raw() || (threshold > 0.0 && frame_difference(stored, new) <= threshold)
}

#[cfg(test)]
#[path = "buffer_tests.rs"]
mod tests;
