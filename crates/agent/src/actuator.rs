//! Input primitives: the [`Actuator`] trait (one primitive event at a time), the
//! [`PointerReader`] trait, the [`StopFlag`], and a [`RecordingActuator`] fake that
//! records events and tracks the pointer. Backends (enigo) live in their own module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::coords::OsPoint;
use crate::error::{AgentError, Result};
use crate::keys::Key;
use crate::model_action::MouseButton;
use crate::screen_action::ScrollAxis;

/// Press, release, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Press {
    /// Press down and keep pressed.
    Down,
    /// Release.
    Up,
    /// Press and release.
    Click,
}

/// One primitive input event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum InputEvent {
    /// Move the pointer to an absolute OS point.
    MoveTo(OsPoint),
    /// A mouse button event.
    Button(MouseButton, Press),
    /// A key event.
    Key(Key, Press),
    /// Type a piece of text.
    Text(String),
    /// Wheel notches; positive is up (vertical) / right (horizontal).
    Scroll(ScrollAxis, i32),
}

/// Sends primitive input events to the OS (or a fake).
pub trait Actuator {
    /// Performs one event.
    fn perform(&mut self, event: &InputEvent) -> Result<()>;
}

/// Stands in when no input backend could be opened (no display): every event fails with
/// the reason.
#[derive(Debug, Clone)]
pub struct NoInput(pub String);

impl Actuator for NoInput {
    fn perform(&mut self, _: &InputEvent) -> Result<()> {
        Err(crate::error::AgentError::Input(self.0.clone()))
    }
}

/// Reads the pointer position back (calibration, tests).
pub trait PointerReader {
    /// Current pointer position in OS input coordinates.
    fn pointer_position(&mut self) -> Result<OsPoint>;
}

/// Shared stop flag. Raise it from any thread; the agent checks it between every
/// primitive event and every slice of a wait, and stops within [`WAIT_SLICE`].
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

/// Longest uninterrupted sleep anywhere in the agent.
pub const WAIT_SLICE: Duration = Duration::from_millis(10);

impl StopFlag {
    /// A new, lowered flag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps an existing flag (e.g. one a UI button sets).
    pub fn from_arc(flag: Arc<AtomicBool>) -> Self {
        Self(flag)
    }

    /// The shared atomic.
    pub fn arc(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }

    /// Raises the flag.
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the flag is raised.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Stopped)` if raised.
    pub fn check(&self) -> Result<()> {
        if self.is_raised() {
            Err(AgentError::Stopped)
        } else {
            Ok(())
        }
    }

    /// Sleeps `d` in slices of at most [`WAIT_SLICE`], returning `Err(Stopped)` as soon as raised.
    pub fn sleep(&self, d: Duration) -> Result<()> {
        let end = Instant::now() + d;
        loop {
            self.check()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(WAIT_SLICE));
        }
    }
}

/// A fake actuator: records every event and tracks where the pointer would be.
/// Clones share the same record, so a test can keep one and give the other away.
#[derive(Debug, Clone, Default)]
pub struct RecordingActuator {
    state: Arc<Mutex<Recorded>>,
}

#[derive(Debug, Default)]
struct Recorded {
    events: Vec<InputEvent>,
    pointer: Option<OsPoint>,
}

impl RecordingActuator {
    /// A fake with the pointer at `start`.
    pub fn with_pointer(start: OsPoint) -> Self {
        let me = Self::default();
        if let Ok(mut s) = me.state.lock() {
            s.pointer = Some(start);
        }
        me
    }

    /// Everything performed so far.
    pub fn events(&self) -> Vec<InputEvent> {
        self.state.lock().map(|s| s.events.clone()).unwrap_or_default()
    }
}

impl Actuator for RecordingActuator {
    fn perform(&mut self, event: &InputEvent) -> Result<()> {
        let mut s = self.state.lock().map_err(|_| AgentError::Input("recorder poisoned".into()))?;
        if let InputEvent::MoveTo(p) = event {
            s.pointer = Some(*p);
        }
        s.events.push(event.clone());
        Ok(())
    }
}

impl PointerReader for RecordingActuator {
    fn pointer_position(&mut self) -> Result<OsPoint> {
        let s = self.state.lock().map_err(|_| AgentError::Pointer("recorder poisoned".into()))?;
        s.pointer.ok_or_else(|| AgentError::Pointer("pointer never moved".into()))
    }
}
