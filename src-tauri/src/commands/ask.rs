//! Ask commands: a question about the capture with the answer streamed over a channel (and
//! stored with the conversation), cancelling, and the grounding overlay of an answer.

use tauri::ipc::Channel;
use tauri::State;

use screenpilot_desktop::assistant::AskOutcome;
use screenpilot_desktop::overlay::{self, OverlayShape};
use screenpilot_desktop::threads::{now_ms, Turn};
use screenpilot_desktop::DesktopError;

use crate::error::{blocking, CmdResult};
use crate::state::{lock, AppState};

/// Asks `question` about the current capture; pieces of the answer go to `on_token`. The
/// finished (or stopped) answer is stored with the conversation the question went to, then
/// the conversations over the size cap are dropped (never the open one).
/// A second ask cancels the running one (see screenpilot_desktop::session).
#[tauri::command]
pub async fn ask(question: String, on_token: Channel<String>, state: State<'_, AppState>) -> CmdResult<AskOutcome> {
    let session = state.session.clone();
    let thread = lock(&state.thread).clone();
    let q = question.clone();
    let out = blocking(move || Ok(session.ask(&q, &mut |p| drop(on_token.send(p.to_string())))?)).await?;
    if let Some(id) = thread {
        let timings = serde_json::json!({ "timings": out.timings, "cache": out.cache });
        let turn = Turn { question: question.trim().to_string(), answer: out.text.clone(), cancelled: out.cancelled, at_ms: now_ms(), timings };
        let (threads, settings) = (state.threads.clone(), lock(&state.settings).clone());
        let stored = blocking(move || {
            threads.append(&id, turn)?;
            threads.enforce_limits(&settings, now_ms(), Some(&id))?;
            Ok(())
        })
        .await;
        // The answer is shown whatever happens to its copy on disk.
        if let Err(e) = stored {
            eprintln!("screenpilot: cannot store the answer: {e}");
        }
    }
    Ok(out)
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
