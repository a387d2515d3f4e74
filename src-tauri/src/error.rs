//! `CommandError`: what a command returns to the UI on failure, serialised as `{kind, message}`.

use serde::Serialize;
use screenpilot_desktop::DesktopError;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// From the desktop logic.
    #[error(transparent)]
    Desktop(#[from] DesktopError),
    /// From Tauri (paths, windows).
    #[error("app: {0}")]
    Tauri(#[from] tauri::Error),
    /// A background task died.
    #[error("internal: {0}")]
    Internal(String),
}

impl CommandError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Desktop(e) => e.kind(),
            Self::Tauri(_) => "app",
            Self::Internal(_) => "internal",
        }
    }
}

impl Serialize for CommandError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("CommandError", 2)?;
        st.serialize_field("kind", self.kind())?;
        st.serialize_field("message", &self.to_string())?;
        st.end()
    }
}

/// Result of a command.
pub type CmdResult<T> = Result<T, CommandError>;

/// Runs blocking work off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> CmdResult<T> + Send + 'static) -> CmdResult<T> {
    tauri::async_runtime::spawn_blocking(f).await.map_err(|e| CommandError::Internal(e.to_string()))?
}
