//! The app's commands, grouped by feature. Each validates its arguments and forwards to
//! screenpilot-desktop; long work runs off the async runtime.

pub mod ask;
pub mod capture;
#[cfg(debug_assertions)]
pub mod debug;
pub mod html;
pub mod model;
pub mod task;

use tauri::ipc::Invoke;

/// The app's commands plus `extra` ones, in one list so that both builds register the same.
macro_rules! handler_with {
    ($($extra:tt)*) => {
        tauri::generate_handler![
            model::settings_get, model::model_open, model::model_info, model::model_download, model::model_download_cancel, model::backend_use,
            capture::monitors_list, capture::windows_list, capture::capture_monitor, capture::capture_window, capture::capture_region,
            ask::ask, ask::ask_cancel, ask::overlay,
            task::actions_set_enabled, task::task_start, task::task_decide, task::task_stop, task::act_on_answer, task::audit_read,
            task::task_history, task::task_replay, task::calibrate,
            html::html_generate,
            $($extra)*
        ]
    };
}

/// Every command (debug builds add the test-only commands).
pub fn handler() -> impl Fn(Invoke) -> bool + Send + Sync + 'static {
    #[cfg(debug_assertions)]
    return handler_with!(debug::debug_inject_answer, debug::debug_set_backend_url);
    #[cfg(not(debug_assertions))]
    return handler_with!();
}
