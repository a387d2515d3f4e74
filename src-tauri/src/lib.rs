//! ScreenPilot desktop app: a thin Tauri 2 shell. Commands (in `commands/`) validate their
//! arguments and forward to screenpilot-desktop; tokens stream over `tauri::ipc::Channel`,
//! task events go out as the `task` event. Global hotkeys: Ctrl+Shift+S captures the first
//! monitor, Ctrl+Shift+X stops the running task.
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod commands;
mod error;
mod state;

use std::sync::{Arc, Mutex};

use tauri::{Emitter, Manager};
use tauri_plugin_global_shortcut::{Code, GlobalShortcutExt, Modifiers, Shortcut, ShortcutState};

use screenpilot_agent::enigo_backend::EnigoActuator;
use screenpilot_agent::Actuator;
use screenpilot_desktop::session::Session;
use screenpilot_desktop::settings::Settings;
use screenpilot_desktop::task_events::TaskEvent;
use screenpilot_desktop::task_runner::{TaskOptions, TaskRunner};

pub use error::{CommandError, CmdResult};
pub use state::AppState;

fn build_state(app: &tauri::App) -> Result<AppState, Box<dyn std::error::Error>> {
    let config = app.path().app_config_dir()?;
    let data = app.path().app_data_dir()?;
    let settings_path = config.join("settings.json");
    let settings = Settings::load(&settings_path).unwrap_or_default();
    let actuator: Box<dyn Actuator + Send> = match EnigoActuator::new() {
        Ok(a) => Box::new(a),
        Err(e) => Box::new(state::NoInput(e.to_string())),
    };
    let window = app.get_webview_window("main").ok_or("the main window is missing")?;
    let handle = app.handle().clone();
    let sink = Arc::new(move |ev: TaskEvent| {
        let _ = handle.emit("task", ev);
    });
    // Every task is recorded into a folder of its own under <app data>/tasks.
    let options = TaskOptions { tasks_dir: Some(data.join("tasks")), ..TaskOptions::default() };
    let tasks = TaskRunner::new(actuator, &data.join("audit.jsonl"), Arc::new(state::MainWindow(window)), sink, options)?;
    Ok(AppState {
        session: Arc::new(Session::new()),
        local: Mutex::new(None),
        tasks: Arc::new(tasks),
        settings: Mutex::new(settings),
        settings_path,
        models_dir: data.join("models"),
        html_dir: data.join("html"),
        download: Mutex::new(None),
    })
}

fn hotkeys(app: &tauri::App) -> Result<(), Box<dyn std::error::Error>> {
    let capture = Shortcut::new(Some(Modifiers::CONTROL | Modifiers::SHIFT), Code::KeyS);
    let stop = Shortcut::new(Some(Modifiers::CONTROL | Modifiers::SHIFT), Code::KeyX);
    app.handle().plugin(
        tauri_plugin_global_shortcut::Builder::new()
            .with_handler(move |app, shortcut, event| {
                if event.state() != ShortcutState::Pressed {
                    return;
                }
                if shortcut == &stop {
                    // Off the main thread: stopping may wait for the task's thread, which may
                    // be waiting for the main thread to hide the window.
                    let tasks = app.state::<AppState>().tasks.clone();
                    std::thread::spawn(move || tasks.stop());
                    let _ = app.emit("stopped", ());
                } else if shortcut == &capture {
                    let _ = app.emit("hotkey-capture", ());
                }
            })
            .build(),
    )?;
    // A hotkey taken by another program must not keep the app from starting.
    for s in [capture, stop] {
        if let Err(e) = app.global_shortcut().register(s) {
            eprintln!("screenpilot: cannot register hotkey {s:?}: {e}");
        }
    }
    Ok(())
}

/// Builds and runs the app.
pub fn run() {
    let result = tauri::Builder::default()
        // The model-folder picker; the capability grants only `dialog:allow-open`.
        .plugin(tauri_plugin_dialog::init())
        .setup(|app| {
            let state = build_state(app)?;
            app.manage(state);
            hotkeys(app)?;
            Ok(())
        })
        .invoke_handler(commands::handler())
        .run(tauri::generate_context!());
    if let Err(e) = result {
        eprintln!("screenpilot: {e}");
        std::process::exit(1);
    }
}
