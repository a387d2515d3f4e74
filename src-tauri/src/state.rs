//! `AppState`: what every command reaches through `State<'_, AppState>`, and the app's window
//! as captures and task mode hide and show it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use screenpilot_desktop::assistant::Assistant;
use screenpilot_desktop::catalog::DeviceMemory;
use screenpilot_desktop::download::CancelToken;
use screenpilot_desktop::session::Session;
use screenpilot_desktop::settings::Settings;
use screenpilot_desktop::threads::ThreadStore;
use screenpilot_desktop::task_parts::AppWindow;
use screenpilot_desktop::task_runner::TaskRunner;
use screenpilot_desktop::DesktopError;

/// Shared app state.
pub struct AppState {
    /// Model, capture, conversation. Its assistant is the local model or the server, as chosen.
    pub session: Arc<Session>,
    /// The loaded local model, kept while the server answers questions (tasks may still use it).
    pub local: Mutex<Option<Arc<dyn Assistant>>>,
    /// Tasks (and the one-step "Act" on an answer), their decisions and the audit log.
    pub tasks: Arc<TaskRunner>,
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
    /// The stored conversations (one per capture).
    pub threads: Arc<ThreadStore>,
    /// The conversation questions go to (the last capture's, or the one opened from the list).
    pub thread: Mutex<Option<String>>,
    /// The data folder in use (settings.data_dir, or the platform's app data folder).
    pub data_dir: PathBuf,
    /// The last page "To HTML" saved (what "Save…" copies).
    pub last_page: Mutex<Option<PathBuf>>,
    /// GPU and RAM the model list marks fits against (detected, or `SCREENPILOT_FAKE_MEMORY`).
    pub memory: DeviceMemory,
    /// The monitor of the last capture (what the hotkey and the tray capture).
    pub monitor: std::sync::atomic::AtomicUsize,
    /// The main window (captures hide it so that it is never in them).
    pub window: Arc<MainWindow>,
    /// The MCP server (Settings → MCP).
    pub mcp: crate::mcp::McpHost,
    /// Rewind: the recent screen in memory while Settings → Rewind is on.
    pub rewind: Arc<screenpilot_desktop::rewind::Rewind>,
}

/// Locks, ignoring poisoning (the data stays usable).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The main window. Called from task threads only: hiding waits for the event loop (on the
/// main thread) to have handled the request, so it must never be called from there.
pub struct MainWindow(pub tauri::WebviewWindow);

fn window_err(e: tauri::Error) -> DesktopError {
    DesktopError::Window(e.to_string())
}

impl AppWindow for MainWindow {
    fn hide(&self) -> screenpilot_desktop::Result<()> {
        self.0.hide().map_err(window_err)?;
        // A getter is answered by the event loop after the hide request queued before it,
        // so when it returns the window has been unmapped.
        if self.0.is_visible().map_err(window_err)? {
            return Err(DesktopError::Window("the window is still visible after hiding it".into()));
        }
        Ok(())
    }

    fn show(&self) -> screenpilot_desktop::Result<()> {
        self.0.show().map_err(window_err)?;
        // Enter and Esc decide a proposal: the window needs the keyboard back.
        let _ = self.0.set_focus();
        Ok(())
    }
}
