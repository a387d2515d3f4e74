//! The agent loop: task -> screenshot -> model -> parsed action -> bounds check ->
//! policy -> execution -> wait for the screen to settle -> next screenshot, until the
//! model terminates or answers, a limit is hit, the user rejects, or the stop flag rises.
//! Every decision is written to the audit log; an approved action's record is written
//! before its first input event, and the action does not run when that write fails.
//! With a [`Recorder`], each turn's screenshot and model output are recorded before its
//! actions are gated (a failed write stops the task before it acts), then every action's
//! decision and the outcome (see [`crate::record`]).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::actuator::{Actuator, StopFlag};
use crate::audit::{now_rfc3339, screenshot_hash, AuditDecision, AuditLog, AuditRecord};
use crate::brain::{computer_use_tool, Brain, BrainRequest, Content, Role, Turn, DEFAULT_SYSTEM_PROMPT, QWEN_SCREEN_SIZE};
use crate::capture::{wait_until_settled, Capture, Screenshot, SettleConfig};
use crate::context::{apply_budget, ContextBudget};
use crate::error::{AgentError, Result};
use crate::executor::execute;
use crate::model_action::{parse_tool_calls, ModelAction, TerminateStatus};
use crate::policy::{ConfirmRequest, Confirmer, Decision, Gate, Policy, Verdict};
use crate::record::{to_json, ActionRecord, Recorder};
use crate::screen_action::{resolve, Finish, Resolved, ScreenAction};

/// Loop settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// System prompt (without the tools block).
    pub system_prompt: String,
    /// Most model turns per task.
    pub max_turns: u32,
    /// When the screen counts as settled after an action.
    pub settle: SettleConfig,
    /// Which screenshots stay in the context.
    pub budget: ContextBudget,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            system_prompt: DEFAULT_SYSTEM_PROMPT.to_string(),
            max_turns: 30,
            settle: SettleConfig::default(),
            budget: ContextBudget::default(),
        }
    }
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The model called `terminate`.
    Terminated(TerminateStatus),
    /// The model called `answer`.
    Answered(String),
    /// The model replied without a tool call; its text is here.
    NoAction(String),
    /// The user rejected an action.
    RejectedByUser,
    /// The model wanted to act but actions are switched off.
    ActionsDisabled,
    /// The auto mode's step limit was reached.
    StepLimitReached,
    /// `max_turns` model turns passed.
    TurnLimitReached,
    /// The stop flag was raised.
    Stopped,
}

/// Everything one task runs with. Borrowed so that the caller keeps its objects.
pub struct Agent<'a> {
    /// The model.
    pub brain: &'a mut dyn Brain,
    /// Screenshots of the target monitor.
    pub capture: &'a mut dyn Capture,
    /// Input events.
    pub actuator: &'a mut dyn Actuator,
    /// Asks the user.
    pub confirmer: &'a mut dyn Confirmer,
    /// Where decisions are recorded.
    pub audit: Option<&'a mut AuditLog>,
    /// Where the task is recorded for review and replay (screenshots, model outputs, decisions).
    pub recorder: Option<&'a mut Recorder>,
    /// The user's action settings.
    pub policy: Policy,
    /// Loop settings.
    pub config: AgentConfig,
    /// Raised to stop the task.
    pub stop: StopFlag,
}

/// What one model turn is about (for the audit log and the gate).
struct TurnCtx<'x> {
    turn: u32,
    shot: &'x Screenshot,
    output: &'x str,
    gate: &'x mut Gate,
}

enum Next {
    Continue(Option<String>),
    Done(Outcome),
}

/// What the audit line (and the recording's action line) for one action says.
struct Entry<'x> {
    action: Option<&'x ModelAction>,
    screen: Option<&'x ScreenAction>,
    decision: AuditDecision,
    detail: Option<String>,
    /// What the user answered, if asked.
    user: Option<Decision>,
    /// How long the action ran.
    action_ms: Option<u64>,
}

impl<'x> Entry<'x> {
    fn new(action: Option<&'x ModelAction>, screen: Option<&'x ScreenAction>, decision: AuditDecision, detail: Option<String>) -> Self {
        Self { action, screen, decision, detail, user: None, action_ms: None }
    }
}

/// Passes questions on to the user's confirmer and remembers the answer.
struct Asked<'c> {
    inner: &'c mut dyn Confirmer,
    answer: Option<Decision>,
}

impl Confirmer for Asked<'_> {
    fn confirm(&mut self, request: &ConfirmRequest<'_>) -> Decision {
        let d = self.inner.confirm(request);
        self.answer = Some(d);
        d
    }
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Agent<'_> {
    /// Runs `task` to its end. Errors are failures of capture, model or input backend;
    /// refusals and stops are [`Outcome`]s.
    /// With a recorder, the outcome (or the error) is its last line; when that line cannot be
    /// written the result is [`AgentError::Record`].
    pub fn run(&mut self, task: &str) -> Result<Outcome> {
        let result = match self.run_inner(task) {
            Err(AgentError::Stopped) => Ok(Outcome::Stopped),
            other => other,
        };
        let Some(rec) = self.recorder.as_deref_mut().filter(|r| r.is_started()) else { return result };
        match result {
            Ok(outcome) => rec.outcome(Some(&outcome), None).map(|()| outcome).map_err(AgentError::Record),
            Err(e) => {
                // Best effort: after a failed recording write the recorder takes no more.
                let _ = rec.outcome(None, Some(e.to_string()));
                Err(e)
            }
        }
    }

    fn run_inner(&mut self, task: &str) -> Result<Outcome> {
        let mut gate = Gate::new(self.policy);
        let mut shot = self.capture.capture()?;
        if let Some(rec) = self.recorder.as_deref_mut() {
            rec.start(task, &self.policy, self.config.max_turns, &shot.geometry).map_err(AgentError::Record)?;
        }
        let mut turns =
            vec![Turn { role: Role::User, content: vec![Content::Text(task.to_string()), Content::Image(shot.image.clone())] }];
        for turn_no in 1..=self.config.max_turns {
            self.stop.check()?;
            let request = BrainRequest {
                system_prompt: self.config.system_prompt.clone(),
                tools: vec![computer_use_tool(QWEN_SCREEN_SIZE.0, QWEN_SCREEN_SIZE.1)],
                turns: apply_budget(&turns, &self.config.budget),
            };
            let asked_at = Instant::now();
            let output = self.brain.respond(&request).map_err(|e| AgentError::Brain(e.to_string()))?;
            self.stop.check()?;
            // Recorded before any action of the turn is gated: a failed write stops the task here.
            if let Some(rec) = self.recorder.as_deref_mut() {
                rec.turn(turn_no, &shot, &output, millis(asked_at)).map_err(AgentError::Record)?;
            }
            turns.push(Turn::text(Role::Assistant, output.clone()));
            let mut ctx = TurnCtx { turn: turn_no, shot: &shot, output: &output, gate: &mut gate };
            let feedback = match self.handle_output(&mut ctx)? {
                Next::Done(outcome) => return Ok(outcome),
                Next::Continue(feedback) => feedback,
            };
            shot = wait_until_settled(&mut *self.capture, &self.config.settle, &self.stop)?.0;
            let mut content: Vec<Content> = feedback.into_iter().map(Content::Text).collect();
            content.push(Content::Image(shot.image.clone()));
            turns.push(Turn { role: Role::Tool, content });
        }
        Ok(Outcome::TurnLimitReached)
    }

    fn handle_output(&mut self, ctx: &mut TurnCtx<'_>) -> Result<Next> {
        let log = |agent: &mut Self, ctx: &TurnCtx<'_>, e: Entry<'_>| agent.note(ctx, e);
        let actions = match parse_tool_calls(ctx.output) {
            Ok(a) => a,
            Err(e) => {
                log(self, ctx, Entry::new(None, None, AuditDecision::RefusedInvalid, Some(e.to_string())))?;
                return Ok(Next::Continue(Some(format!("The tool call was refused: {e}"))));
            }
        };
        if actions.is_empty() {
            log(self, ctx, Entry::new(None, None, AuditDecision::NoAction, None))?;
            return Ok(Next::Done(Outcome::NoAction(ctx.output.to_string())));
        }
        for action in &actions {
            let screen = match resolve(action, &ctx.shot.geometry) {
                Ok(Resolved::Act(screen)) => screen,
                Ok(Resolved::Finish(finish)) => {
                    log(self, ctx, Entry::new(Some(action), None, AuditDecision::Finished, None))?;
                    return Ok(Next::Done(match finish {
                        Finish::Terminate(status) => Outcome::Terminated(status),
                        Finish::Answer(text) => Outcome::Answered(text),
                    }));
                }
                Err(e) => {
                    log(self, ctx, Entry::new(Some(action), None, AuditDecision::RefusedInvalid, Some(e.to_string())))?;
                    return Ok(Next::Continue(Some(format!("The action was refused: {e}"))));
                }
            };
            if let Some(outcome) = self.gate_and_execute(ctx, action, &screen)? {
                return Ok(Next::Done(outcome));
            }
        }
        Ok(Next::Continue(None))
    }

    fn gate_and_execute(&mut self, ctx: &mut TurnCtx<'_>, action: &ModelAction, screen: &ScreenAction) -> Result<Option<Outcome>> {
        let req = ConfirmRequest { model_action: action, action: screen, monitor: &ctx.shot.geometry.monitor };
        let mut asked = Asked { inner: &mut *self.confirmer, answer: None };
        let verdict = ctx.gate.authorize(&req, &mut asked, &self.stop);
        let user = asked.answer;
        let (decision, outcome) = match verdict {
            Err(AgentError::Stopped) => (AuditDecision::Stopped, Some(Outcome::Stopped)),
            Err(e) => return Err(e),
            Ok(Verdict::RejectedByUser) => (AuditDecision::RejectedByUser, Some(Outcome::RejectedByUser)),
            Ok(Verdict::ActionsDisabled) => (AuditDecision::RefusedDisabled, Some(Outcome::ActionsDisabled)),
            Ok(Verdict::StepLimitReached) => (AuditDecision::RefusedStepLimit, Some(Outcome::StepLimitReached)),
            Ok(Verdict::Approved) => return self.execute_audited(ctx, action, screen, user),
        };
        self.note(ctx, Entry { user, ..Entry::new(Some(action), Some(screen), decision, None) })?;
        Ok(outcome)
    }

    /// Fail closed: the `approved` record reaches the disk before the first input event, and
    /// no event is sent when it cannot be written. The outcome is recorded after the action.
    fn execute_audited(&mut self, ctx: &TurnCtx<'_>, action: &ModelAction, screen: &ScreenAction, user: Option<Decision>) -> Result<Option<Outcome>> {
        let entry = |decision, detail| Entry { user, ..Entry::new(Some(action), Some(screen), decision, detail) };
        self.note(ctx, entry(AuditDecision::Approved, Some("about to execute".into())))?;
        let started = Instant::now();
        let (decision, detail, result) = match execute(&mut *self.actuator, screen, &self.stop) {
            Ok(()) => (AuditDecision::Executed, None, Ok(None)),
            Err(AgentError::Stopped) => (AuditDecision::Stopped, None, Ok(Some(Outcome::Stopped))),
            Err(e) => (AuditDecision::Failed, Some(e.to_string()), Err(e)),
        };
        match self.note(ctx, Entry { action_ms: Some(millis(started)), ..entry(decision, detail) }) {
            Ok(()) => result,
            Err(AgentError::Audit(e)) => Err(AgentError::AuditAfterAction(e)),
            Err(AgentError::Record(e)) => Err(AgentError::RecordAfterAction(e)),
            Err(e) => Err(e),
        }
    }

    /// Writes one audit record and, for a final decision, the recording's action line;
    /// [`AgentError::Audit`] or [`AgentError::Record`] when either cannot be written.
    fn note(&mut self, ctx: &TurnCtx<'_>, e: Entry<'_>) -> Result<()> {
        self.audit(ctx, &e)?;
        let Some(rec) = self.recorder.as_deref_mut() else { return Ok(()) };
        if e.decision == AuditDecision::Approved {
            return Ok(());
        }
        let record = ActionRecord {
            turn: ctx.turn,
            action: to_json(e.action).map_err(AgentError::Record)?,
            screen_action: to_json(e.screen).map_err(AgentError::Record)?,
            detail: e.detail,
            user: e.user,
            decision: e.decision,
            action_ms: e.action_ms,
        };
        rec.action(record).map_err(AgentError::Record)
    }

    /// Writes one record; [`AgentError::Audit`] when it cannot be written.
    fn audit(&mut self, ctx: &TurnCtx<'_>, e: &Entry<'_>) -> Result<()> {
        let (turn, shot, output) = (ctx.turn, ctx.shot, ctx.output);
        let Some(log) = self.audit.as_deref_mut() else { return Ok(()) };
        Ok(log.record(&AuditRecord {
            time: now_rfc3339(),
            turn,
            screenshot_sha256: screenshot_hash(&shot.image),
            model_output: output.to_string(),
            action: e.action.cloned(),
            screen_coordinates: e.screen.map(ScreenAction::points).unwrap_or_default(),
            screen_action: e.screen.cloned(),
            decision: e.decision,
            detail: e.detail.clone(),
        })?)
    }
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
