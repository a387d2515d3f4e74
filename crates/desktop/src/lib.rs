//! ScreenPilot desktop logic, independent of the UI toolkit: the [`assistant::Assistant`]
//! seam and its implementation over screenpilot-engine, settings, model download from the
//! Hugging Face hub, screen capture with HiDPI-correct geometry, grounding overlays, and
//! task mode ([`task_runner`]: the agent loop with every action proposed to the user, the
//! app's window kept out of screenshots and clicks, an audit log read back as a table, every task recorded and listed in [`task_history`]).
//! Conversations are kept on disk per capture ([`threads`]), the model manager's catalogue,
//! memory check and installed-model scan live in [`catalog`], and [`settings`] validates every
//! field the settings page edits (hotkeys, device, precision, retention).
//! [`mcp`] offers the screen to other agents as an MCP server. [`rewind`] keeps the recent
//! screen in memory (off by default) so questions can be about what just happened.
//! The Tauri shell (src-tauri) only forwards commands to this crate.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod assistant;
pub mod audit_table;
pub mod backend_assistant;
pub mod catalog;
pub mod download;
pub mod engine_assistant;
pub mod error;
pub mod html;
pub mod mcp;
pub mod overlay;
pub mod rewind;
pub mod screen;
pub mod session;
pub mod settings;
pub mod task;
pub mod task_events;
pub mod task_history;
pub mod task_parts;
pub mod task_runner;
pub mod threads;

pub use error::{DesktopError, Result};
/// For the app's `main` (see the engine's doc).
pub use screenpilot_engine::load::configure_cpu_threads;
