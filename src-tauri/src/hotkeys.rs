//! The global hotkeys (capture, stop), as the settings name them: registered at start and again
//! when the settings change. They work with the window hidden: capture runs in the backend
//! ([`crate::commands::capture::capture_new`]) and shows the window with the new conversation.

use std::sync::Mutex;

use tauri::{AppHandle, Emitter, Manager};
use tauri_plugin_global_shortcut::{Code, GlobalShortcutExt, Modifiers, Shortcut, ShortcutState};

use screenpilot_desktop::settings::{parse_hotkey, FieldError, Hotkey, Settings};

use crate::commands::capture::{capture_new, Source};
use crate::state::{lock, AppState};

/// The shortcuts registered now.
#[derive(Default)]
pub struct Registered {
    capture: Mutex<Option<Shortcut>>,
    stop: Mutex<Option<Shortcut>>,
}

fn code(key: &str) -> Option<Code> {
    let k = key.to_ascii_uppercase();
    let letters = [
        Code::KeyA, Code::KeyB, Code::KeyC, Code::KeyD, Code::KeyE, Code::KeyF, Code::KeyG, Code::KeyH, Code::KeyI, Code::KeyJ, Code::KeyK, Code::KeyL, Code::KeyM,
        Code::KeyN, Code::KeyO, Code::KeyP, Code::KeyQ, Code::KeyR, Code::KeyS, Code::KeyT, Code::KeyU, Code::KeyV, Code::KeyW, Code::KeyX, Code::KeyY, Code::KeyZ,
    ];
    let digits = [Code::Digit0, Code::Digit1, Code::Digit2, Code::Digit3, Code::Digit4, Code::Digit5, Code::Digit6, Code::Digit7, Code::Digit8, Code::Digit9];
    let fkeys = [
        Code::F1, Code::F2, Code::F3, Code::F4, Code::F5, Code::F6, Code::F7, Code::F8, Code::F9, Code::F10, Code::F11, Code::F12,
        Code::F13, Code::F14, Code::F15, Code::F16, Code::F17, Code::F18, Code::F19, Code::F20, Code::F21, Code::F22, Code::F23, Code::F24,
    ];
    let b = k.as_bytes();
    match (k.as_str(), b.len()) {
        ("SPACE", _) => Some(Code::Space),
        (_, 1) if b[0].is_ascii_uppercase() => Some(letters[usize::from(b[0] - b'A')]),
        (_, 1) if b[0].is_ascii_digit() => Some(digits[usize::from(b[0] - b'0')]),
        _ => k.strip_prefix('F').and_then(|n| n.parse::<usize>().ok()).filter(|n| (1..=24).contains(n)).map(|n| fkeys[n - 1]),
    }
}

/// The shortcut of a parsed hotkey.
pub fn shortcut(h: &Hotkey) -> Option<Shortcut> {
    let mut m = Modifiers::empty();
    for (on, flag) in [(h.ctrl, Modifiers::CONTROL), (h.shift, Modifiers::SHIFT), (h.alt, Modifiers::ALT), (h.meta, Modifiers::SUPER)] {
        if on {
            m |= flag;
        }
    }
    Some(Shortcut::new(if m.is_empty() { None } else { Some(m) }, code(&h.key)?))
}

fn parse(field: &str, text: &str) -> Result<Shortcut, FieldError> {
    let err = |message: String| FieldError { field: field.into(), message };
    let h = parse_hotkey(text).map_err(err)?;
    shortcut(&h).ok_or_else(|| err(format!("{text} cannot be a global hotkey")))
}

/// Registers the settings' hotkeys in place of the current ones. A hotkey that does not parse
/// or that another program holds is a field error; then the previous hotkeys stay registered.
pub fn apply(app: &AppHandle, s: &Settings) -> Result<(), Vec<FieldError>> {
    let capture = parse("hotkey_capture", &s.hotkey_capture);
    let stop = parse("hotkey_stop", &s.hotkey_stop);
    let (capture, stop) = match (capture, stop) {
        (Ok(c), Ok(s)) => (c, s),
        (c, s) => return Err([c.err(), s.err()].into_iter().flatten().collect()),
    };
    let reg = app.state::<Registered>();
    let gs = app.global_shortcut();
    let old = [lock(&reg.capture).take(), lock(&reg.stop).take()];
    for s in old.iter().flatten() {
        let _ = gs.unregister(*s);
    }
    let mut errors = Vec::new();
    for (field, s) in [("hotkey_capture", capture), ("hotkey_stop", stop)] {
        if let Err(e) = gs.register(s) {
            errors.push(FieldError { field: field.into(), message: format!("cannot register it (another program may use it): {e}") });
        }
    }
    if errors.is_empty() {
        *lock(&reg.capture) = Some(capture);
        *lock(&reg.stop) = Some(stop);
        return Ok(());
    }
    let _ = gs.unregister_all();
    for s in old.iter().flatten() {
        let _ = gs.register(*s);
    }
    *lock(&reg.capture) = old[0];
    *lock(&reg.stop) = old[1];
    Err(errors)
}

/// Captures the monitor captured last (the first at start) in the backend (window hidden
/// meanwhile), then shows the window
/// with the new conversation (`captured` event; a failure comes as `capture-failed`).
pub fn capture_and_show(app: &AppHandle) {
    let app = app.clone();
    std::thread::spawn(move || {
        let state = app.state::<AppState>();
        let monitor = state.monitor.load(std::sync::atomic::Ordering::Relaxed);
        match capture_new(&state, Source::Monitor(monitor)) {
            Ok(view) => drop(app.emit("captured", view)),
            Err(e) => drop(app.emit("capture-failed", serde_json::json!({ "kind": "capture", "message": e.to_string() }))),
        }
        if let Some(w) = app.get_webview_window("main") {
            let _ = w.show();
            let _ = w.unminimize();
            let _ = w.set_focus();
        }
    });
}

/// Stops the running task, off the main thread (stopping may wait for the task's thread,
/// which may be waiting for the main thread to hide the window).
pub fn stop(app: &AppHandle) {
    // MCP clients' actions and tasks too.
    app.state::<AppState>().mcp.core.stop_all();
    let tasks = app.state::<AppState>().tasks.clone();
    std::thread::spawn(move || tasks.stop());
    let _ = app.emit("stopped", ());
}

/// The plugin, dispatching to capture or stop by what is registered now.
pub fn plugin() -> tauri::plugin::TauriPlugin<tauri::Wry> {
    tauri_plugin_global_shortcut::Builder::new()
        .with_handler(|app, shortcut, event| {
            if event.state() != ShortcutState::Pressed {
                return;
            }
            let reg = app.state::<Registered>();
            if lock(&reg.stop).as_ref() == Some(shortcut) {
                stop(app);
            } else if lock(&reg.capture).as_ref() == Some(shortcut) {
                capture_and_show(app);
            }
        })
        .build()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_hotkeys_become_shortcuts() {
        let s = |t: &str| shortcut(&parse_hotkey(t).unwrap());
        assert_eq!(s("Ctrl+Shift+S"), Some(Shortcut::new(Some(Modifiers::CONTROL | Modifiers::SHIFT), Code::KeyS)));
        assert_eq!(s("alt+f5"), Some(Shortcut::new(Some(Modifiers::ALT), Code::F5)));
        assert_eq!(s("Ctrl+7"), Some(Shortcut::new(Some(Modifiers::CONTROL), Code::Digit7)));
        assert_eq!(s("Super+Space"), Some(Shortcut::new(Some(Modifiers::SUPER), Code::Space)));
        assert!(parse("hotkey_capture", "Ctrl+Shift").is_err());
    }
}
