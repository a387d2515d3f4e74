//! The app's commands, grouped by feature. Each validates its arguments and forwards to
//! screenpilot-desktop; long work runs off the async runtime.

pub mod ask;
pub mod capture;
#[cfg(debug_assertions)]
pub mod debug;
pub mod html;
pub mod model;
pub mod rewind;
pub mod task;
pub mod threads;

use tauri::ipc::Invoke;

/// The app's commands plus `extra` ones, in one list so that both builds register the same.
macro_rules! handler_with {
    ($($extra:tt)*) => {
        tauri::generate_handler![
            model::settings_get, model::settings_set, model::settings_check, model::image_tokens, model::model_open, model::model_reload, model::model_info,
            model::models_list, model::model_delete, model::model_download, model::model_download_cancel, model::backend_use,
            capture::monitors_list, capture::windows_list, capture::capture_monitor, capture::capture_window, capture::capture_region,
            ask::ask, ask::ask_cancel, ask::overlay,
            threads::threads_list, threads::thread_open, threads::thread_delete, threads::threads_clear,
            task::actions_set_enabled, task::task_start, task::task_decide, task::task_stop, task::act_on_answer, task::audit_read,
            task::task_history, task::task_replay, task::calibrate,
            html::html_generate, html::html_save,
            rewind::rewind_status, rewind::rewind_ask, rewind::rewind_changed, rewind::rewind_save,
            crate::mcp::mcp_status,
            $($extra)*
        ]
    };
}

/// Every command (debug builds add the test-only commands).
pub fn handler() -> impl Fn(Invoke) -> bool + Send + Sync + 'static {
    #[cfg(debug_assertions)]
    return handler_with!(debug::debug_inject_answer, debug::debug_set_backend_url, debug::debug_tray, debug::debug_hide_window);
    #[cfg(not(debug_assertions))]
    return handler_with!();
}
