//! The tray icon: Capture (the chosen monitor, window hidden, then shown with the new
//! conversation), Stop (the running task), Show or hide the window, Quit. Where the desktop has
//! no tray (or no status-notifier host), the app runs without it: the window and the global
//! hotkeys do everything the tray does. While rewind records, the tray's tooltip and the
//! window's title say so ([`show_rewind`]), beside the sidebar's chip.

use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager};

use crate::hotkeys;

/// What a tray menu item does; the ids are the menu items' ids.
pub fn handle(app: &AppHandle, id: &str) {
    match id {
        "capture" => hotkeys::capture_and_show(app),
        "stop" => hotkeys::stop(app),
        "toggle" => {
            if let Some(w) = app.get_webview_window("main") {
                if w.is_visible().unwrap_or(false) {
                    let _ = w.hide();
                } else {
                    let _ = w.show();
                    let _ = w.unminimize();
                    let _ = w.set_focus();
                }
            }
        }
        "quit" => app.exit(0),
        _ => {}
    }
}

/// The window title (and tray tooltip) while rewind records.
pub const RECORDING_TITLE: &str = "ScreenPilot · Rewind recording";

/// Shows in the window title and the tray tooltip whether rewind records: the sidebar chip is
/// out of sight while the window is hidden or another view scrolls it away.
pub fn show_rewind(app: &AppHandle, recording: bool) {
    let title = if recording { RECORDING_TITLE } else { "ScreenPilot" };
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.set_title(title);
    }
    if let Some(tray) = app.tray_by_id("main") {
        let _ = tray.set_tooltip(Some(title));
    }
}

/// Builds the tray icon with the app's icon.
pub fn build(app: &AppHandle) -> tauri::Result<()> {
    let item = |id: &str, label: &str| MenuItem::with_id(app, id, label, true, None::<&str>);
    let menu = Menu::with_items(
        app,
        &[
            &item("capture", "Capture screen")?,
            &item("stop", "Stop")?,
            &PredefinedMenuItem::separator(app)?,
            &item("toggle", "Show or hide ScreenPilot")?,
            &item("quit", "Quit ScreenPilot")?,
        ],
    )?;
    let mut tray = TrayIconBuilder::with_id("main").tooltip("ScreenPilot").menu(&menu).on_menu_event(|app, ev| handle(app, ev.id().as_ref()));
    if let Some(icon) = app.default_window_icon() {
        tray = tray.icon(icon.clone());
    }
    tray.build(app)?;
    Ok(())
}
