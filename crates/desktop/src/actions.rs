//! Consented actions: a model answer becomes a [`Proposal`] (parsed with
//! `parse_tool_calls`, mapped onto the capture's monitor) that the UI shows on the screenshot;
//! the user accepts or rejects it. Accepted actions pass the agent's policy gate (actions are
//! off until the user turns them on) and run through an [`Actuator`] with a [`StopFlag`].
//! Every proposal's fate is appended to the (hash-chained) audit log; an accepted action's
//! record is written before its first input event, and the action does not run when that
//! write fails (full disk, read-only or removed log).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

use screenpilot_agent::audit::{now_rfc3339, screenshot_hash, AuditDecision, AuditLog, AuditRecord};
use screenpilot_agent::executor::execute;
use screenpilot_agent::policy::{ConfirmRequest, FixedConfirmer, Gate, Verdict};
use screenpilot_agent::screen_action::{resolve, Resolved};
use screenpilot_agent::{parse_tool_calls, Actuator, Decision, ModelAction, OsPoint, Policy, Screenshot, StopFlag};

use crate::error::{DesktopError, Result};

/// What the UI draws before the user decides.
#[derive(Debug, Clone, Serialize)]
pub struct ProposalView {
    /// e.g. `left_click`, `type`.
    pub action: String,
    /// The whole action as JSON (model form).
    pub model_action: ModelAction,
    /// Text that would be typed, if any.
    pub text: Option<String>,
    /// Target markers in image pixels.
    pub image_points: Vec<(f64, f64)>,
    /// The same targets in OS coordinates.
    pub screen_points: Vec<OsPoint>,
}

/// What happened after the decision.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Performed.
    Executed,
    /// The user said no.
    Rejected,
    /// Actions are off.
    Disabled,
    /// The stop flag was raised.
    Stopped,
}

struct Pending {
    model_output: String,
    model_action: ModelAction,
    action: screenpilot_agent::ScreenAction,
    shot: Screenshot,
}

/// Proposals, decisions and the audit log.
pub struct ActionDesk {
    policy: Policy,
    actuator: Box<dyn Actuator + Send>,
    audit: AuditLog,
    audit_path: PathBuf,
    stop: Arc<AtomicBool>,
    pending: Option<Pending>,
    turn: u32,
}

impl ActionDesk {
    /// A desk with actions off, appending to the audit log at `audit_path`. `stop` is the
    /// flag the stop button and hotkey raise (shared, so raising it needs no lock on the desk).
    pub fn new(actuator: Box<dyn Actuator + Send>, audit_path: &Path, stop: Arc<AtomicBool>) -> Result<Self> {
        if let Some(dir) = audit_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| DesktopError::io(dir, e))?;
        }
        let audit = AuditLog::open(audit_path).map_err(screenpilot_agent::AgentError::from)?;
        Ok(Self {
            policy: Policy::default(),
            actuator,
            audit,
            audit_path: audit_path.to_path_buf(),
            stop,
            pending: None,
            turn: 0,
        })
    }

    /// Turns actions on or off.
    pub fn set_enabled(&mut self, on: bool) {
        self.policy.actions_enabled = on;
    }

    /// Whether actions are on.
    pub fn enabled(&self) -> bool {
        self.policy.actions_enabled
    }

    /// The stop flag as the executor sees it.
    pub fn stop_flag(&self) -> StopFlag {
        StopFlag::from_arc(Arc::clone(&self.stop))
    }

    /// The audit log's file.
    pub fn audit_path(&self) -> &Path {
        &self.audit_path
    }

    fn record(&mut self, p: &Pending, decision: AuditDecision, detail: Option<String>) -> Result<()> {
        let rec = AuditRecord {
            time: now_rfc3339(),
            turn: self.turn,
            screenshot_sha256: screenshot_hash(&p.shot.image),
            model_output: p.model_output.clone(),
            action: Some(p.model_action.clone()),
            screen_action: Some(p.action.clone()),
            screen_coordinates: p.action.points(),
            decision,
            detail,
        };
        self.audit.record(&rec).map_err(|e| screenpilot_agent::AgentError::Audit(e).into())
    }

    /// Parses the first `computer_use` call in `model_output` and maps it onto `shot`.
    /// A new proposal replaces an undecided one and lowers the stop flag.
    pub fn propose(&mut self, model_output: &str, shot: Screenshot) -> Result<ProposalView> {
        let model_action = parse_tool_calls(model_output)?
            .into_iter()
            .next()
            .ok_or(DesktopError::Agent(screenpilot_agent::AgentError::NotFound { expected: "computer_use tool call" }))?;
        let action = match resolve(&model_action, &shot.geometry)? {
            Resolved::Act(a) => a,
            Resolved::Finish(_) => return Err(DesktopError::InvalidArgument("the model finished the task; nothing to do".into())),
        };
        let g = &shot.geometry;
        let screen_points = action.points();
        let image_points = screen_points
            .iter()
            .map(|p| {
                let i = g.physical_to_image(g.monitor.os_to_physical(*p));
                (i.x, i.y)
            })
            .collect();
        let text = match &model_action {
            ModelAction::Type { text } => Some(text.clone()),
            _ => None,
        };
        let name = serde_json::to_value(&model_action)
            .ok()
            .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(str::to_string))
            .unwrap_or_default();
        let view = ProposalView { action: name, model_action: model_action.clone(), text, image_points, screen_points };
        self.turn += 1;
        self.stop.store(false, Ordering::SeqCst);
        self.pending = Some(Pending { model_output: model_output.to_string(), model_action, action, shot });
        Ok(view)
    }

    /// The user's decision about the pending proposal.
    pub fn decide(&mut self, accept: bool) -> Result<Outcome> {
        let p = self.pending.take().ok_or_else(|| DesktopError::InvalidArgument("no action is waiting for a decision".into()))?;
        if !accept {
            self.record(&p, AuditDecision::RejectedByUser, None)?;
            return Ok(Outcome::Rejected);
        }
        let req = ConfirmRequest { model_action: &p.model_action, action: &p.action, monitor: &p.shot.geometry.monitor };
        let verdict = Gate::new(self.policy).authorize(&req, &mut FixedConfirmer(Decision::Approve), &self.stop_flag());
        match verdict {
            Ok(Verdict::Approved) => {}
            Ok(Verdict::ActionsDisabled) => {
                self.record(&p, AuditDecision::RefusedDisabled, None)?;
                return Ok(Outcome::Disabled);
            }
            Ok(other) => {
                self.record(&p, AuditDecision::RefusedInvalid, Some(format!("{other:?}")))?;
                return Ok(Outcome::Rejected);
            }
            Err(_) => {
                self.record(&p, AuditDecision::Stopped, None)?;
                return Ok(Outcome::Stopped);
            }
        }
        // Fail closed: no input event unless this record is on disk.
        self.record(&p, AuditDecision::Approved, Some("about to execute".into()))?;
        let stop = self.stop_flag();
        let (decision, detail, result) = match execute(self.actuator.as_mut(), &p.action, &stop) {
            Ok(()) => (AuditDecision::Executed, None, Ok(Outcome::Executed)),
            Err(screenpilot_agent::AgentError::Stopped) => (AuditDecision::Stopped, None, Ok(Outcome::Stopped)),
            Err(e) => (AuditDecision::Failed, Some(e.to_string()), Err(e.into())),
        };
        match self.record(&p, decision, detail) {
            Err(DesktopError::Agent(screenpilot_agent::AgentError::Audit(e))) => {
                Err(screenpilot_agent::AgentError::AuditAfterAction(e).into())
            }
            Err(e) => Err(e),
            Ok(()) => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use screenpilot_agent::{CaptureGeometry, InputEvent, InputSpace, MonitorGeometry, RecordingActuator};
    fn shot() -> Screenshot {
        let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 1000, y: 0 }, width: 200, height: 100, scale_factor: 1.0, input_space: InputSpace::Physical };
        Screenshot { image: Arc::new(image::RgbImage::new(200, 100)), geometry: CaptureGeometry::full_monitor(m, 200, 100).unwrap() }
    }

    const CLICK: &str = r#"<tool_call>{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [500, 500]}}</tool_call>"#;

    #[test]
    fn off_until_enabled_rejects_do_nothing_accepts_click_and_everything_is_audited() {
        let path = std::env::temp_dir().join(format!("sp-audit-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let rec = RecordingActuator::default();
        let mut desk = ActionDesk::new(Box::new(rec.clone()), &path, Arc::default()).unwrap();
        let view = desk.propose(CLICK, shot()).unwrap();
        assert_eq!(view.action, "click");
        assert_eq!(view.screen_points, vec![OsPoint { x: 1100, y: 50 }]);
        assert_eq!(view.image_points, vec![(100.0, 50.0)]);
        assert_eq!(desk.decide(true).unwrap(), Outcome::Disabled);
        desk.set_enabled(true);
        desk.propose(CLICK, shot()).unwrap();
        assert_eq!(desk.decide(false).unwrap(), Outcome::Rejected);
        assert!(rec.events().is_empty());
        desk.propose(CLICK, shot()).unwrap();
        desk.stop_flag().raise();
        assert_eq!(desk.decide(true).unwrap(), Outcome::Stopped);
        assert!(rec.events().is_empty());
        desk.propose(CLICK, shot()).unwrap();
        assert_eq!(desk.decide(true).unwrap(), Outcome::Executed);
        assert_eq!(rec.events().first(), Some(&InputEvent::MoveTo(OsPoint { x: 1100, y: 50 })));
        assert!(desk.decide(true).is_err(), "nothing pending");
        let log = std::fs::read_to_string(&path).unwrap();
        let decisions: Vec<String> = log.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["decision"].as_str().unwrap().to_string()).collect();
        assert_eq!(decisions, ["refused_disabled", "rejected_by_user", "stopped", "approved", "executed"]);
        assert!(screenpilot_agent::audit_verify::verify_file(&path).unwrap().is_ok());
    }

    #[test]
    fn an_accepted_action_does_not_run_when_its_audit_record_cannot_be_written() {
        let rec = RecordingActuator::default();
        let mut desk = ActionDesk::new(Box::new(rec.clone()), Path::new("/dev/full"), Arc::default()).unwrap();
        desk.set_enabled(true);
        desk.propose(CLICK, shot()).unwrap();
        let err = desk.decide(true).unwrap_err().to_string();
        assert!(err.contains("audit log could not be written, so the action was not performed"), "{err}");
        assert!(rec.events().is_empty(), "no input may be sent: {:?}", rec.events());
    }
}
