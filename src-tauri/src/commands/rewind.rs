//! Rewind commands: the indicator's status, a question about the last N seconds or about what
//! changed (answers streamed over a channel, like Ask; the conversation is not stored on disk,
//! since rewind keeps the screen in memory only), and saving a clip to a folder the user picked.
//! Recording follows the settings (`rewind.enabled`), applied at start and on every save.

use std::path::PathBuf;

use tauri::ipc::Channel;
use tauri::State;

use screenpilot_desktop::assistant::AskOutcome;
use screenpilot_desktop::rewind::{ask, save, RewindStatus};

use crate::error::{blocking, CmdResult};
use crate::state::{lock, AppState};

/// Whether rewind records, and what it holds.
#[tauri::command]
pub fn rewind_status(state: State<'_, AppState>) -> RewindStatus {
    state.rewind.status()
}

/// Asks `question` about the last `seconds` of the screen.
#[tauri::command]
pub async fn rewind_ask(seconds: f64, question: String, on_token: Channel<String>, state: State<'_, AppState>) -> CmdResult<AskOutcome> {
    let (session, rewind) = (state.session.clone(), state.rewind.clone());
    *lock(&state.thread) = None;
    blocking(move || Ok(ask::ask_recent(&session, &rewind, seconds, &question, &mut |p| drop(on_token.send(p.to_string())))?)).await
}

/// Asks `question` about what changed since the last rewind question.
#[tauri::command]
pub async fn rewind_changed(question: String, on_token: Channel<String>, state: State<'_, AppState>) -> CmdResult<AskOutcome> {
    let (session, rewind) = (state.session.clone(), state.rewind.clone());
    *lock(&state.thread) = None;
    blocking(move || Ok(ask::ask_changed(&session, &rewind, &question, &mut |p| drop(on_token.send(p.to_string())))?)).await
}

/// Writes the last `seconds` into `dir` as PNG frames and clip.json; returns how many frames.
#[tauri::command]
pub async fn rewind_save(seconds: f64, dir: PathBuf, state: State<'_, AppState>) -> CmdResult<usize> {
    let rewind = state.rewind.clone();
    blocking(move || {
        let view = rewind.clip(seconds)?;
        Ok(save::save_clip(&view.clip, &dir)?.len().saturating_sub(1))
    })
    .await
}
