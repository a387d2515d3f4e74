//! Past tasks: every task the app runs is recorded ([`screenpilot_agent::record`]) into its own
//! folder under the tasks folder (`<app data>/tasks/<YYYYMMDD-HHMMSS>-<short id>/`). This
//! module names those folders, lists them newest first with their outcome and number of steps
//! (read back with [`Recording::open`]), and re-checks one with
//! [`screenpilot_agent::replay::replay`] (no input is sent). A task is named by its folder's
//! name, which is checked: no path separators, no leading dot, and it must be a folder right
//! under the tasks folder.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use serde::Serialize;

use screenpilot_agent::audit::{now_rfc3339, AuditDecision};
use screenpilot_agent::model_action::TerminateStatus;
use screenpilot_agent::record::{RecordError, Recorder, Recording, StepLine};
use screenpilot_agent::Outcome;

use crate::error::{DesktopError, Result};

/// Most past tasks [`history`] lists.
pub const MAX_HISTORY: usize = 200;
/// Most differences a [`ReplayCheck`] carries.
pub const MAX_DIFFERENCES: usize = 50;

/// One past task, as the history lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskSummary {
    /// The folder's name: the id `task_replay` takes.
    pub id: String,
    /// When it started (UTC, RFC 3339); empty when the recording cannot be read.
    pub started: String,
    /// The task text.
    pub task: String,
    /// How it ended, as the task's outcome names it (`success`, `rejected`, `stopped`, ...;
    /// `error` when an error ended it, `unfinished` without an outcome line, `unreadable`).
    pub status: String,
    /// The outcome in words (the error, when one ended it).
    pub message: String,
    /// Model turns recorded.
    pub steps: usize,
}

/// What a replay check found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayCheck {
    /// The task's id.
    pub id: String,
    /// Whether the replay does exactly what the recording says.
    pub identical: bool,
    /// Model turns replayed.
    pub steps: usize,
    /// Actions replayed.
    pub actions: usize,
    /// Each difference in words (at most [`MAX_DIFFERENCES`]).
    pub differences: Vec<String>,
}

/// A recorder in a new folder under `tasks_dir` named `<YYYYMMDD-HHMMSS>-<8 hex digits>`.
pub fn new_recorder(tasks_dir: &Path) -> std::result::Result<Recorder, RecordError> {
    let werr = |error| RecordError::Write { path: tasks_dir.to_path_buf(), error };
    std::fs::create_dir_all(tasks_dir).map_err(werr)?;
    let stamp: String = now_rfc3339().chars().filter(char::is_ascii_digit).take(14).collect();
    let (day, time) = stamp.split_at(stamp.len().min(8));
    let state = RandomState::new();
    let mut last = None;
    for attempt in 0u32..8 {
        let mut h = state.build_hasher();
        h.write_u32(attempt);
        h.write_u32(std::process::id());
        let dir = tasks_dir.join(format!("{day}-{time}-{:08x}", h.finish() as u32));
        // create_dir (not create_dir_all): the folder is new, never one reused.
        match std::fs::create_dir(&dir) {
            Ok(()) => return Recorder::new(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(error) => return Err(RecordError::Write { path: dir, error }),
        }
    }
    Err(werr(last.unwrap_or_else(|| std::io::Error::other("no free folder name"))))
}

/// The folder of task `id` under `tasks_dir`, refused unless `id` is a plain folder name
/// (letters, digits, `-`, `_`, `.`; not starting with a dot) of a folder that is there.
pub fn task_dir(tasks_dir: &Path, id: &str) -> Result<PathBuf> {
    let plain = !id.is_empty()
        && id.len() <= 100
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain {
        return Err(DesktopError::InvalidArgument(format!("{id:?} is not a task id")));
    }
    let dir = tasks_dir.join(id);
    // symlink_metadata: a link under the tasks folder is not followed out of it.
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        _ => Err(DesktopError::InvalidArgument(format!("there is no task {id:?}"))),
    }
}

/// The recorded tasks under `tasks_dir`, newest first (at most [`MAX_HISTORY`]); none when
/// the folder does not exist yet. A folder that cannot be read is listed as `unreadable`.
pub fn history(tasks_dir: &Path) -> Result<Vec<TaskSummary>> {
    let entries = match std::fs::read_dir(tasks_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DesktopError::io(tasks_dir, e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect();
    // The names start with the time: newest first.
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.truncate(MAX_HISTORY);
    let mut out: Vec<TaskSummary> = ids.into_iter().map(|id| summary(&tasks_dir.join(&id), id)).collect();
    // Two tasks in one second: the start time (to the millisecond) decides.
    out.sort_by(|a, b| b.started.cmp(&a.started).then_with(|| b.id.cmp(&a.id)));
    Ok(out)
}

fn summary(dir: &Path, id: String) -> TaskSummary {
    let rec = match Recording::open(dir) {
        Ok(r) => r,
        Err(e) => {
            return TaskSummary { id, started: String::new(), task: String::new(), status: "unreadable".into(), message: e.to_string(), steps: 0 }
        }
    };
    let steps = rec.lines.iter().filter(|l| matches!(l, StepLine::Turn(_))).count();
    let last_decision = rec.lines.iter().rev().find_map(|l| match l {
        StepLine::Action(a) => Some(a.decision),
        _ => None,
    });
    let (status, message) = match rec.lines.iter().rev().find_map(|l| match l {
        StepLine::Outcome(o) => Some(o),
        _ => None,
    }) {
        None => ("unfinished".to_string(), "no outcome was recorded (still running, or the app ended first)".to_string()),
        Some(o) => match (&o.outcome, &o.error) {
            (Some(outcome), _) => outcome_words(outcome, rec.task.max_turns == 1, last_decision),
            (None, Some(e)) => ("error".into(), e.clone()),
            (None, None) => ("error".into(), "ended without an outcome".into()),
        },
    };
    TaskSummary { id, started: rec.task.started, task: rec.task.task, status, message, steps }
}

/// The status and words of an outcome, as the task's outcome event names them.
fn outcome_words(o: &Outcome, one_step: bool, last: Option<AuditDecision>) -> (String, String) {
    let (s, m): (&str, &str) = match o {
        Outcome::Terminated(TerminateStatus::Success) => ("success", "done: the model reports success"),
        Outcome::Terminated(_) => ("failure", "the model reports that the task failed"),
        Outcome::Answered(_) => ("answered", "the model answered"),
        Outcome::NoAction(_) => ("no_action", "the model replied without an action"),
        Outcome::RejectedByUser => ("rejected", "you rejected the action"),
        Outcome::ActionsDisabled => ("actions_disabled", "actions were off"),
        Outcome::StepLimitReached => ("step_limit", "the step limit was reached"),
        Outcome::TurnLimitReached if one_step && last == Some(AuditDecision::Executed) => ("done", "the action ran"),
        Outcome::TurnLimitReached if one_step => ("refused", "the action was not run"),
        Outcome::TurnLimitReached => ("turn_limit", "the turn limit was reached"),
        Outcome::Stopped => ("stopped", "stopped"),
        _ => ("ended", "ended"),
    };
    (s.into(), m.into())
}

/// Replays task `id` under `tasks_dir` (no input is sent) and reports the differences.
pub fn replay_check(tasks_dir: &Path, id: &str) -> Result<ReplayCheck> {
    let dir = task_dir(tasks_dir, id)?;
    let report = screenpilot_agent::replay::replay(&dir)?;
    Ok(ReplayCheck {
        id: id.to_string(),
        identical: report.is_identical(),
        steps: report.steps,
        actions: report.actions,
        differences: report.differences.iter().take(MAX_DIFFERENCES).map(ToString::to_string).collect(),
    })
}
