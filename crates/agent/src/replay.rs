//! Replay of a recording ([`crate::record`]) without touching the screen: every recorded
//! model output goes again through [`parse_tool_calls`], [`resolve`] (with the geometry
//! recorded for that turn) and the policy [`Gate`] (rebuilt from the recorded policy, with a
//! confirmer that gives the answers the user gave), and every difference from what was
//! recorded is reported with its step (turn) number: a different parsed action, different
//! screen coordinates, a different refusal, decision, question to the user or outcome, or a
//! screenshot that no longer matches its recorded hash. No input event is sent: there is no
//! actuator at all; what happened while an approved action ran (it ran, failed or was
//! stopped) is taken from the recording. The auto mode's rate limit is not waited for.
//!
//! Use it to check that a change to the parser, the coordinate mapping or the policy does
//! not change what recorded tasks would do, or to see what an edited model output would do.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::actuator::StopFlag;
use crate::agent::Outcome;
use crate::audit::{screenshot_hash, AuditDecision};
use crate::coords::CaptureGeometry;
use crate::error::{AgentError, Result};
use crate::model_action::{parse_tool_calls, ModelAction};
use crate::policy::{ConfirmRequest, Confirmer, Decision, Gate, Mode, Verdict};
use crate::record::{to_json, ActionRecord, OutcomeRecord, RecordError, Recording, StepLine, TurnRecord, STEPS_FILE};
use crate::screen_action::{resolve, Finish, Resolved};

/// What differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiffKind {
    /// The screenshot file is missing, unreadable, or not the recorded pixels.
    Screenshot,
    /// The model output parses into a different action (or fails differently).
    ParsedAction,
    /// The action maps to a different screen action (coordinates).
    ScreenAction,
    /// Both refused, with different messages.
    Refusal,
    /// A different decision (approved, rejected, refused, finished, ...).
    Decision,
    /// The gate asks the user where the recording did not, or the other way round.
    UserAsked,
    /// The recording has an action (or a turn) the replay does not get to.
    Missing,
    /// The replay gets to an action the recording does not have.
    Extra,
    /// The task ends differently.
    Outcome,
}

impl fmt::Display for DiffKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiffKind::Screenshot => "screenshot",
            DiffKind::ParsedAction => "parsed action",
            DiffKind::ScreenAction => "screen action",
            DiffKind::Refusal => "refusal",
            DiffKind::Decision => "decision",
            DiffKind::UserAsked => "question to the user",
            DiffKind::Missing => "missing in the replay",
            DiffKind::Extra => "not in the recording",
            DiffKind::Outcome => "outcome",
        })
    }
}

/// One difference between the recording and its replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// The model turn (step) it is in; `None` for the task's outcome.
    pub step: Option<u32>,
    /// The action's position in the step's output (from 1), when it is about one action.
    pub action: Option<usize>,
    /// What differs.
    pub kind: DiffKind,
    /// What the recording says.
    pub recorded: String,
    /// What the replay gives.
    pub replayed: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.step, self.action) {
            (Some(s), Some(a)) => write!(f, "step {s}, action {a}: ")?,
            (Some(s), None) => write!(f, "step {s}: ")?,
            (None, _) => {}
        }
        write!(f, "{} differs: recorded {}; replayed {}", self.kind, self.recorded, self.replayed)
    }
}

/// What [`replay`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayReport {
    /// Model turns replayed.
    pub steps: usize,
    /// Actions replayed (including refused and final ones).
    pub actions: usize,
    /// Every difference, in order.
    pub differences: Vec<Difference>,
}

impl ReplayReport {
    /// Whether the replay did exactly what the recording says.
    pub fn is_identical(&self) -> bool {
        self.differences.is_empty()
    }
}

/// How the replayed task stands after a step.
#[derive(Debug, Clone, PartialEq)]
enum End {
    /// It goes on to the next turn.
    Continue,
    /// It ended with this outcome.
    Finished(Outcome),
    /// An approved action failed when it ran (the recording says so): the task ended with an error.
    Failed,
}

/// One replayed action, as its recording line would say.
#[derive(Debug)]
struct Replayed {
    action: Option<Value>,
    screen_action: Option<Value>,
    detail: Option<String>,
    decision: AuditDecision,
    asked: bool,
}

/// Answers as the user did; asked where the user was not, it rejects (and the report says so).
struct RecordedAnswers {
    answer: Option<Decision>,
    asked: bool,
}

impl Confirmer for RecordedAnswers {
    fn confirm(&mut self, _: &ConfirmRequest<'_>) -> Decision {
        self.asked = true;
        self.answer.unwrap_or(Decision::Reject)
    }
}

/// Replays the recording in `dir` (see the module docs). A missing folder or file, or a
/// line that does not parse, is [`AgentError::Replay`]; everything else is a [`Difference`].
pub fn replay(dir: &Path) -> Result<ReplayReport> {
    let rec = Recording::open(dir).map_err(AgentError::Replay)?;
    let (turns, outcome) = group(&rec).map_err(AgentError::Replay)?;
    let mut policy = rec.task.policy.to_policy();
    if let Mode::Auto(limits) = policy.mode {
        policy.mode = Mode::Auto(crate::policy::AutoLimits::new(limits.max_steps(), std::time::Duration::ZERO));
    }
    let mut gate = Gate::new(policy);
    let mut report = ReplayReport::default();
    let mut end = End::Continue;
    for (turn, recorded) in &turns {
        if end != End::Continue {
            let replayed = "the task had ended".to_string();
            report.differences.push(diff(turn.turn, None, DiffKind::Missing, "a model turn".into(), replayed));
            break;
        }
        report.steps += 1;
        if let Some(problem) = check_screenshot(&rec.dir, turn) {
            let recorded = format!("{} ({})", turn.screenshot, turn.screenshot_sha256);
            report.differences.push(diff(turn.turn, None, DiffKind::Screenshot, recorded, problem));
        }
        let (replayed, turn_end) = replay_turn(turn, recorded, &mut gate)?;
        report.actions += replayed.len();
        compare_actions(turn.turn, recorded, &replayed, &mut report.differences);
        end = turn_end;
    }
    let at_turn_limit = report.steps >= usize::try_from(rec.task.max_turns).unwrap_or(usize::MAX);
    if let Some(d) = compare_outcome(&end, outcome, at_turn_limit) {
        report.differences.push(d);
    }
    Ok(report)
}

fn diff(step: u32, action: Option<usize>, kind: DiffKind, recorded: String, replayed: String) -> Difference {
    Difference { step: Some(step), action, kind, recorded, replayed }
}

type Turns<'r> = Vec<(&'r TurnRecord, Vec<ActionRecord>)>;

/// The turns with their action lines, and the outcome line; lines out of place are an error.
fn group(rec: &Recording) -> Result<(Turns<'_>, Option<&OutcomeRecord>), RecordError> {
    let corrupt = |i: usize, message: String| RecordError::Corrupt { path: rec.dir.join(STEPS_FILE), line: i + 1, message };
    let mut turns: Turns<'_> = Vec::new();
    let mut outcome = None;
    for (i, line) in rec.lines.iter().enumerate() {
        if outcome.is_some() {
            return Err(corrupt(i, "a line after the outcome".into()));
        }
        match line {
            StepLine::Turn(t) => turns.push((t, Vec::new())),
            StepLine::Action(a) => match turns.last_mut() {
                Some((t, actions)) if t.turn == a.turn => actions.push(a.clone()),
                Some((t, _)) => return Err(corrupt(i, format!("an action of turn {} after turn {}", a.turn, t.turn))),
                None => return Err(corrupt(i, "an action before the first turn".into())),
            },
            StepLine::Outcome(o) => outcome = Some(o),
        }
    }
    Ok((turns, outcome))
}

/// What is wrong with a turn's screenshot file, if anything.
fn check_screenshot(dir: &Path, turn: &TurnRecord) -> Option<String> {
    if Path::new(&turn.screenshot).file_name() != Some(OsStr::new(&turn.screenshot)) {
        return Some("not a file name in the recording's folder".into());
    }
    let image = match image::open(dir.join(&turn.screenshot)) {
        Ok(i) => i.to_rgb8(),
        Err(e) => return Some(format!("cannot be read: {e}")),
    };
    let (g, (w, h)) = (&turn.geometry, image.dimensions());
    if (w, h) != (g.image_width, g.image_height) {
        return Some(format!("is {w}x{h}, the geometry says {}x{}", g.image_width, g.image_height));
    }
    let hash = screenshot_hash(&image);
    (hash != turn.screenshot_sha256).then(|| format!("other pixels ({hash})"))
}

/// Replays one turn as [`crate::Agent`] handles a model output.
fn replay_turn(turn: &TurnRecord, recorded: &[ActionRecord], gate: &mut Gate) -> Result<(Vec<Replayed>, End)> {
    let refused = |action: Option<Value>, e: AgentError| Replayed {
        action,
        screen_action: None,
        detail: Some(e.to_string()),
        decision: AuditDecision::RefusedInvalid,
        asked: false,
    };
    let actions = match parse_tool_calls(&turn.model_output) {
        Ok(a) => a,
        Err(e) => return Ok((vec![refused(None, e)], End::Continue)),
    };
    if actions.is_empty() {
        let r = Replayed { action: None, screen_action: None, detail: None, decision: AuditDecision::NoAction, asked: false };
        return Ok((vec![r], End::Finished(Outcome::NoAction(turn.model_output.clone()))));
    }
    let mut out = Vec::new();
    for (i, action) in actions.iter().enumerate() {
        let json = json(Some(action))?;
        let (replayed, end) = match resolve(action, &turn.geometry) {
            Err(e) => (refused(json, e), Some(End::Continue)),
            Ok(Resolved::Finish(finish)) => {
                let r = Replayed { action: json, screen_action: None, detail: None, decision: AuditDecision::Finished, asked: false };
                let outcome = match finish {
                    Finish::Terminate(status) => Outcome::Terminated(status),
                    Finish::Answer(text) => Outcome::Answered(text),
                };
                (r, Some(End::Finished(outcome)))
            }
            Ok(Resolved::Act(screen)) => {
                let rec = recorded.get(i);
                let (decision, asked, end) = gate_action(action, &screen, &turn.geometry, rec, gate)?;
                let r = Replayed { action: json, screen_action: json_of(&screen)?, detail: None, decision, asked };
                (r, end)
            }
        };
        out.push(replayed);
        if let Some(end) = end {
            return Ok((out, end));
        }
    }
    Ok((out, End::Continue))
}

/// The gate's decision on one resolved action, whether it asked, and whether the task ends.
fn gate_action(
    action: &ModelAction,
    screen: &crate::screen_action::ScreenAction,
    geometry: &CaptureGeometry,
    recorded: Option<&ActionRecord>,
    gate: &mut Gate,
) -> Result<(AuditDecision, bool, Option<End>)> {
    let mut answers = RecordedAnswers { answer: recorded.and_then(|r| r.user), asked: false };
    let req = ConfirmRequest { model_action: action, action: screen, monitor: &geometry.monitor };
    let verdict = gate.authorize(&req, &mut answers, &StopFlag::new())?;
    let (decision, end) = match verdict {
        Verdict::RejectedByUser => (AuditDecision::RejectedByUser, Some(End::Finished(Outcome::RejectedByUser))),
        Verdict::ActionsDisabled => (AuditDecision::RefusedDisabled, Some(End::Finished(Outcome::ActionsDisabled))),
        Verdict::StepLimitReached => (AuditDecision::RefusedStepLimit, Some(End::Finished(Outcome::StepLimitReached))),
        // What happened while it ran is only in the recording.
        Verdict::Approved => match recorded.map(|r| r.decision) {
            Some(AuditDecision::Stopped) => (AuditDecision::Executed, Some(End::Finished(Outcome::Stopped))),
            Some(AuditDecision::Failed) => (AuditDecision::Executed, Some(End::Failed)),
            _ => (AuditDecision::Executed, None),
        },
    };
    Ok((decision, answers.asked, end))
}

fn json<T: Serialize>(v: Option<&T>) -> Result<Option<Value>> {
    to_json(v).map_err(AgentError::Replay)
}

fn json_of<T: Serialize>(v: &T) -> Result<Option<Value>> {
    json(Some(v))
}

fn show(v: &Option<Value>) -> String {
    v.as_ref().map_or_else(|| "none".to_string(), Value::to_string)
}

/// Whether a recorded decision is what a replayed one stands for: an approved action is
/// `executed` in the replay and may have been executed, failed or stopped in the recording.
fn same_decision(recorded: AuditDecision, replayed: AuditDecision) -> bool {
    use AuditDecision::{Approved, Executed, Failed, Stopped};
    recorded == replayed || (replayed == Executed && matches!(recorded, Approved | Failed | Stopped))
}

fn compare_actions(step: u32, recorded: &[ActionRecord], replayed: &[Replayed], out: &mut Vec<Difference>) {
    for i in 0..recorded.len().max(replayed.len()) {
        let at = Some(i + 1);
        let (r, p) = match (recorded.get(i), replayed.get(i)) {
            (Some(r), Some(p)) => (r, p),
            (Some(r), None) => {
                out.push(diff(step, at, DiffKind::Missing, format!("{} {}", show(&r.action), decision_name(r.decision)), "not reached".into()));
                continue;
            }
            (None, Some(p)) => {
                out.push(diff(step, at, DiffKind::Extra, "not reached".into(), format!("{} {}", show(&p.action), decision_name(p.decision))));
                continue;
            }
            (None, None) => continue,
        };
        if r.action != p.action {
            out.push(diff(step, at, DiffKind::ParsedAction, show(&r.action), show(&p.action)));
        }
        if r.screen_action != p.screen_action {
            out.push(diff(step, at, DiffKind::ScreenAction, show(&r.screen_action), show(&p.screen_action)));
        }
        let both_refused = r.decision == AuditDecision::RefusedInvalid && p.decision == AuditDecision::RefusedInvalid;
        if both_refused && r.detail != p.detail {
            let text = |d: &Option<String>| d.clone().unwrap_or_else(|| "none".into());
            out.push(diff(step, at, DiffKind::Refusal, text(&r.detail), text(&p.detail)));
        }
        if !same_decision(r.decision, p.decision) {
            out.push(diff(step, at, DiffKind::Decision, decision_name(r.decision), decision_name(p.decision)));
        }
        if r.user.is_some() != p.asked {
            let recorded = r.user.map_or_else(|| "not asked".to_string(), |d| format!("asked ({})", decision_name(d)));
            let replayed = if p.asked { "asked" } else { "not asked" };
            out.push(diff(step, at, DiffKind::UserAsked, recorded, replayed.into()));
        }
    }
}

fn decision_name<T: Serialize>(d: T) -> String {
    serde_json::to_value(d).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The outcome difference, if any. A replay that goes on past its last turn matches a
/// recording stopped by the user or ended by an error (capture, model), or one that used up
/// its turns.
fn compare_outcome(end: &End, recorded: Option<&OutcomeRecord>, at_turn_limit: bool) -> Option<Difference> {
    let outcome_name = |o: &Outcome| serde_json::to_string(o).unwrap_or_default();
    let replayed = match end {
        End::Continue if at_turn_limit => outcome_name(&Outcome::TurnLimitReached),
        End::Continue => "the task goes on".to_string(),
        End::Finished(o) => outcome_name(o),
        End::Failed => "an input error".to_string(),
    };
    let Some(rec) = recorded else {
        return Some(Difference { step: None, action: None, kind: DiffKind::Outcome, recorded: "none (the recording was cut off)".into(), replayed });
    };
    let same = match (end, &rec.outcome) {
        (End::Finished(o), Some(r)) => o == r,
        (End::Failed, None) => rec.error.is_some(),
        (End::Continue, Some(Outcome::TurnLimitReached)) => at_turn_limit,
        (End::Continue, Some(Outcome::Stopped)) => true,
        (End::Continue, None) => rec.error.is_some(),
        _ => false,
    };
    let recorded = match (&rec.outcome, &rec.error) {
        (Some(o), _) => outcome_name(o),
        (None, Some(e)) => format!("error: {e}"),
        (None, None) => "none".into(),
    };
    (!same).then_some(Difference { step: None, action: None, kind: DiffKind::Outcome, recorded, replayed })
}
