//! Task commands: start a task on the local model or the configured server, decide a proposal
//! by its id, stop, act on the last answer (a task of one step), turn actions on or off, and
//! read the audit log as a table; list the recorded tasks and replay-check one; calibrate the
//! pointer on every monitor. Everything that may block runs off the main thread: a task's
//! thread hides and shows the window through the event loop there.

use tauri::State;

use screenpilot_agent::calibrate::{native_captures, MonitorReport};
use screenpilot_agent::enigo_backend::EnigoActuator;
use screenpilot_agent::xcap_backend::{MonitorChoice, XcapCapture};
use screenpilot_agent::{parse_tool_calls, ModelAction, ScriptedBrain};
use screenpilot_desktop::audit_table::AuditRow;
use screenpilot_desktop::task_history::{ReplayCheck, TaskSummary};
use screenpilot_desktop::task::connect_remote;
use screenpilot_desktop::task_parts::UiDecision;
use screenpilot_desktop::task_runner::{TaskModel, TaskScreen, TaskSpec, AUDIT_ROWS};
use screenpilot_desktop::DesktopError;

use crate::error::{blocking, CmdResult};
use crate::state::{lock, AppState};

/// Turns actions on or off (off at start); tasks started afterwards follow it.
#[tauri::command]
pub fn actions_set_enabled(on: bool, state: State<'_, AppState>) -> bool {
    state.tasks.set_actions_enabled(on);
    on
}

/// Starts `task` on monitor `monitor` with `backend` (`local`: the loaded model, through the
/// engine the questions use; `remote`: the configured server); returns the task's id. Its
/// steps, proposals and outcome arrive as `task` events.
#[tauri::command]
pub async fn task_start(task: String, backend: String, monitor: usize, state: State<'_, AppState>) -> CmdResult<u64> {
    if monitor > 64 {
        return Err(DesktopError::InvalidArgument(format!("monitor index {monitor}")).into());
    }
    let model = match backend.as_str() {
        "local" => TaskModel::Local(lock(&state.local).as_ref().and_then(|a| a.engine()).ok_or(DesktopError::NoModel)?),
        "remote" => {
            let (url, model, key) = {
                let s = lock(&state.settings);
                (s.backend_url.clone(), s.backend_model.clone(), crate::commands::model::api_key(&s))
            };
            let url = url.ok_or_else(|| DesktopError::InvalidArgument("no server is configured: set its URL in Settings".into()))?;
            TaskModel::Backend(blocking(move || Ok(connect_remote(&url, model, key)?)).await?)
        }
        other => return Err(DesktopError::InvalidArgument(format!("unknown backend {other:?}")).into()),
    };
    let screen = TaskScreen::Live(Box::new(XcapCapture { monitor: MonitorChoice::Index(monitor), region: None }));
    let tasks = state.tasks.clone();
    blocking(move || Ok(tasks.start(TaskSpec { task, model, screen, one_step: false })?)).await
}

/// The decision on proposal `proposal` of the running task (`"accept"`, `"reject"`, or
/// `{"auto": N}`: this and the next proposals up to N actions, except those that always ask).
#[tauri::command]
pub async fn task_decide(proposal: u64, decision: UiDecision, state: State<'_, AppState>) -> CmdResult<()> {
    let tasks = state.tasks.clone();
    blocking(move || Ok(tasks.decide(proposal, decision)?)).await
}

/// Stops the running task (the Stop button; Ctrl+Shift+X does the same); its id, if any.
#[tauri::command]
pub async fn task_stop(state: State<'_, AppState>) -> CmdResult<Option<u64>> {
    let tasks = state.tasks.clone();
    blocking(move || Ok(tasks.stop())).await
}

/// Whether `answer` holds an action to propose (not only `terminate` / `answer`); a call that
/// does not parse counts, so that its refusal is audited.
fn has_action(answer: &str) -> bool {
    match parse_tool_calls(answer) {
        Ok(actions) => actions.iter().any(|a| !matches!(a, ModelAction::Terminate { .. } | ModelAction::Answer { .. })),
        Err(_) => answer.contains("<tool_call>"),
    }
}

/// "Act": when the last answer about the capture holds a `computer_use` action, runs it as a
/// task of one step on that capture (the proposal and the decision go as for any task);
/// returns the task's id, or None when the answer holds no action. The action is read here,
/// from the session's conversation: the web view names no text to act on.
#[tauri::command]
pub async fn act_on_answer(state: State<'_, AppState>) -> CmdResult<Option<u64>> {
    let shot = state.session.capture().ok_or(DesktopError::NoCapture)?;
    let Some(answer) = state.session.history().last().map(|e| e.answer.clone()) else { return Ok(None) };
    if !has_action(&answer) {
        return Ok(None);
    }
    let spec = TaskSpec {
        task: "Carry out the action in the answer.".into(),
        model: TaskModel::Brain(Box::new(ScriptedBrain::new([answer]))),
        screen: TaskScreen::Fixed(shot),
        one_step: true,
    };
    let tasks = state.tasks.clone();
    blocking(move || Ok(Some(tasks.start(spec)?))).await
}

/// The audit log: its path and its last records as table rows.
#[tauri::command]
pub async fn audit_read(state: State<'_, AppState>) -> CmdResult<(String, Vec<AuditRow>)> {
    let tasks = state.tasks.clone();
    blocking(move || Ok((tasks.audit_path().display().to_string(), tasks.audit_rows(AUDIT_ROWS)?))).await
}

/// The recorded tasks, newest first: id (folder name), start time, text, outcome, steps.
#[tauri::command]
pub async fn task_history(state: State<'_, AppState>) -> CmdResult<Vec<TaskSummary>> {
    let tasks = state.tasks.clone();
    blocking(move || Ok(tasks.history()?)).await
}

/// Replays recorded task `id` (its folder's name; checked) without sending input: identical,
/// or the differences.
#[tauri::command]
pub async fn task_replay(id: String, state: State<'_, AppState>) -> CmdResult<ReplayCheck> {
    let tasks = state.tasks.clone();
    blocking(move || Ok(tasks.replay_check(&id)?)).await
}

/// The calibration self-test on every monitor (the pointer is moved to five targets and read
/// back; nothing is clicked), the window hidden meanwhile: per monitor the max and mean error
/// in pixels. Refused unless "Allow actions" is on.
#[tauri::command]
pub async fn calibrate(state: State<'_, AppState>) -> CmdResult<Vec<MonitorReport>> {
    let tasks = state.tasks.clone();
    blocking(move || {
        if !tasks.actions_enabled() {
            return Err(DesktopError::InvalidArgument("calibration moves the pointer: tick \"Allow actions\" first".into()).into());
        }
        let monitors = XcapCapture::monitors().map_err(DesktopError::from)?;
        let geometries = native_captures(monitors).map_err(DesktopError::from)?;
        let mut reader = EnigoActuator::new().map_err(DesktopError::from)?;
        Ok(tasks.calibrate(&geometries, &mut reader)?)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::has_action;

    #[test]
    fn only_answers_with_an_action_start_a_one_step_task() {
        let call = |args: &str| format!("<tool_call>\n{{\"name\": \"computer_use\", \"arguments\": {args}}}\n</tool_call>");
        assert!(has_action(&call(r#"{"action": "left_click", "coordinate": [1, 2]}"#)));
        assert!(!has_action(&call(r#"{"action": "terminate", "status": "success"}"#)));
        assert!(!has_action("Just text, no call."));
        assert!(has_action("<tool_call>{not json</tool_call>"));
    }
}
