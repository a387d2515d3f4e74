//! Error type of the agent crate: every fallible operation in `screenpilot-agent`
//! returns [`AgentError`].

use thiserror::Error;

/// Everything that can go wrong while parsing model output, mapping coordinates,
/// deciding about or executing actions, capturing the screen or talking to the model.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum AgentError {
    /// The model output contained no JSON value / tool call we could read.
    #[error("no {expected} found in model output")]
    NotFound {
        /// What the parser was looking for.
        expected: &'static str,
    },
    /// A JSON value was found but does not have the expected shape.
    #[error("malformed model output: {0}")]
    Malformed(String),
    /// The tool call names an action we do not know.
    #[error("unknown computer_use action {0:?}")]
    UnknownAction(String),
    /// The tool call names a function other than `computer_use`.
    #[error("unknown tool {0:?} (only computer_use is supported)")]
    UnknownTool(String),
    /// A key name the model used cannot be mapped to a key.
    #[error("unknown key name {0:?}")]
    UnknownKey(String),
    /// A coordinate is not a valid relative 0..=1000 coordinate.
    #[error("coordinate {0:?} is outside the relative range 0..=1000")]
    RelativeOutOfRange(Vec<f64>),
    /// A point maps outside the monitor the screenshot was taken from.
    #[error("point ({x:.1}, {y:.1}) physical px is outside the target monitor {width}x{height}")]
    OutsideMonitor {
        /// Monitor-local physical x.
        x: f64,
        /// Monitor-local physical y.
        y: f64,
        /// Monitor width in physical pixels.
        width: u32,
        /// Monitor height in physical pixels.
        height: u32,
    },
    /// Geometry description is unusable (zero sizes, bad scale factor, region outside monitor).
    #[error("invalid geometry: {0}")]
    InvalidGeometry(String),
    /// The user has not opted in to actions.
    #[error("actions are disabled until the user opts in")]
    ActionsDisabled,
    /// The stop flag was raised.
    #[error("stopped by the stop flag")]
    Stopped,
    /// The OS input backend failed.
    #[error("input backend: {0}")]
    Input(String),
    /// Screen capture failed.
    #[error("screen capture: {0}")]
    Capture(String),
    /// The model (brain) failed to answer.
    #[error("model: {0}")]
    Brain(String),
    /// Reading the pointer position failed.
    #[error("pointer read-back: {0}")]
    Pointer(String),
    /// The audit record could not be written, so the action it was about was not
    /// performed (fail closed).
    #[error("the audit log could not be written, so the action was not performed: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// The action was started, but the record of its outcome could not be written; nothing
    /// more runs.
    #[error("the action was started, but its outcome could not be written to the audit log, so the task stops: {0}")]
    AuditAfterAction(crate::audit::AuditError),
    /// The task's recording ([`crate::record::Recorder`]) could not be written. Its turn
    /// line is written before the turn's actions are gated, so no action of that turn ran;
    /// nothing runs after a failed write.
    #[error("the recording could not be written, so the task stopped (no action runs after a failed write): {0}")]
    Record(crate::record::RecordError),
    /// An action ran, but the recording of its outcome could not be written; nothing more runs.
    #[error("the action was started, but its outcome could not be written to the recording, so the task stops: {0}")]
    RecordAfterAction(crate::record::RecordError),
    /// A recording could not be read for [`crate::replay::replay`] (missing or corrupt folder).
    #[error("cannot replay the recording: {0}")]
    Replay(crate::record::RecordError),
}

/// Result alias for this crate.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
