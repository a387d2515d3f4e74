//! `CommandError`: what a command returns to the UI on failure, serialised as `{kind, message}`
//! (and `fields` for settings that were not saved).

use serde::Serialize;
use screenpilot_desktop::settings::FieldError;
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
    /// Settings that were not saved: every bad field with its message.
    #[error("settings not saved: {}", .0.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; "))]
    InvalidSettings(Vec<FieldError>),
    /// A background task died.
    #[error("internal: {0}")]
    Internal(String),
}

impl CommandError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Desktop(e) => e.kind(),
            Self::Tauri(_) => "app",
            Self::InvalidSettings(_) => "invalid_settings",
            Self::Internal(_) => "internal",
        }
    }
}

impl Serialize for CommandError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("CommandError", 3)?;
        st.serialize_field("kind", self.kind())?;
        st.serialize_field("message", &self.to_string())?;
        if let Self::InvalidSettings(fields) = self {
            st.serialize_field("fields", fields)?;
        }
        st.end()
    }
}

/// Result of a command.
pub type CmdResult<T> = Result<T, CommandError>;

/// Runs blocking work off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> CmdResult<T> + Send + 'static) -> CmdResult<T> {
    tauri::async_runtime::spawn_blocking(f).await.map_err(|e| CommandError::Internal(e.to_string()))?
}
