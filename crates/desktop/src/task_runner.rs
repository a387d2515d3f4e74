//! Task mode: [`TaskRunner`] runs the agent loop (`screenpilot_agent::Agent::run`, the loop
//! of `screenpilot do`) on a worker thread, one task at a time, with the app's pieces
//! ([`crate::task_parts`]): every proposed action goes to the UI as a [`TaskEvent::Proposal`]
//! and waits for [`TaskRunner::decide`] on its id (accept, reject, or "auto for the next N
//! steps"); ScreenPilot's window is hidden around every capture and every input event.
//!
//! [`TaskRunner::stop`] (the Stop button, the global stop hotkey) raises the task's stop flag,
//! waits for an input event in flight, and delivers the outcome `stopped` within
//! [`STOP_GRACE`] plus a few milliseconds: nothing of the task is delivered or sent after it,
//! even when a remote model's answer is still on its way (that worker ends on its own).
//!
//! Every task writes its decisions to the app's one audit log (hash-chained; the runner owns
//! it, so tasks never interleave their records) and its outcome carries those records as a
//! readable table. The one-shot "Act" on an answer is a task of one step on the same path
//! ([`TaskScreen::Fixed`] and [`TaskModel::Brain`] with that answer).
//!
//! With [`TaskOptions::tasks_dir`] (the app always sets it) every task is also recorded into
//! a new folder there ([`crate::task_history`]); a failed recording write ends the task with
//! the error as its outcome before any action of that step runs. [`TaskRunner::calibrate`]
//! runs the pointer self-test with the window hidden, only when actions are on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use screenpilot_agent::audit::AuditLog;
use screenpilot_agent::calibrate::MonitorReport;
use screenpilot_agent::record::Recorder;
use screenpilot_agent::model_action::TerminateStatus;
use screenpilot_agent::policy::Mode;
use screenpilot_agent::{
    Actuator, Agent, AgentConfig, AgentError, Brain, Capture, CaptureGeometry, Outcome, Policy, PointerReader, Screenshot,
    SettleConfig, StopFlag,
};
use screenpilot_engine::backend::Backend;
use screenpilot_engine::EngineHandle;

use crate::audit_table::{line_count, read_rows, AuditRow};
use crate::engine_assistant::StoppableLocal;
use crate::error::{DesktopError, Result};
use crate::task::BackendBrain;
use crate::task_events::{Emitter, EventSink, TaskEvent, TaskOutcome};
use crate::task_history::{new_recorder, ReplayCheck, TaskSummary};
use crate::task_parts::{AppWindow, FixedScreen, Guarded, StepBrain, StepState, UiConfirmer, UiDecision, Visibility, Watched};

/// Most characters in a task.
pub const MAX_TASK_CHARS: usize = 4000;
/// Most steps "auto for the next N steps" may cover.
pub const MAX_AUTO_STEPS: u32 = 50;
/// How long [`TaskRunner::stop`] lets the worker end with its own outcome (its audit
/// complete) before delivering `stopped` itself.
pub const STOP_GRACE: Duration = Duration::from_millis(60);
/// Rows of the audit log a table shows at most.
pub const AUDIT_ROWS: usize = 500;

/// Locks, ignoring poisoning (the data stays usable).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a task's answers come from.
pub enum TaskModel {
    /// The loaded model, through its engine handle (the one the app's questions use).
    Local(EngineHandle),
    /// Any backend (an OpenAI-compatible server).
    Backend(Arc<dyn Backend>),
    /// A ready brain (the one-step task's answer; tests).
    Brain(Box<dyn Brain + Send>),
}

/// What a task looks at.
pub enum TaskScreen {
    /// Live captures (the window is hidden for each).
    Live(Box<dyn Capture + Send>),
    /// One screenshot taken earlier (a one-step task about an answer).
    Fixed(Screenshot),
}

/// One task to run.
pub struct TaskSpec {
    /// What the user asked for.
    pub task: String,
    pub model: TaskModel,
    pub screen: TaskScreen,
    /// A task of one step: the model's answer is given, one turn runs, and having run its
    /// action is the outcome `done`.
    pub one_step: bool,
}

/// Knobs of every task.
#[derive(Debug, Clone)]
pub struct TaskOptions {
    /// Most model turns (default 30).
    pub max_turns: u32,
    /// Wait after hiding the window before capturing or acting (default 150 ms: a compositor
    /// may fade it out).
    pub hide_settle: Duration,
    /// Least time between two automatically approved actions (default 500 ms).
    pub auto_interval: Duration,
    /// When the screen counts as settled after an action.
    pub settle: SettleConfig,
    /// Tokens per model answer (default 512).
    pub max_tokens: usize,
    /// Where each task is recorded, in a new folder of its own (the app: `<app data>/tasks`);
    /// None: tasks are not recorded.
    pub tasks_dir: Option<PathBuf>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            max_turns: 30,
            hide_settle: Duration::from_millis(150),
            auto_interval: Duration::from_millis(500),
            settle: SettleConfig::default(),
            max_tokens: 512,
            tasks_dir: None,
        }
    }
}

/// The task in progress, as the runner reaches it.
struct Running {
    id: u64,
    stop: StopFlag,
    decisions: Sender<(u64, UiDecision)>,
    pending: Arc<Mutex<Option<u64>>>,
    emit: Arc<Emitter>,
    vis: Arc<Visibility>,
    /// The audit log's line count when the task took it (None: not yet).
    audit_from: Arc<Mutex<Option<usize>>>,
    done: Receiver<()>,
}

/// Runs tasks, one at a time.
pub struct TaskRunner {
    actuator: Arc<Mutex<Box<dyn Actuator + Send>>>,
    audit: Arc<Mutex<AuditLog>>,
    audit_path: PathBuf,
    window: Arc<dyn AppWindow>,
    sink: EventSink,
    actions_enabled: AtomicBool,
    next_task: AtomicU64,
    next_proposal: Arc<AtomicU64>,
    current: Arc<Mutex<Option<Running>>>,
    options: TaskOptions,
}

impl TaskRunner {
    /// A runner with actions off, appending to the audit log at `audit_path`, hiding `window`
    /// and delivering events to `sink`.
    pub fn new(
        actuator: Box<dyn Actuator + Send>,
        audit_path: &Path,
        window: Arc<dyn AppWindow>,
        sink: EventSink,
        options: TaskOptions,
    ) -> Result<Self> {
        if let Some(dir) = audit_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| DesktopError::io(dir, e))?;
        }
        let audit = AuditLog::open(audit_path).map_err(AgentError::from)?;
        Ok(Self {
            actuator: Arc::new(Mutex::new(actuator)),
            audit: Arc::new(Mutex::new(audit)),
            audit_path: audit_path.to_path_buf(),
            window,
            sink,
            actions_enabled: AtomicBool::new(false),
            next_task: AtomicU64::new(0),
            next_proposal: Arc::new(AtomicU64::new(0)),
            current: Arc::new(Mutex::new(None)),
            options,
        })
    }

    /// Turns actions on or off (off at start); applies to tasks started afterwards.
    pub fn set_actions_enabled(&self, on: bool) {
        self.actions_enabled.store(on, Ordering::SeqCst);
    }

    pub fn actions_enabled(&self) -> bool {
        self.actions_enabled.load(Ordering::SeqCst)
    }

    /// The audit log's file.
    pub fn audit_path(&self) -> &Path {
        &self.audit_path
    }

    /// The last `limit` records of the whole audit log, readable.
    pub fn audit_rows(&self, limit: usize) -> Result<Vec<AuditRow>> {
        read_rows(&self.audit_path, 0, limit)
    }

    /// The recorded tasks, newest first (none when tasks are not recorded).
    pub fn history(&self) -> Result<Vec<TaskSummary>> {
        self.options.tasks_dir.as_deref().map_or_else(|| Ok(Vec::new()), crate::task_history::history)
    }

    /// Replays recorded task `id` (a folder name under the tasks folder; checked) without input.
    pub fn replay_check(&self, id: &str) -> Result<ReplayCheck> {
        let dir = self.options.tasks_dir.as_deref().ok_or_else(|| DesktopError::InvalidArgument("tasks are not recorded".into()))?;
        crate::task_history::replay_check(dir, id)
    }

    /// The calibration self-test ([`screenpilot_agent::calibrate::calibrate`]) on each of
    /// `monitors` with the task actuator (the pointer is moved, nothing is clicked) and
    /// `reader`, ScreenPilot's window hidden meanwhile. Refused while actions are off (moving
    /// the pointer needs the user's opt-in) or while a task runs; no task starts meanwhile.
    pub fn calibrate(&self, monitors: &[CaptureGeometry], reader: &mut dyn PointerReader) -> Result<Vec<MonitorReport>> {
        if !self.actions_enabled() {
            return Err(DesktopError::InvalidArgument("calibration moves the pointer: tick \"Allow actions\" first".into()));
        }
        let current = lock(&self.current);
        if current.is_some() {
            return Err(DesktopError::InvalidArgument("a task is running: stop it first".into()));
        }
        let mut actuator = lock(&self.actuator);
        let vis = Visibility::new(Arc::clone(&self.window), self.options.hide_settle);
        let stop = StopFlag::new();
        let result = vis.hide(&stop).and_then(|()| screenpilot_agent::calibrate::calibrate(&mut **actuator, reader, monitors, &stop));
        vis.close();
        drop(current);
        Ok(result?)
    }

    /// The id of the task in progress.
    pub fn current(&self) -> Option<u64> {
        lock(&self.current).as_ref().map(|r| r.id)
    }

    /// Starts `spec` on a worker thread and returns its id; refused while another runs.
    pub fn start(&self, spec: TaskSpec) -> Result<u64> {
        let text = spec.task.trim().to_string();
        if text.is_empty() || text.chars().count() > MAX_TASK_CHARS {
            return Err(DesktopError::InvalidArgument(format!("a task must have 1..={MAX_TASK_CHARS} characters")));
        }
        let mut current = lock(&self.current);
        if current.is_some() {
            return Err(DesktopError::InvalidArgument("a task is already running: stop it first".into()));
        }
        let id = self.next_task.fetch_add(1, Ordering::SeqCst) + 1;
        let stop = StopFlag::new();
        let (decisions_tx, decisions_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let emit = Arc::new(Emitter::new(Arc::clone(&self.sink)));
        let vis = Arc::new(Visibility::new(Arc::clone(&self.window), self.options.hide_settle));
        let pending = Arc::new(Mutex::new(None));
        let audit_from = Arc::new(Mutex::new(None));
        let worker = Worker {
            id,
            task: text,
            spec_model: spec.model,
            spec_screen: spec.screen,
            one_step: spec.one_step,
            stop: stop.clone(),
            emit: Arc::clone(&emit),
            vis: Arc::clone(&vis),
            state: Arc::new(StepState::default()),
            confirmer_inbox: decisions_rx,
            pending: Arc::clone(&pending),
            next_proposal: Arc::clone(&self.next_proposal),
            actuator: Arc::clone(&self.actuator),
            audit: Arc::clone(&self.audit),
            audit_path: self.audit_path.clone(),
            audit_from: Arc::clone(&audit_from),
            actions_enabled: self.actions_enabled(),
            options: self.options.clone(),
            current: Arc::clone(&self.current),
            done: done_tx,
        };
        std::thread::Builder::new()
            .name(format!("screenpilot-task-{id}"))
            .spawn(move || worker.run())
            .map_err(|e| DesktopError::Internal(format!("cannot start the task's thread: {e}")))?;
        *current = Some(Running { id, stop, decisions: decisions_tx, pending, emit, vis, audit_from, done: done_rx });
        Ok(id)
    }

    /// The UI's decision on proposal `proposal` of the running task.
    pub fn decide(&self, proposal: u64, decision: UiDecision) -> Result<()> {
        if let UiDecision::Auto(n) = decision {
            if n == 0 || n > MAX_AUTO_STEPS {
                return Err(DesktopError::InvalidArgument(format!("auto covers 1..={MAX_AUTO_STEPS} steps, not {n}")));
            }
        }
        let current = lock(&self.current);
        let running = current.as_ref().ok_or_else(|| DesktopError::InvalidArgument("no task is running".into()))?;
        if *lock(&running.pending) != Some(proposal) {
            return Err(DesktopError::InvalidArgument(format!("proposal {proposal} is not waiting for a decision")));
        }
        running.decisions.send((proposal, decision)).map_err(|_| DesktopError::InvalidArgument("the task has ended".into()))
    }

    /// Stops the running task (see the module doc); returns its id, None when none ran.
    pub fn stop(&self) -> Option<u64> {
        let running = lock(&self.current).take()?;
        running.stop.raise();
        // An input event in flight finishes; none starts after this (Guarded checks the flag
        // under this lock).
        drop(lock(&self.actuator));
        if running.done.recv_timeout(STOP_GRACE).is_err() {
            let audit = lock(&running.audit_from)
                .map(|from| read_rows(&self.audit_path, from, AUDIT_ROWS).unwrap_or_default())
                .unwrap_or_default();
            running.emit.end(stopped(running.id, audit));
        }
        running.vis.close();
        Some(running.id)
    }
}

fn stopped(task: u64, audit: Vec<AuditRow>) -> TaskOutcome {
    TaskOutcome { task, status: "stopped".into(), message: "stopped".into(), answer: None, audit }
}

/// One task on its thread.
struct Worker {
    id: u64,
    task: String,
    spec_model: TaskModel,
    spec_screen: TaskScreen,
    one_step: bool,
    stop: StopFlag,
    emit: Arc<Emitter>,
    vis: Arc<Visibility>,
    state: Arc<StepState>,
    confirmer_inbox: Receiver<(u64, UiDecision)>,
    pending: Arc<Mutex<Option<u64>>>,
    next_proposal: Arc<AtomicU64>,
    actuator: Arc<Mutex<Box<dyn Actuator + Send>>>,
    audit: Arc<Mutex<AuditLog>>,
    audit_path: PathBuf,
    audit_from: Arc<Mutex<Option<usize>>>,
    actions_enabled: bool,
    options: TaskOptions,
    current: Arc<Mutex<Option<Running>>>,
    done: mpsc::SyncSender<()>,
}

impl Worker {
    fn run(self) {
        // Waits while an earlier (stopped) task's worker still winds down.
        let audit_log = Arc::clone(&self.audit);
        let mut audit = lock(&audit_log);
        let from = line_count(&self.audit_path);
        *lock(&self.audit_from) = Some(from);
        let (id, one_step, stop) = (self.id, self.one_step, self.stop.clone());
        let (emit, vis, current, done, audit_path) =
            (Arc::clone(&self.emit), Arc::clone(&self.vis), Arc::clone(&self.current), self.done.clone(), self.audit_path.clone());
        let result = if stop.is_raised() { Ok(Outcome::Stopped) } else { self.agent(&mut audit) };
        let rows = read_rows(&audit_path, from, AUDIT_ROWS).unwrap_or_default();
        vis.close();
        // No longer current before the outcome is out (the UI may start the next task on
        // it), and the audit log is let go after it (the next task's events come later).
        {
            let mut cur = lock(&current);
            if cur.as_ref().is_some_and(|r| r.id == id) {
                *cur = None;
            }
        }
        emit.end(outcome(id, &result, stop.is_raised(), one_step, rows));
        drop(audit);
        let _ = done.send(());
    }

    fn agent(self, audit: &mut AuditLog) -> screenpilot_agent::Result<Outcome> {
        let (id, stop) = (self.id, self.stop.clone());
        let streamed = |backend| backend_brain(backend, &self.emit, &self.state, id, self.options.max_tokens);
        let inner: Box<dyn Brain + Send> = match self.spec_model {
            TaskModel::Brain(b) => b,
            TaskModel::Local(h) => streamed(Arc::new(StoppableLocal::new(h, stop.clone()))),
            TaskModel::Backend(b) => streamed(b),
        };
        let mut brain = StepBrain { inner, task: id, vis: Arc::clone(&self.vis), state: Arc::clone(&self.state), emit: Arc::clone(&self.emit) };
        let (screen, hides): (Box<dyn Capture + Send>, bool) = match self.spec_screen {
            TaskScreen::Live(c) => (c, true),
            TaskScreen::Fixed(s) => (Box::new(FixedScreen(s)), false),
        };
        let mut capture = Watched { inner: screen, hides, vis: Arc::clone(&self.vis), stop: stop.clone(), state: Arc::clone(&self.state) };
        let mut actuator = Guarded { inner: Arc::clone(&self.actuator), vis: Arc::clone(&self.vis), stop: stop.clone() };
        let mut confirmer = UiConfirmer {
            task: id,
            emit: Arc::clone(&self.emit),
            state: Arc::clone(&self.state),
            vis: Arc::clone(&self.vis),
            stop: stop.clone(),
            decisions: self.confirmer_inbox,
            pending: self.pending,
            next_id: self.next_proposal,
            auto_left: 0,
            auto_interval: self.options.auto_interval,
            last_auto: None,
        };
        let mut settle = self.options.settle;
        if self.one_step {
            // The fixed screen never changes: no need to watch it settle.
            settle.poll = Duration::from_millis(1);
        }
        let config = AgentConfig { max_turns: if self.one_step { 1 } else { self.options.max_turns }, settle, ..AgentConfig::default() };
        let policy = Policy { actions_enabled: self.actions_enabled, mode: Mode::ConfirmEach };
        // A recording that cannot start ends the task before anything is captured.
        let mut recorder: Option<Recorder> = match &self.options.tasks_dir {
            Some(dir) => Some(new_recorder(dir).map_err(AgentError::Record)?),
            None => None,
        };
        let result = Agent {
            brain: &mut brain,
            capture: &mut capture,
            actuator: &mut actuator,
            confirmer: &mut confirmer,
            audit: Some(audit),
            recorder: recorder.as_mut(),
            policy,
            config,
            stop,
        }
        .run(&self.task);
        // Nothing recorded (stopped or failed before the first screenshot): no empty folder.
        if let Some(rec) = recorder.filter(|r| !r.is_started()) {
            let _ = std::fs::remove_dir(rec.dir());
        }
        result
    }
}

/// A brain over `backend` that streams each answer's text to the UI.
fn backend_brain(backend: Arc<dyn Backend>, emit: &Arc<Emitter>, state: &Arc<StepState>, task: u64, max_tokens: usize) -> Box<dyn Brain + Send> {
    let (emit, state) = (Arc::clone(emit), Arc::clone(state));
    let mut brain = BackendBrain::new(backend).on_text(move |t| {
        let step = state.step.load(Ordering::SeqCst);
        emit.emit(TaskEvent::Text { task, step, text: t.to_string() });
    });
    brain.options.max_tokens = max_tokens;
    Box::new(brain)
}

/// The outcome event of a finished task.
fn outcome(task: u64, result: &screenpilot_agent::Result<Outcome>, stopped_flag: bool, one_step: bool, audit: Vec<AuditRow>) -> TaskOutcome {
    let mk = |status: &str, message: String, answer: Option<String>| TaskOutcome { task, status: status.into(), message, answer, audit: audit.clone() };
    if stopped_flag {
        return stopped(task, audit);
    }
    match result {
        Ok(Outcome::Terminated(TerminateStatus::Success)) => mk("success", "done: the model reports success".into(), None),
        Ok(Outcome::Terminated(_)) => mk("failure", "the model reports that the task failed".into(), None),
        Ok(Outcome::Answered(t)) => mk("answered", "the model answered".into(), Some(t.clone())),
        Ok(Outcome::NoAction(t)) => mk("no_action", "the model replied without an action".into(), Some(t.clone())),
        Ok(Outcome::RejectedByUser) => mk("rejected", "you rejected the action".into(), None),
        Ok(Outcome::ActionsDisabled) => mk("actions_disabled", "actions are off: tick \"Allow actions\" first".into(), None),
        Ok(Outcome::StepLimitReached) => mk("step_limit", "the step limit was reached".into(), None),
        Ok(Outcome::TurnLimitReached) if one_step => match audit.last() {
            Some(last) if last.decision == "executed" => mk("done", "the action ran".into(), None),
            last => mk("refused", last.map_or_else(|| "nothing ran".into(), |l| l.decision.clone()), None),
        },
        Ok(Outcome::TurnLimitReached) => mk("turn_limit", "the turn limit was reached".into(), None),
        Ok(Outcome::Stopped) => stopped(task, audit),
        Ok(other) => mk("ended", format!("ended: {other:?}"), None),
        Err(e) => mk("error", e.to_string(), None),
    }
}
