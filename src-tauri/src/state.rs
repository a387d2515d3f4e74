//! `AppState`: what every command reaches through `State<'_, AppState>`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use screenpilot_agent::{Actuator, AgentError, InputEvent};
use screenpilot_desktop::actions::ActionDesk;
use screenpilot_desktop::download::CancelToken;
use screenpilot_desktop::session::Session;
use screenpilot_desktop::settings::Settings;

/// Shared app state.
pub struct AppState {
    /// Model, capture, conversation.
    pub session: Arc<Session>,
    /// Proposals, decisions, audit.
    pub desk: Arc<Mutex<ActionDesk>>,
    /// Raised by the stop button and the stop hotkey.
    pub stop: Arc<AtomicBool>,
    /// Remembered settings and their file.
    pub settings: Mutex<Settings>,
    /// The settings file.
    pub settings_path: PathBuf,
    /// Where downloads go (hub-style cache).
    pub models_dir: PathBuf,
    /// Where generated HTML pages are saved.
    pub html_dir: PathBuf,
    /// Cancels the running download.
    pub download: Mutex<Option<CancelToken>>,
}

/// Locks, ignoring poisoning (the data stays usable).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Stands in when no input backend could be opened (no display): every event fails.
pub struct NoInput(pub String);

impl Actuator for NoInput {
    fn perform(&mut self, _: &InputEvent) -> screenpilot_agent::Result<()> {
        Err(AgentError::Input(self.0.clone()))
    }
}
