//! ScreenPilot desktop app entry point.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    // Before any thread starts (candle reads it once, when its CPU pool starts).
    screenpilot_desktop::configure_cpu_threads(None);
    screenpilot_app_lib::run();
}
