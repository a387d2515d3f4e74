//! Action commands: turn actions on/off, propose the action in a model answer, accept or
//! reject it, stop, and read the audit log.

use std::sync::atomic::Ordering;

use tauri::State;

use screenpilot_desktop::actions::{Outcome, ProposalView};
use screenpilot_desktop::DesktopError;

use crate::error::{blocking, CmdResult};
use crate::state::{lock, AppState};

/// Turns actions on or off (off at start).
#[tauri::command]
pub fn actions_set_enabled(on: bool, state: State<'_, AppState>) -> bool {
    lock(&state.desk).set_enabled(on);
    on
}

/// The first `computer_use` action in `text`, mapped onto the current capture, or none.
#[tauri::command]
pub fn action_propose(text: String, state: State<'_, AppState>) -> CmdResult<Option<ProposalView>> {
    let shot = state.session.capture().ok_or(DesktopError::NoCapture)?;
    match lock(&state.desk).propose(&text, shot) {
        Ok(v) => Ok(Some(v)),
        Err(DesktopError::Agent(screenpilot_agent::AgentError::NotFound { .. })) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Accepts (runs, if actions are on) or rejects the proposed action.
#[tauri::command]
pub async fn action_decide(accept: bool, state: State<'_, AppState>) -> CmdResult<Outcome> {
    let desk = state.desk.clone();
    blocking(move || Ok(lock(&desk).decide(accept)?)).await
}

/// Stops the running action (the stop button; Ctrl+Shift+X does the same).
#[tauri::command]
pub fn actions_stop(state: State<'_, AppState>) {
    state.stop.store(true, Ordering::SeqCst);
}

/// The audit log: its path and its last 200 lines.
#[tauri::command]
pub fn audit_read(state: State<'_, AppState>) -> CmdResult<(String, Vec<String>)> {
    let path = lock(&state.desk).audit_path().to_path_buf();
    let text = std::fs::read_to_string(&path).map_err(|e| DesktopError::io(&path, e))?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let tail = lines[lines.len().saturating_sub(200)..].to_vec();
    Ok((path.display().to_string(), tail))
}
