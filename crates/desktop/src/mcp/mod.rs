//! ScreenPilot as an MCP server: other agents (Claude Desktop and Claude Code, Cursor, VS
//! Code, LM Studio) ask about the user's screen and find elements through the local model, and
//! act only when the user allowed actions and confirms each one.
//!
//! - [`tools`]: the tool catalogue and the typed, checked [`tools::ToolCall`].
//! - [`screens`]: monitors, windows and captures of a call's target.
//! - [`core`]: what each tool does ([`McpCore`]): questions through the engine; [`actions`]:
//!   actions through the agent's policy, bounds check, audit log and stop flag.
//! - [`handler`]: rmcp's server handler, confirmations through MCP elicitation.
//! - [`serve`]: stdio and streamable HTTP (bearer token).

pub mod actions;
pub mod core;
pub mod handler;
pub mod screens;
pub mod serve;
pub mod tools;

pub use self::core::{AskUser, BackendSource, EventSink, McpConfig, McpCore, McpEvent, Reply};
pub use handler::ScreenServer;
pub use serve::{serve_stdio, HttpServer};
pub use tools::{parse_tool_list, ToolName};
