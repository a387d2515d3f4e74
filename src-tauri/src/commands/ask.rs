//! Ask commands: a question about the capture with the answer streamed over a channel,
//! cancelling, and the grounding overlay of an answer.

use tauri::ipc::Channel;
use tauri::State;

use screenpilot_desktop::assistant::AskOutcome;
use screenpilot_desktop::overlay::{self, OverlayShape};
use screenpilot_desktop::DesktopError;

use crate::error::{blocking, CmdResult};
use crate::state::AppState;

/// Asks `question` about the current capture; pieces of the answer go to `on_token`.
/// A second ask cancels the running one (see screenpilot_desktop::session).
#[tauri::command]
pub async fn ask(question: String, on_token: Channel<String>, state: State<'_, AppState>) -> CmdResult<AskOutcome> {
    let session = state.session.clone();
    blocking(move || Ok(session.ask(&question, &mut |p| drop(on_token.send(p.to_string())))?)).await
}

/// Cancels the running question.
#[tauri::command]
pub fn ask_cancel(state: State<'_, AppState>) {
    state.session.cancel();
}

/// The boxes and points in `text`, mapped onto the current capture (empty if none).
#[tauri::command]
pub fn overlay(text: String, state: State<'_, AppState>) -> CmdResult<Vec<OverlayShape>> {
    let shot = state.session.capture().ok_or(DesktopError::NoCapture)?;
    match overlay::shapes(&text, &shot.geometry) {
        Ok(s) => Ok(s),
        Err(DesktopError::Agent(screenpilot_agent::AgentError::NotFound { .. })) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}
