//! `screenpilot do "TASK"`: the agent loop on a monitor, answered by the local engine or an
//! OpenAI-compatible server. Without `--auto` every proposed action is described on stderr and
//! waits for one line on stdin (`y` does it; anything else, or end of input, rejects it and
//! ends the task). Running `do` is the user's opt-in for this run; the rest of the policy holds
//! (step and rate limits, the actions that always ask, coordinates checked against the
//! monitor). Ctrl+C raises the stop flag: no input event is sent after it, and the command
//! returns at once (within 100 ms) while a generation still running is abandoned.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::Context;
use screenpilot_agent::audit::AuditLog;
use screenpilot_agent::record::Recorder;
use screenpilot_agent::enigo_backend::EnigoActuator;
use screenpilot_agent::model_action::TerminateStatus;
use screenpilot_agent::policy::{AutoLimits, ConfirmRequest, Mode};
use screenpilot_agent::xcap_backend::{MonitorChoice, XcapCapture};
use screenpilot_agent::{Actuator, Agent, AgentConfig, Confirmer, Decision, InputEvent, Outcome, Policy, StopFlag};
use screenpilot_desktop::task::{describe, BackendBrain};

use crate::args::DoArgs;
use crate::backend::open_backend;

/// Exit codes of `do` (also in its `--help`).
pub mod code {
    /// The model finished with success, or answered.
    pub const DONE: u8 = 0;
    /// An error: the backend, the capture, the input or the audit log failed.
    pub const ERROR: u8 = 1;
    /// The model reported that the task failed.
    pub const FAILED: u8 = 3;
    /// The model replied without calling the tool (its text is printed).
    pub const NO_ACTION: u8 = 4;
    /// The user rejected a proposed action.
    pub const REJECTED: u8 = 5;
    /// `--max-steps` actions, or the turn limit, were used up.
    pub const LIMIT: u8 = 6;
    /// Stopped with Ctrl+C.
    pub const STOPPED: u8 = 130;
}

/// The `--help` text about exit codes.
pub const EXIT_CODES: &str = "Exit codes: 0 the model finished with success or answered; 1 error (backend, \
capture, input, audit log); 2 bad arguments; 3 the model reported failure; 4 the model replied without \
an action; 5 you rejected an action; 6 the step or turn limit was reached; 130 stopped with Ctrl+C.";

/// Asks on stderr, reads the answer from stdin.
struct StdinConfirmer {
    step: u32,
}

impl Confirmer for StdinConfirmer {
    fn confirm(&mut self, req: &ConfirmRequest<'_>) -> Decision {
        self.step += 1;
        ask_on_stdin(&format!("step {}: {} on monitor {:?} — do it?", self.step, describe(req.action), req.monitor.name))
    }
}

/// Writes `question` and ` [y/N] ` on stderr and reads one line from stdin: `y` approves;
/// anything else, or end of input, rejects (and says so). Also `mcp --http`'s terminal fallback.
pub fn ask_on_stdin(question: &str) -> Decision {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{question} [y/N] ");
    let _ = err.flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(n) if n > 0 && line.trim().eq_ignore_ascii_case("y") => Decision::Approve,
        _ => {
            let _ = writeln!(err, "{}", if line.is_empty() { "(no answer: rejected)" } else { "rejected" });
            Decision::Reject
        }
    }
}

/// In `--auto` mode nobody is asked, so every input event is written on stderr as it is sent.
struct Narrating<A>(A);

impl<A: Actuator> Actuator for Narrating<A> {
    fn perform(&mut self, event: &InputEvent) -> screenpilot_agent::Result<()> {
        let what = match event {
            InputEvent::MoveTo(p) => format!("pointer to ({}, {})", p.x, p.y),
            InputEvent::Button(b, press) => format!("{b:?} button {press:?}").to_lowercase(),
            InputEvent::Key(k, press) => format!("key {} {press:?}", k.name()).to_lowercase(),
            InputEvent::Text(t) => format!("type {t:?}"),
            InputEvent::Scroll(axis, n) => format!("scroll {axis:?} {n}").to_lowercase(),
        };
        eprintln!("screenpilot: auto: {what}");
        self.0.perform(event)
    }
}

pub fn run(a: DoArgs) -> anyhow::Result<ExitCode> {
    let stop = StopFlag::new();
    install_ctrl_c(&stop)?;
    let backend = open_backend(&a.source.backend, a.source.model.as_deref(), &a.source.runtime)?;
    eprintln!("screenpilot: task on {} ({})", monitor_name(a.monitor), backend.describe());
    let mut audit = match &a.audit {
        Some(p) => Some(AuditLog::open(p).with_context(|| format!("cannot open the audit log {}", p.display()))?),
        None => None,
    };
    let policy = Policy {
        actions_enabled: true,
        mode: if a.auto {
            Mode::Auto(AutoLimits::new(a.max_steps, Duration::from_millis(a.min_interval_ms)))
        } else {
            Mode::ConfirmEach
        },
    };
    let mut recorder = match &a.record {
        Some(dir) => Some(Recorder::new(dir).with_context(|| format!("cannot record into {}", dir.display()))?),
        None => None,
    };
    let config = AgentConfig { max_turns: a.max_steps.saturating_mul(2).max(5), ..AgentConfig::default() };
    let (done_tx, done_rx) = mpsc::channel();
    let worker_stop = stop.clone();
    let task = a.task.clone();
    let monitor = a.monitor;
    let max_tokens = a.max_tokens as usize;
    let auto = a.auto;
    let worker = std::thread::Builder::new().name("screenpilot-task".into()).spawn(move || {
        let result = (|| -> anyhow::Result<Outcome> {
            let mut brain = BackendBrain::new(backend);
            brain.options.max_tokens = max_tokens;
            let mut capture = XcapCapture {
                monitor: monitor.map_or(MonitorChoice::Primary, MonitorChoice::Index),
                region: None,
            };
            let enigo = EnigoActuator::new()?;
            let mut actuator: Box<dyn Actuator> = if auto { Box::new(Narrating(enigo)) } else { Box::new(enigo) };
            let mut confirmer = StdinConfirmer { step: 0 };
            let mut agent = Agent {
                brain: &mut brain,
                capture: &mut capture,
                actuator: actuator.as_mut(),
                confirmer: &mut confirmer,
                audit: audit.as_mut(),
                recorder: recorder.as_mut(),
                policy,
                config,
                stop: worker_stop,
            };
            Ok(agent.run(&task)?)
        })();
        let _ = done_tx.send(result);
    })?;
    // Wait for the task, or for Ctrl+C: then give the worker 100 ms to notice and return.
    let result = loop {
        match done_rx.recv_timeout(Duration::from_millis(10)) {
            Ok(r) => break Some(r),
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(mpsc::RecvTimeoutError::Timeout) if stop.is_raised() => {
                break done_rx.recv_timeout(Duration::from_millis(90)).ok();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    };
    let outcome = match result {
        None if stop.is_raised() => Outcome::Stopped,
        None => anyhow::bail!("the task's thread ended without a result"),
        Some(r) => r?,
    };
    if worker.is_finished() {
        let _ = worker.join();
    }
    report(&outcome)
}

fn report(outcome: &Outcome) -> anyhow::Result<ExitCode> {
    let (msg, code) = match outcome {
        Outcome::Terminated(TerminateStatus::Success) => ("done: the model reports success".to_string(), code::DONE),
        Outcome::Terminated(_) => ("the model reports that the task failed".to_string(), code::FAILED),
        Outcome::Answered(text) => {
            crate::out_line(text)?;
            ("done: the model answered".to_string(), code::DONE)
        }
        Outcome::NoAction(text) => {
            crate::out_line(text)?;
            ("the model replied without an action".to_string(), code::NO_ACTION)
        }
        Outcome::RejectedByUser => ("stopped: you rejected the action".to_string(), code::REJECTED),
        Outcome::StepLimitReached => ("stopped: the step limit (--max-steps) was reached".to_string(), code::LIMIT),
        Outcome::TurnLimitReached => ("stopped: the turn limit was reached".to_string(), code::LIMIT),
        Outcome::Stopped => ("stopped (Ctrl+C)".to_string(), code::STOPPED),
        other => (format!("ended: {other:?}"), code::ERROR),
    };
    eprintln!("screenpilot: {msg}");
    Ok(ExitCode::from(code))
}

fn monitor_name(m: Option<usize>) -> String {
    m.map_or_else(|| "the primary monitor".into(), |i| format!("monitor {i}"))
}

/// SIGINT (and SIGTERM) raise the stop flag instead of killing the process mid-action.
fn install_ctrl_c(stop: &StopFlag) -> anyhow::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let flag: Arc<AtomicBool> = stop.arc();
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe {
            signal_hook_registry::register(sig, move || flag.store(true, Ordering::SeqCst))
        }
        .context("cannot install the Ctrl+C handler")?;
    }
    Ok(())
}
