//! The one error type of the desktop logic; serialisable as `{kind, message}` for the UI.

use serde::Serialize;

/// Everything that can go wrong in the desktop logic.
#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    /// The chosen folder is not a usable Qwen3-VL model.
    #[error("not a usable model folder: {0}")]
    BadModel(String),
    /// A command needs a loaded model.
    #[error("no model is loaded: choose a model folder first")]
    NoModel,
    /// A command needs a capture.
    #[error("nothing captured yet: capture the screen first")]
    NoCapture,
    /// Arguments from the UI failed validation.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The model failed while answering.
    #[error("model: {0}")]
    Model(String),
    /// Capture, parsing, policy or input (from the agent crate).
    #[error(transparent)]
    Agent(#[from] screenpilot_agent::AgentError),
    /// Downloading from the hub failed.
    #[error("download: {0}")]
    Download(String),
    /// The screen could not be captured; `help` says what this platform needs.
    #[error("cannot capture the screen: {message}. {help}")]
    Capture {
        /// What failed.
        message: String,
        /// What to do about it on this platform.
        help: &'static str,
    },
    /// ScreenPilot's own window could not be hidden or shown.
    #[error("window: {0}")]
    Window(String),
    /// Something that should not happen (a thread could not start).
    #[error("internal: {0}")]
    Internal(String),
    /// The user cancelled.
    #[error("cancelled")]
    Cancelled,
    /// Files and folders.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// What happened.
        source: std::io::Error,
    },
}

impl DesktopError {
    /// An I/O error about `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io { path: path.display().to_string(), source }
    }

    /// A short machine-readable name of the variant (for the UI).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadModel(_) => "bad_model",
            Self::NoModel => "no_model",
            Self::NoCapture => "no_capture",
            Self::InvalidArgument(_) => "invalid_argument",
            Self::Model(_) => "model",
            Self::Agent(_) => "agent",
            Self::Download(_) => "download",
            Self::Capture { .. } => "capture",
            Self::Window(_) => "window",
            Self::Internal(_) => "internal",
            Self::Cancelled => "cancelled",
            Self::Io { .. } => "io",
        }
    }
}

impl From<screenpilot_model::ModelError> for DesktopError {
    fn from(e: screenpilot_model::ModelError) -> Self {
        Self::Model(e.to_string())
    }
}

impl Serialize for DesktopError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("DesktopError", 2)?;
        st.serialize_field("kind", self.kind())?;
        st.serialize_field("message", &self.to_string())?;
        st.end()
    }
}

/// Result with [`DesktopError`].
pub type Result<T> = std::result::Result<T, DesktopError>;
