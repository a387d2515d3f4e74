//! Debug builds only (never in release): replaces the assistant with one that answers a
//! fixed text, so end-to-end tests can drive overlays and actions with known model output.

use std::sync::Arc;

use tauri::State;

use screenpilot_desktop::assistant::ScriptedAssistant;

use crate::state::AppState;

/// Every following question is answered with `text`.
#[tauri::command]
pub fn debug_inject_answer(text: String, state: State<'_, AppState>) {
    state.session.set_assistant(Arc::new(ScriptedAssistant { text }));
}
