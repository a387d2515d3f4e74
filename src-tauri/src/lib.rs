//! ScreenPilot desktop app: a thin Tauri 2 shell. Commands (in `commands/`) validate their
//! arguments and forward to screenpilot-desktop; tokens stream over `tauri::ipc::Channel`,
//! task events go out as the `task` event. The global hotkeys (`hotkeys`, from the settings)
//! and the tray icon (`tray`) capture and stop with the window hidden.
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod commands;
mod error;
mod hotkeys;
mod mcp;
mod state;
mod tray;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tauri::{Emitter, Manager};

use screenpilot_agent::enigo_backend::input_or_reason;
use screenpilot_desktop::catalog::{self, DeviceMemory};
use screenpilot_desktop::session::Session;
use screenpilot_desktop::settings::Settings;
use screenpilot_desktop::task_events::TaskEvent;
use screenpilot_desktop::task_runner::{TaskOptions, TaskRunner};
use screenpilot_desktop::threads::{now_ms, ThreadStore};

pub use error::{CommandError, CmdResult};
pub use state::AppState;

/// The GPU and RAM the model list marks fits against: `$SCREENPILOT_FAKE_MEMORY` (e.g.
/// `gpu=8GiB,ram=16GiB`, for tests and for checking what fits another machine) or detected.
fn device_memory() -> DeviceMemory {
    match std::env::var("SCREENPILOT_FAKE_MEMORY") {
        Ok(v) => catalog::parse_memory_override(&v).unwrap_or_else(|e| {
            eprintln!("screenpilot: ignoring SCREENPILOT_FAKE_MEMORY: {e}");
            catalog::detect_memory()
        }),
        Err(_) => catalog::detect_memory(),
    }
}

fn build_state(app: &tauri::App) -> Result<AppState, Box<dyn std::error::Error>> {
    let config = app.path().app_config_dir()?;
    let settings_path = config.join("settings.json");
    let settings = Settings::load(&settings_path).unwrap_or_else(|e| {
        // A broken settings file is kept aside, not overwritten by the defaults.
        eprintln!("screenpilot: {e}; starting with the default settings");
        let _ = std::fs::rename(&settings_path, settings_path.with_extension("json.broken"));
        Settings::default()
    });
    let data: PathBuf = match &settings.data_dir {
        Some(d) => d.clone(),
        None => app.path().app_data_dir()?,
    };
    let actuator = input_or_reason();
    let window = Arc::new(state::MainWindow(app.get_webview_window("main").ok_or("the main window is missing")?));
    let handle = app.handle().clone();
    let sink = Arc::new(move |ev: TaskEvent| {
        let _ = handle.emit("task", ev);
    });
    // Every task is recorded into a folder of its own under <data>/tasks.
    let options = TaskOptions { tasks_dir: Some(data.join("tasks")), ..TaskOptions::default() };
    let audit = data.join("audit.jsonl");
    let threads = ThreadStore::open(&data.join("threads"))?;
    // Retention: conversations over the age or size limits, audit records over the age limit.
    let now = now_ms();
    if let Err(e) = threads.enforce_limits(&settings, now, None) {
        eprintln!("screenpilot: cannot apply the conversation limits: {e}");
    }
    if let Err(e) = screenpilot_desktop::audit_table::prune(&audit, settings.audit_days, now) {
        eprintln!("screenpilot: cannot prune the audit log: {e}");
    }
    let tasks = TaskRunner::new(actuator, &audit, window.clone(), sink, options)?;
    let session = Arc::new(Session::new());
    let mcp = mcp::McpHost::new(app.handle(), session.clone(), &data, &settings);
    Ok(AppState {
        session,
        local: Mutex::new(None),
        tasks: Arc::new(tasks),
        settings: Mutex::new(settings),
        settings_path,
        models_dir: data.join("models"),
        html_dir: data.join("html"),
        download: Mutex::new(None),
        threads: Arc::new(threads),
        thread: Mutex::new(None),
        data_dir: data,
        last_page: Mutex::new(None),
        memory: device_memory(),
        monitor: std::sync::atomic::AtomicUsize::new(0),
        window,
        mcp,
        rewind: Arc::default(),
    })
}

/// Builds and runs the app.
pub fn run() {
    let result = tauri::Builder::default()
        // The model-folder picker and "Save…" of To HTML; the capability grants only open and save.
        .plugin(tauri_plugin_dialog::init())
        .plugin(hotkeys::plugin())
        .manage(hotkeys::Registered::default())
        .setup(|app| {
            let state = build_state(app)?;
            let settings = state::lock(&state.settings).clone();
            app.manage(state);
            // A hotkey taken by another program must not keep the app from starting.
            if let Err(errors) = hotkeys::apply(app.handle(), &settings) {
                for e in errors {
                    eprintln!("screenpilot: hotkey {}: {}", e.field, e.message);
                }
            }
            // MCP clients, when Settings → MCP is on (a port in use must not stop the app).
            let state = app.state::<AppState>();
            if let Err(e) = tauri::async_runtime::block_on(state.mcp.apply(&settings)) {
                eprintln!("screenpilot: MCP server: {}", e.message);
            }
            // Rewind, when Settings → Rewind is on (a screen that cannot be captured must not stop the app).
            if let Err(e) = state.rewind.apply(&settings.rewind, 0) {
                eprintln!("screenpilot: rewind: {e}");
            }
            if let Err(e) = tray::build(app.handle()) {
                eprintln!("screenpilot: no tray icon: {e}");
            }
            tray::show_rewind(app.handle(), state.rewind.is_recording());
            Ok(())
        })
        .invoke_handler(commands::handler())
        .run(tauri::generate_context!());
    if let Err(e) = result {
        eprintln!("screenpilot: {e}");
        std::process::exit(1);
    }
}
