//! The acting tools of [`McpCore`]: `click`, `type`, `key`, `scroll` and `do_task` go through
//! the agent crate exactly as a task's actions do. A single action is a one-turn [`Agent`] run
//! whose "model output" is the client's request, so the policy, the bounds check against the
//! monitor, the hash-chained audit log (written before the first input event) and the stop flag
//! are the same code; the user's decision, asked before ([`super::handler`]), is its confirmer.

use std::time::Duration;

use serde_json::{json, Value};

use screenpilot_agent::audit::AuditLog;
use screenpilot_agent::capture::SettleConfig;
use screenpilot_agent::policy::{FixedConfirmer, Mode};
use screenpilot_agent::screen_action::Resolved;
use screenpilot_agent::{
    resolve, Agent, AgentConfig, AgentError, AutoLimits, Capture, Decision, FakeCapture, ModelAction, OsPoint, Outcome, Policy,
    Screenshot, ScriptedBrain,
};

use super::core::{McpCore, Reply};
use super::screens::{check_monitor, monitor_at, Screens};
use super::tools::{Button, Direction, ToolCall};
use crate::task::{describe, BackendBrain};
use crate::task_runner::lock;

/// An action checked against the screen, ready to confirm and run.
#[derive(Debug, Clone)]
pub struct Prepared {
    shot: Screenshot,
    /// The `computer_use` arguments (relative coordinates of `shot`).
    arguments: Value,
    /// What the user is asked about: "left click at (210, 300)".
    pub description: String,
}

impl McpCore {
    /// Checks an action against the screen: the monitor under its point is captured, the
    /// point mapped into that capture and bounds-checked as a model's would be.
    pub fn prepare(&self, call: &ToolCall) -> std::result::Result<Prepared, Reply> {
        let (mut arguments, at) = match call {
            ToolCall::Click { x, y, button, count } => {
                let action = match (button, count) {
                    (Button::Left, 1) => "left_click",
                    (Button::Left, 2) => "double_click",
                    (Button::Left, _) => "triple_click",
                    (Button::Right, 1) => "right_click",
                    (Button::Middle, 1) => "middle_click",
                    _ => return Err(Reply::Bad("only the left button double- or triple-clicks".into())),
                };
                (json!({"action": action}), Some(OsPoint { x: *x, y: *y }))
            }
            ToolCall::Type { text } => (json!({"action": "type", "text": text}), None),
            ToolCall::Key { keys } => (json!({"action": "key", "keys": keys}), None),
            ToolCall::Scroll { direction, amount, at } => {
                let pixels = i64::from(*amount) * screenpilot_agent::screen_action::PIXELS_PER_WHEEL_STEP;
                let (action, pixels) = match direction {
                    Direction::Up => ("scroll", pixels),
                    Direction::Down => ("scroll", -pixels),
                    Direction::Right => ("hscroll", pixels),
                    Direction::Left => ("hscroll", -pixels),
                };
                (json!({"action": action, "pixels": pixels}), at.map(|(x, y)| OsPoint { x, y }))
            }
            _ => return Err(Reply::Bad("not an action".into())),
        };
        let monitor = match at {
            Some(p) => {
                let monitors = self.screens.monitors().map_err(Reply::from)?;
                monitor_at(&monitors, p).ok_or_else(|| Reply::Bad(format!("({}, {}) is on no monitor (list_monitors)", p.x, p.y)))?
            }
            None => 0,
        };
        let shot = self.screens.capture_monitor(monitor).map_err(Reply::from)?;
        if let Some(p) = at {
            let rel = shot.geometry.os_to_rel(p);
            arguments["coordinate"] = json!([rel.x, rel.y]);
        }
        let bad = |e: AgentError| Reply::Bad(e.to_string());
        let action = ModelAction::from_arguments(arguments.as_object().ok_or_else(|| Reply::Bad("arguments".into()))?).map_err(bad)?;
        let description = match resolve(&action, &shot.geometry).map_err(bad)? {
            Resolved::Act(a) => describe(&a),
            Resolved::Finish(_) => return Err(Reply::Bad("not an action".into())),
        };
        let description = format!("{description} on {}", monitor_label(&shot));
        Ok(Prepared { shot, arguments, description })
    }

    /// Runs a prepared action with the user's `decision`, through the agent: the policy
    /// (actions allowed?), the audit log (written before the first input event), the stop flag.
    pub fn act(&self, prepared: &Prepared, client: &str, decision: Decision) -> Reply {
        let call = json!({"name": screenpilot_agent::model_action::TOOL_NAME, "arguments": prepared.arguments});
        let terminate = json!({"name": screenpilot_agent::model_action::TOOL_NAME, "arguments": {"action": "terminate", "status": "success"}});
        let mut brain = ScriptedBrain::new([
            format!("MCP client {client:?} asked for:\n<tool_call>\n{call}\n</tool_call>"),
            format!("<tool_call>\n{terminate}\n</tool_call>"),
        ]);
        let shot = &prepared.shot;
        let mut capture = FakeCapture::new(shot.geometry.clone(), shot.image.as_ref().clone());
        let settle = SettleConfig { poll: Duration::from_millis(1), threshold: 1.0, timeout: Duration::from_millis(10) };
        let config = AgentConfig { max_turns: 2, settle, ..AgentConfig::default() };
        let outcome = self.run_agent(&mut brain, &mut capture, Mode::ConfirmEach, config, decision, &format!("MCP: {}", prepared.description));
        match outcome {
            Ok(Outcome::Terminated(_)) => Reply::text(format!("done: {}", prepared.description), json!({"done": prepared.description})),
            Ok(o) => refusal(o, &prepared.description),
            Err(r) => r,
        }
    }

    /// A GUI task on a monitor, already confirmed by the user as a whole (`approved`): the
    /// model acts in the auto mode within `max_steps`; actions that always ask are refused.
    pub fn task(&self, task: &str, monitor: Option<usize>, max_steps: u32, approved: bool) -> Reply {
        if !approved {
            return Reply::Refused(format!("rejected by the user: the task {task:?}"));
        }
        let backend = match self.backend() {
            Ok(b) => b,
            Err(r) => return r,
        };
        let index = monitor.unwrap_or(0);
        if let Err(e) = check_monitor(self.screens.as_ref(), index) {
            return e.into();
        }
        let mut brain = BackendBrain::new(backend);
        brain.options.max_tokens = self.config().max_tokens.max(256);
        let mut capture = ScreensCapture { screens: self.screens.as_ref(), index };
        let config = AgentConfig { max_turns: max_steps.saturating_mul(2).max(4), ..AgentConfig::default() };
        let mode = Mode::Auto(AutoLimits::new(max_steps, Duration::from_millis(500)));
        match self.run_agent(&mut brain, &mut capture, mode, config, Decision::Reject, task) {
            Ok(Outcome::Terminated(status)) => {
                let s = format!("{status:?}").to_lowercase();
                Reply::text(format!("the task ended: the model reports {s}"), json!({"outcome": "terminated", "status": s}))
            }
            Ok(Outcome::Answered(text)) => Reply::text(text.clone(), json!({"outcome": "answered", "answer": text})),
            Ok(Outcome::NoAction(text)) => Reply::text(text.clone(), json!({"outcome": "no_action", "answer": text})),
            Ok(o) => refusal(o, task),
            Err(r) => r,
        }
    }

    fn run_agent(
        &self,
        brain: &mut dyn screenpilot_agent::Brain,
        capture: &mut dyn Capture,
        mode: Mode,
        config: AgentConfig,
        decision: Decision,
        task: &str,
    ) -> std::result::Result<Outcome, Reply> {
        let cfg = self.config();
        let mut audit = match &cfg.audit {
            Some(p) => Some(AuditLog::open(p).map_err(|e| Reply::Failed(format!("cannot open the audit log, so nothing was done: {e}")))?),
            None => None,
        };
        let mut confirmer = FixedConfirmer(decision);
        let mut actuator = lock(&self.actuator);
        let mut agent = Agent {
            brain,
            capture,
            actuator: actuator.as_mut(),
            confirmer: &mut confirmer,
            audit: audit.as_mut(),
            recorder: None,
            policy: Policy { actions_enabled: cfg.allow_actions, mode },
            config,
            stop: self.stop_flag(),
        };
        agent.run(task).map_err(|e| Reply::Failed(e.to_string()))
    }

}

fn monitor_label(shot: &Screenshot) -> String {
    match shot.geometry.monitor.name.as_str() {
        "" => "the monitor".into(),
        name => format!("monitor {name:?}"),
    }
}

/// The refusal of an action tool while actions are off.
pub(crate) fn actions_off() -> Reply {
    Reply::Refused(
        "refused: actions are off for MCP clients. The user can allow them in ScreenPilot (Settings → MCP) or start \
         `screenpilot mcp --allow-actions`; each action is still confirmed."
            .into(),
    )
}

fn refusal(outcome: Outcome, what: &str) -> Reply {
    match outcome {
        Outcome::ActionsDisabled => actions_off(),
        Outcome::RejectedByUser => Reply::Refused(format!("rejected by the user: {what}")),
        Outcome::Stopped => Reply::Refused(format!("stopped by the user: {what}")),
        Outcome::StepLimitReached | Outcome::TurnLimitReached => Reply::Refused(format!("the step limit was reached: {what}")),
        other => Reply::Failed(format!("{other:?}")),
    }
}

/// A monitor of [`Screens`] as the agent's [`Capture`].
struct ScreensCapture<'a> {
    screens: &'a dyn Screens,
    index: usize,
}

impl Capture for ScreensCapture<'_> {
    fn capture(&mut self) -> screenpilot_agent::Result<Screenshot> {
        self.screens.capture_monitor(self.index).map_err(|e| AgentError::Capture(e.to_string()))
    }
}
