//! ScreenPilot agent: reads what Qwen3-VL writes (grounding boxes/points and
//! `computer_use` tool calls), maps its relative coordinates onto the right monitor,
//! gates every action through the user's policy, executes it, and runs the
//! screenshot -> model -> action loop. Parsing and mapping are pure; only the
//! [`actuator::Actuator`] backends touch the OS.
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod actuator;
pub mod agent;
pub mod audit;
pub mod audit_verify;
pub mod brain;
pub mod calibrate;
pub mod capture;
pub mod context;
pub mod coords;
#[cfg(feature = "os")]
pub mod enigo_backend;
pub mod error;
pub mod executor;
pub mod grounding;
pub mod json_extract;
pub mod keys;
pub mod model_action;
pub mod policy;
pub mod reasoning;
pub mod record;
pub mod replay;
pub mod screen_action;
pub mod sensitive;
#[cfg(feature = "os")]
pub mod xcap_backend;

pub use actuator::{Actuator, InputEvent, NoInput, PointerReader, Press, RecordingActuator, StopFlag};
pub use agent::{Agent, AgentConfig, Outcome};
pub use brain::{computer_use_tool, Brain, BrainError, BrainRequest, Content, Role, ScriptedBrain, Turn};
pub use capture::{Capture, FakeCapture, Screenshot, SettleConfig};
pub use coords::{CaptureGeometry, ImagePx, InputSpace, LogicalPx, MonitorGeometry, OsPoint, PhysicalPx, Point, Rel1000};
pub use error::{AgentError, Result};
pub use grounding::{parse_grounding, Grounding, Shape};
pub use model_action::{parse_tool_calls, ModelAction};
pub use policy::{AutoLimits, Confirmer, Decision, Mode, Policy};
pub use record::{Recorder, Recording};
pub use replay::{replay, Difference, ReplayReport};
pub use screen_action::{resolve, ScreenAction};
pub use sensitive::always_asks;
