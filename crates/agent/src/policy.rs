//! Who may act and when: actions are off until the user opts in; every action is
//! confirmed through a [`Confirmer`] by default; the "auto" mode exists only with a step
//! limit (default 15) and a rate limit, and still asks the user about the actions listed in
//! [`crate::sensitive`] (closing windows, locking, logging out, deleting, typed line breaks).
//! `Wait` has no side effects and is never gated.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::actuator::StopFlag;
use crate::coords::MonitorGeometry;
use crate::error::Result;
use crate::model_action::ModelAction;
use crate::screen_action::ScreenAction;
use crate::sensitive::always_asks;

/// Default step limit of the auto mode.
pub const DEFAULT_AUTO_STEPS: u32 = 15;
/// Default minimum time between two automatic actions.
pub const DEFAULT_AUTO_INTERVAL: Duration = Duration::from_millis(500);

/// Limits of the auto mode; cannot exist without a step limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoLimits {
    max_steps: u32,
    min_interval: Duration,
}

impl AutoLimits {
    /// At most `max_steps` actions (at least 1), at least `min_interval` apart.
    pub fn new(max_steps: u32, min_interval: Duration) -> Self {
        Self { max_steps: max_steps.max(1), min_interval }
    }

    /// The step limit.
    pub fn max_steps(&self) -> u32 {
        self.max_steps
    }

    /// The rate limit: minimum time between actions.
    pub fn min_interval(&self) -> Duration {
        self.min_interval
    }
}

impl Default for AutoLimits {
    fn default() -> Self {
        Self::new(DEFAULT_AUTO_STEPS, DEFAULT_AUTO_INTERVAL)
    }
}

/// How actions are approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Ask the [`Confirmer`] before every action (default).
    #[default]
    ConfirmEach,
    /// Run without asking, within the limits.
    Auto(AutoLimits),
}

/// The user's settings. The default has actions switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// The user opted in to the agent acting at all.
    pub actions_enabled: bool,
    /// How actions are approved.
    pub mode: Mode,
}

/// What the confirmer is asked about.
#[derive(Debug, Clone, Copy)]
pub struct ConfirmRequest<'a> {
    /// What the model wrote.
    pub model_action: &'a ModelAction,
    /// What would be executed (OS coordinates).
    pub action: &'a ScreenAction,
    /// The monitor it would happen on.
    pub monitor: &'a MonitorGeometry,
}

/// The user's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Go ahead.
    Approve,
    /// Do not do it.
    Reject,
}

impl ConfirmRequest<'_> {
    /// Why this action is asked about even in the auto mode ([`always_asks`]); a dialog
    /// shows it. `None` for ordinary actions.
    pub fn always_asks(&self) -> Option<&'static str> {
        always_asks(self.action)
    }
}

/// Asks the user to confirm an action (a dialog in the app; fakes in tests).
pub trait Confirmer {
    /// The user's decision about one action.
    fn confirm(&mut self, request: &ConfirmRequest<'_>) -> Decision;
}

/// A confirmer that always gives the same answer.
#[derive(Debug, Clone, Copy)]
pub struct FixedConfirmer(pub Decision);

impl Confirmer for FixedConfirmer {
    fn confirm(&mut self, _: &ConfirmRequest<'_>) -> Decision {
        self.0
    }
}

/// The gate's verdict on one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Execute it.
    Approved,
    /// The user said no.
    RejectedByUser,
    /// The user has not opted in.
    ActionsDisabled,
    /// The auto mode's step limit is used up.
    StepLimitReached,
}

/// Applies a [`Policy`] to a sequence of actions (counts steps, enforces the rate).
#[derive(Debug)]
pub struct Gate {
    policy: Policy,
    steps: u32,
    last: Option<Instant>,
}

impl Gate {
    /// A gate for one task.
    pub fn new(policy: Policy) -> Self {
        Self { policy, steps: 0, last: None }
    }

    /// Actions approved so far.
    pub fn steps_taken(&self) -> u32 {
        self.steps
    }

    /// Decides about one action. In auto mode the step limit is checked first, then an
    /// action of [`always_asks`] goes to the `confirmer` (a reject is
    /// [`Verdict::RejectedByUser`]), then it waits (stoppably) for the rate limit.
    pub fn authorize(&mut self, req: &ConfirmRequest<'_>, confirmer: &mut dyn Confirmer, stop: &StopFlag) -> Result<Verdict> {
        if !req.action.has_side_effects() {
            return Ok(Verdict::Approved);
        }
        if !self.policy.actions_enabled {
            return Ok(Verdict::ActionsDisabled);
        }
        match self.policy.mode {
            Mode::ConfirmEach => {
                if confirmer.confirm(req) == Decision::Reject {
                    return Ok(Verdict::RejectedByUser);
                }
            }
            Mode::Auto(limits) => {
                if self.steps >= limits.max_steps {
                    return Ok(Verdict::StepLimitReached);
                }
                if always_asks(req.action).is_some() && confirmer.confirm(req) == Decision::Reject {
                    return Ok(Verdict::RejectedByUser);
                }
                if let Some(last) = self.last {
                    stop.sleep(limits.min_interval.saturating_sub(last.elapsed()))?;
                }
            }
        }
        stop.check()?;
        self.steps += 1;
        self.last = Some(Instant::now());
        Ok(Verdict::Approved)
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
