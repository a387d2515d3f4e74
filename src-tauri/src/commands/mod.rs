//! The app's commands, grouped by feature. Each validates its arguments and forwards to
//! screenpilot-desktop; long work runs off the async runtime.

pub mod act;
pub mod ask;
pub mod capture;
#[cfg(debug_assertions)]
pub mod debug;
pub mod html;
pub mod model;

use tauri::ipc::Invoke;

/// The app's commands plus `extra` ones, in one list so that both builds register the same.
macro_rules! handler_with {
    ($($extra:tt)*) => {
        tauri::generate_handler![
            model::settings_get, model::model_open, model::model_info, model::model_download, model::model_download_cancel,
            capture::monitors_list, capture::windows_list, capture::capture_monitor, capture::capture_window, capture::capture_region,
            ask::ask, ask::ask_cancel, ask::overlay,
            act::actions_set_enabled, act::action_propose, act::action_decide, act::actions_stop, act::audit_read,
            html::html_generate,
            $($extra)*
        ]
    };
}

/// Every command (debug builds add the test-only injection command).
pub fn handler() -> impl Fn(Invoke) -> bool + Send + Sync + 'static {
    #[cfg(debug_assertions)]
    return handler_with!(debug::debug_inject_answer);
    #[cfg(not(debug_assertions))]
    return handler_with!();
}
