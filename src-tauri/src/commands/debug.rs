//! Debug builds only (never in release): replaces the assistant with one that answers a
//! fixed text, so end-to-end tests can drive overlays and actions with known model output;
//! points tasks' `remote` backend at a test server; presses a tray menu item (a test display
//! has no tray to click); hides the window as the tray does.

use std::sync::Arc;

use tauri::{AppHandle, State};

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

/// Does what the tray menu item `id` does.
#[tauri::command]
pub fn debug_tray(id: String, app: AppHandle) {
    crate::tray::handle(&app, &id);
}

/// Hides the main window (as the tray's "Show or hide" does when it is shown).
#[tauri::command]
pub fn debug_hide_window(state: State<'_, AppState>) -> crate::CmdResult<()> {
    state.window.0.hide()?;
    Ok(())
}
