//! Debug builds only (never in release): replaces the assistant with one that answers a
//! fixed text, so end-to-end tests can drive overlays and actions with known model output,
//! and points tasks' `remote` backend at a test server.

use std::sync::Arc;

use tauri::State;

use screenpilot_desktop::assistant::ScriptedAssistant;

use crate::state::{lock, AppState};

/// Every following question is answered with `text`.
#[tauri::command]
pub fn debug_inject_answer(text: String, state: State<'_, AppState>) {
    state.session.set_assistant(Arc::new(ScriptedAssistant { text }));
}

/// Tasks started with the `remote` backend go to the OpenAI-compatible server at `url` (not
/// saved to the settings file).
#[tauri::command]
pub fn debug_set_backend_url(url: String, state: State<'_, AppState>) {
    lock(&state.settings).backend_url = Some(url);
}
