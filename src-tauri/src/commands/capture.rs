//! Capture commands: list monitors and windows, capture one, or cut a region out of the
//! frozen frame. Each returns the image (PNG data URL) and its image → OS mapping.

use base64::Engine;
use serde::Serialize;
use tauri::State;

use screenpilot_agent::Screenshot;
use screenpilot_desktop::screen::{self, GeometryView, MonitorInfo, WindowInfo};
use screenpilot_desktop::DesktopError;

use crate::error::{blocking, CmdResult};
use crate::state::AppState;

/// A capture as the UI shows it.
#[derive(Debug, Serialize)]
pub struct CaptureView {
    /// `data:image/png;base64,...`
    pub png: String,
    /// Image → OS mapping.
    pub geometry: GeometryView,
}

fn view(shot: &Screenshot) -> CmdResult<CaptureView> {
    let png = base64::engine::general_purpose::STANDARD.encode(screen::png_bytes(&shot.image)?);
    Ok(CaptureView { png: format!("data:image/png;base64,{png}"), geometry: screen::geometry_view(&shot.geometry) })
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

/// Captures monitor `index`; it becomes both the capture and the frozen frame for regions.
#[tauri::command]
pub async fn capture_monitor(index: usize, state: State<'_, AppState>) -> CmdResult<CaptureView> {
    if index > 64 {
        return Err(DesktopError::InvalidArgument(format!("monitor index {index}")).into());
    }
    let shot = blocking(move || Ok(screen::capture_monitor(index)?)).await?;
    state.session.set_frozen(shot.clone());
    state.session.set_capture(shot.clone());
    view(&shot)
}

/// Captures a window.
#[tauri::command]
pub async fn capture_window(id: u32, state: State<'_, AppState>) -> CmdResult<CaptureView> {
    let shot = blocking(move || Ok(screen::capture_window(id)?)).await?;
    state.session.set_capture(shot.clone());
    view(&shot)
}

/// Cuts a region (image pixels of the frozen frame) and makes it the capture.
#[tauri::command]
pub fn capture_region(x: f64, y: f64, width: f64, height: f64, state: State<'_, AppState>) -> CmdResult<CaptureView> {
    let frozen = state.session.frozen().ok_or(DesktopError::NoCapture)?;
    let shot = screen::crop(&frozen, x, y, width, height)?;
    state.session.set_capture(shot.clone());
    view(&shot)
}
