//! The pieces a task's agent loop runs with in the app, each wrapping the agent's own:
//!
//! - [`Visibility`]: ScreenPilot's window is hidden before every capture and every input
//!   event (so the model never sees it and no click lands on it) and shown while the model
//!   thinks and while a proposal waits for the user; after the task it is shown for good.
//! - [`Watched`]: a [`Capture`] that hides the window first and remembers the newest frame
//!   (the screenshot the model is asked about, for thumbnails and proposals).
//! - [`Guarded`]: an [`Actuator`] that hides the window first and sends nothing once the stop
//!   flag is up; the stop path takes the same lock, so no event starts after a stop returns.
//! - [`StepBrain`]: a [`Brain`] that numbers the steps and reports them (thumbnail, the
//!   model's text).
//! - [`UiConfirmer`]: a [`Confirmer`] that shows each proposal and waits for the UI's
//!   decision on its id, or approves it itself during "auto for the next N steps" (except the
//!   actions that always ask).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use screenpilot_agent::policy::ConfirmRequest;
use screenpilot_agent::{
    AgentError, Actuator, Brain, BrainError, BrainRequest, Capture, Confirmer, Decision, InputEvent, Screenshot, StopFlag,
};

use crate::engine_assistant::POLL;
use crate::error::Result;
use crate::task_events::{proposal, thumbnail, Emitter, TaskEvent};
use crate::task_runner::lock;

/// ScreenPilot's own window, as the task sees it.
pub trait AppWindow: Send + Sync {
    /// Hides the window; returns once the windowing system has taken the request.
    fn hide(&self) -> Result<()>;
    /// Shows the window again (and gives it the focus).
    fn show(&self) -> Result<()>;
}

/// No window (tests, headless use).
#[derive(Debug, Default)]
pub struct NoWindow;

impl AppWindow for NoWindow {
    fn hide(&self) -> Result<()> {
        Ok(())
    }
    fn show(&self) -> Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct VisState {
    hidden: bool,
    closed: bool,
}

/// Hides and shows the window for one task.
pub struct Visibility {
    window: Arc<dyn AppWindow>,
    state: Mutex<VisState>,
    /// How long after hiding before the screen is trusted not to show the window any more.
    settle: Duration,
}

impl Visibility {
    pub fn new(window: Arc<dyn AppWindow>, settle: Duration) -> Self {
        Self { window, state: Mutex::new(VisState::default()), settle }
    }

    /// Hides the window unless hidden; fails (so nothing is captured or sent) when it cannot,
    /// or when the task is over.
    pub fn hide(&self, stop: &StopFlag) -> screenpilot_agent::Result<()> {
        {
            let mut s = lock(&self.state);
            if s.closed {
                return Err(AgentError::Stopped);
            }
            if s.hidden {
                return Ok(());
            }
            self.window.hide().map_err(|e| AgentError::Capture(format!("cannot hide ScreenPilot's window: {e}")))?;
            s.hidden = true;
        }
        stop.sleep(self.settle)
    }

    /// Shows the window if hidden (failures only leave it hidden: the task goes on).
    pub fn show(&self) {
        let mut s = lock(&self.state);
        if s.hidden && !s.closed && self.window.show().is_ok() {
            s.hidden = false;
        }
    }

    /// The task is over: shows the window and hides it no more.
    pub fn close(&self) {
        let mut s = lock(&self.state);
        s.closed = true;
        if s.hidden {
            let _ = self.window.show();
            s.hidden = false;
        }
    }

    /// Whether the window is hidden now.
    pub fn is_hidden(&self) -> bool {
        lock(&self.state).hidden
    }
}

/// What the pieces of one task share.
#[derive(Default)]
pub struct StepState {
    /// The newest frame captured: the one the model is (or was last) asked about.
    pub shot: Mutex<Option<Screenshot>>,
    /// The current step (model turn), from 1.
    pub step: AtomicU32,
}

/// A capture that hides the window first (when `hides`) and remembers the frame.
pub struct Watched {
    pub inner: Box<dyn Capture + Send>,
    pub hides: bool,
    pub vis: Arc<Visibility>,
    pub stop: StopFlag,
    pub state: Arc<StepState>,
}

impl Capture for Watched {
    fn capture(&mut self) -> screenpilot_agent::Result<Screenshot> {
        if self.hides {
            self.vis.hide(&self.stop)?;
        }
        let shot = self.inner.capture()?;
        *lock(&self.state.shot) = Some(shot.clone());
        Ok(shot)
    }
}

/// A screen that is one fixed screenshot (a one-step task about an earlier capture).
pub struct FixedScreen(pub Screenshot);

impl Capture for FixedScreen {
    fn capture(&mut self) -> screenpilot_agent::Result<Screenshot> {
        Ok(self.0.clone())
    }
}

/// An actuator that hides the window first and refuses every event once stopped.
pub struct Guarded {
    pub inner: Arc<Mutex<Box<dyn Actuator + Send>>>,
    pub vis: Arc<Visibility>,
    pub stop: StopFlag,
}

impl Actuator for Guarded {
    fn perform(&mut self, event: &InputEvent) -> screenpilot_agent::Result<()> {
        self.stop.check()?;
        self.vis.hide(&self.stop)?;
        let mut actuator = lock(&self.inner);
        // Checked under the lock the stop path takes after raising the flag.
        self.stop.check()?;
        actuator.perform(event)
    }
}

/// Numbers and reports the steps around the model.
pub struct StepBrain {
    pub inner: Box<dyn Brain + Send>,
    pub task: u64,
    pub vis: Arc<Visibility>,
    pub state: Arc<StepState>,
    pub emit: Arc<Emitter>,
}

impl Brain for StepBrain {
    fn respond(&mut self, request: &BrainRequest) -> std::result::Result<String, BrainError> {
        let step = self.state.step.fetch_add(1, Ordering::SeqCst) + 1;
        let shot = lock(&self.state.shot).clone();
        if let Some(shot) = shot {
            let (image_width, image_height) = shot.image.dimensions();
            self.emit.emit(TaskEvent::Step { task: self.task, step, thumbnail: thumbnail(&shot.image), image_width, image_height });
        }
        // The user watches the model think (and can press Stop).
        self.vis.show();
        let text = self.inner.respond(request)?;
        self.emit.emit(TaskEvent::Said { task: self.task, step, text: text.clone() });
        Ok(text)
    }
}

/// The UI's answer to one proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UiDecision {
    /// Run it.
    Accept,
    /// Do not run it (the task ends).
    Reject,
    /// Run it, and approve the next proposals without asking until this many actions (this
    /// one included) have run; actions that always ask are still asked.
    Auto(u32),
}

/// Asks the UI about each proposal.
pub struct UiConfirmer {
    pub task: u64,
    pub emit: Arc<Emitter>,
    pub state: Arc<StepState>,
    pub vis: Arc<Visibility>,
    pub stop: StopFlag,
    pub decisions: Receiver<(u64, UiDecision)>,
    /// The proposal waiting for a decision (what `decide` checks ids against).
    pub pending: Arc<Mutex<Option<u64>>>,
    pub next_id: Arc<AtomicU64>,
    /// Proposals the auto mode still approves.
    pub auto_left: u32,
    /// Least time between two automatically approved actions.
    pub auto_interval: Duration,
    pub last_auto: Option<Instant>,
}

impl UiConfirmer {
    fn decided(&self, id: u64, decision: &str) {
        self.emit.emit(TaskEvent::Decided { task: self.task, proposal: id, decision: decision.into() });
    }

    /// Waits for the UI's decision on `id`; None when the stop flag rose first (or the
    /// runner is gone).
    fn wait(&self, id: u64) -> Option<UiDecision> {
        loop {
            if self.stop.is_raised() {
                return None;
            }
            match self.decisions.recv_timeout(POLL) {
                Ok((pid, d)) if pid == id => return Some(d),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

impl Confirmer for UiConfirmer {
    fn confirm(&mut self, req: &ConfirmRequest<'_>) -> Decision {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        let step = self.state.step.load(Ordering::SeqCst);
        let Some(shot) = lock(&self.state.shot).clone() else { return Decision::Reject };
        if self.auto_left > 0 && req.always_asks().is_none() {
            self.auto_left -= 1;
            self.emit.emit(TaskEvent::Proposal(proposal(self.task, step, id, req, &shot, true)));
            self.decided(id, "auto");
            if let Some(last) = self.last_auto {
                // A stop during the pause: the gate's stop check turns the approval into `stopped`.
                let _ = self.stop.sleep(self.auto_interval.saturating_sub(last.elapsed()));
            }
            self.last_auto = Some(Instant::now());
            return Decision::Approve;
        }
        *lock(&self.pending) = Some(id);
        self.vis.show();
        self.emit.emit(TaskEvent::Proposal(proposal(self.task, step, id, req, &shot, false)));
        let answer = self.wait(id);
        *lock(&self.pending) = None;
        match answer {
            // Stopped while waiting: "approve" hands the action to the gate, whose stop check
            // (right after asking) records it as `stopped` and ends the task; the executor
            // and `Guarded` refuse every input event once the flag is up as well.
            None => Decision::Approve,
            Some(UiDecision::Reject) => {
                self.decided(id, "rejected");
                Decision::Reject
            }
            Some(UiDecision::Accept) => {
                self.decided(id, "accepted");
                Decision::Approve
            }
            Some(UiDecision::Auto(n)) => {
                self.auto_left = n.saturating_sub(1);
                self.last_auto = Some(Instant::now());
                self.decided(id, "accepted");
                Decision::Approve
            }
        }
    }
}
