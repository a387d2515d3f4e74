//! Conversation commands: list the stored conversations, open one (its capture becomes the
//! capture questions are about, its exchanges the history follow-ups see), delete one or all.

use serde::Serialize;
use tauri::State;

use screenpilot_desktop::screen::{self, GeometryView};
use screenpilot_desktop::threads::{ThreadSummary, Turn};

use crate::commands::capture::data_url;
use crate::error::{blocking, CmdResult};
use crate::state::{lock, AppState};

/// A stored conversation as the UI shows it.
#[derive(Debug, Serialize)]
pub struct ThreadView {
    /// Title, source, times, size.
    pub summary: ThreadSummary,
    /// Questions and answers in order.
    pub turns: Vec<Turn>,
    /// The capture, `data:image/png;base64,...`.
    pub png: String,
    /// Its image → OS mapping.
    pub geometry: GeometryView,
}

/// Every stored conversation, most recently used first.
#[tauri::command]
pub async fn threads_list(state: State<'_, AppState>) -> CmdResult<Vec<ThreadSummary>> {
    let threads = state.threads.clone();
    blocking(move || Ok(threads.list())).await
}

/// Opens conversation `id`: questions now go to it, about its capture.
#[tauri::command]
pub async fn thread_open(id: String, state: State<'_, AppState>) -> CmdResult<ThreadView> {
    let threads = state.threads.clone();
    let i = id.clone();
    let (thread, (shot, png)) = blocking(move || Ok((threads.load(&i)?, threads.capture(&i)?))).await?;
    let geometry = screen::geometry_view(&shot.geometry);
    state.session.restore(shot.clone(), thread.exchanges());
    state.session.set_frozen(shot);
    *lock(&state.thread) = Some(id);
    Ok(ThreadView { summary: thread.summary, turns: thread.turns, png: data_url(&png), geometry })
}

/// Deletes conversation `id` (and its capture) from disk.
#[tauri::command]
pub async fn thread_delete(id: String, state: State<'_, AppState>) -> CmdResult<()> {
    let threads = state.threads.clone();
    let i = id.clone();
    blocking(move || Ok(threads.delete(&i)?)).await?;
    let mut current = lock(&state.thread);
    if current.as_deref() == Some(id.as_str()) {
        *current = None;
    }
    Ok(())
}

/// Deletes every stored conversation; how many there were.
#[tauri::command]
pub async fn threads_clear(state: State<'_, AppState>) -> CmdResult<usize> {
    let threads = state.threads.clone();
    let n = blocking(move || Ok(threads.delete_all()?)).await?;
    *lock(&state.thread) = None;
    Ok(n)
}
