//! Capture commands: list monitors and windows, capture one, or cut a region out of the
//! frozen frame. Every capture starts a new stored conversation and becomes the one questions
//! go to; each returns the image (PNG data URL), its image → OS mapping and that conversation.
//! The app's window is hidden while a monitor or window is captured, so that it is never in
//! its own captures; the global hotkey and the tray capture through [`capture_new`] too.

use base64::Engine;
use serde::Serialize;
use tauri::{AppHandle, Manager, State};

use screenpilot_agent::Screenshot;
use screenpilot_desktop::screen::{self, GeometryView, MonitorInfo, WindowInfo};
use screenpilot_desktop::task_parts::AppWindow;
use screenpilot_desktop::threads::ThreadSummary;
use screenpilot_desktop::DesktopError;

use crate::error::{blocking, CmdResult};
use crate::state::{lock, AppState};

/// A capture as the UI shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureView {
    /// `data:image/png;base64,...`
    pub png: String,
    /// Image → OS mapping.
    pub geometry: GeometryView,
    /// The conversation this capture started (None only if it could not be stored).
    pub thread: Option<ThreadSummary>,
}

/// `data:image/png;base64,...` of `png`.
pub fn data_url(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png))
}

/// What to capture.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Monitor by index.
    Monitor(usize),
    /// Window by xcap id.
    Window(u32),
}

/// Runs `capture` with the main window hidden (shown again afterwards, whatever happened).
fn without_window<T>(state: &AppState, capture: impl FnOnce() -> screenpilot_desktop::Result<T>) -> CmdResult<T> {
    let was_visible = state.window.0.is_visible().unwrap_or(true);
    if was_visible {
        state.window.hide()?;
        // Compositors may fade a window out after it is unmapped.
        std::thread::sleep(std::time::Duration::from_millis(if cfg!(target_os = "linux") { 60 } else { 250 }));
    }
    let out = capture();
    state.window.show()?;
    Ok(out.map_err(|e| screen::with_capture_help(e, screen::Platform::current(std::env::var_os("WAYLAND_DISPLAY").is_some())))?)
}

/// Makes `shot` the capture questions are about, in a new stored conversation named `source`.
pub fn start_conversation(state: &AppState, shot: Screenshot, source: &str) -> CmdResult<CaptureView> {
    let png = screen::png_bytes(&shot.image)?;
    // A capture that cannot be stored (full disk) can still be asked about.
    let thread = match state.threads.create(&shot, source, screenpilot_desktop::threads::now_ms()) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("screenpilot: cannot store the conversation: {e}");
            None
        }
    };
    *lock(&state.thread) = thread.as_ref().map(|t| t.id.clone());
    let geometry = screen::geometry_view(&shot.geometry);
    state.session.set_capture(shot);
    Ok(CaptureView { png: data_url(&png), geometry, thread })
}

/// Captures `source` with the window hidden and starts a conversation about it. Blocking: call
/// it off the main thread (hiding waits for the event loop there).
pub fn capture_new(state: &AppState, source: Source) -> CmdResult<CaptureView> {
    let (shot, name) = match source {
        Source::Monitor(index) => {
            let shot = without_window(state, || screen::capture_monitor(index))?;
            state.monitor.store(index, std::sync::atomic::Ordering::Relaxed);
            state.session.set_frozen(shot.clone());
            let name = shot.geometry.monitor.name.clone();
            (shot, name)
        }
        Source::Window(id) => {
            let title = screen::windows().ok().and_then(|ws| ws.into_iter().find(|w| w.id == id)).map(|w| w.title);
            (without_window(state, || screen::capture_window(id))?, title.unwrap_or_else(|| "a window".into()))
        }
    };
    start_conversation(state, shot, &name)
}

/// Every monitor.
#[tauri::command]
pub async fn monitors_list() -> CmdResult<Vec<MonitorInfo>> {
    blocking(|| Ok(screen::monitors()?)).await
}

/// Every titled window.
#[tauri::command]
pub async fn windows_list() -> CmdResult<Vec<WindowInfo>> {
    blocking(|| Ok(screen::windows()?)).await
}

/// Captures monitor `index`; it also becomes the frozen frame regions are dragged on.
#[tauri::command]
pub async fn capture_monitor(index: usize, app: AppHandle) -> CmdResult<CaptureView> {
    if index > 64 {
        return Err(DesktopError::InvalidArgument(format!("monitor index {index}")).into());
    }
    blocking(move || capture_new(&app.state::<AppState>(), Source::Monitor(index))).await
}

/// Captures a window.
#[tauri::command]
pub async fn capture_window(id: u32, app: AppHandle) -> CmdResult<CaptureView> {
    blocking(move || capture_new(&app.state::<AppState>(), Source::Window(id))).await
}

/// Cuts a region (image pixels of the frozen frame) and makes it the capture.
#[tauri::command]
pub fn capture_region(x: f64, y: f64, width: f64, height: f64, state: State<'_, AppState>) -> CmdResult<CaptureView> {
    let frozen = state.session.frozen().ok_or(DesktopError::NoCapture)?;
    let shot = screen::crop(&frozen, x, y, width, height)?;
    start_conversation(&state, shot, "a region")
}
