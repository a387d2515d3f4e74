//! The app's remembered choices: a small JSON file in the app config folder, written
//! atomically (temporary file + rename). Unknown or missing fields fall back to defaults.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DesktopError, Result};

/// What the app remembers between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Settings {
    /// The last model folder that loaded.
    pub model_dir: Option<PathBuf>,
    /// Hub endpoint for downloads (empty: `$HF_ENDPOINT` or the public hub).
    pub hf_endpoint: Option<String>,
    /// Cap on visual tokens per image (large screens are thousands of tokens).
    pub max_image_tokens: Option<usize>,
    /// An OpenAI-compatible server tasks may run on instead of the local model (base URL
    /// ending in `/v1`; its key comes from `$SCREENPILOT_API_KEY`).
    pub backend_url: Option<String>,
    /// The model to ask that server for (None: the first it lists).
    pub backend_model: Option<String>,
    /// Ask and To HTML use that server instead of the local model ("Server" in the model bar).
    pub use_server: bool,
}

impl Settings {
    /// Reads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| DesktopError::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(DesktopError::io(path, e)),
        }
    }

    /// Writes `path` atomically, creating its folder.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| DesktopError::io(dir, e))?;
        }
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| DesktopError::io(path, std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| DesktopError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| DesktopError::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults_when_missing() {
        let dir = std::env::temp_dir().join(format!("sp-settings-{}", std::process::id()));
        let path = dir.join("settings.json");
        let _ = std::fs::remove_file(&path);
        assert_eq!(Settings::load(&path).unwrap(), Settings::default());
        let s = Settings { model_dir: Some("/m".into()), hf_endpoint: Some("http://x".into()), max_image_tokens: Some(64), ..Settings::default() };
        s.save(&path).unwrap();
        assert_eq!(Settings::load(&path).unwrap(), s);
        std::fs::write(&path, "{\"model_dir\": \"/n\", \"unknown\": 1}").unwrap();
        assert_eq!(Settings::load(&path).unwrap().model_dir, Some(PathBuf::from("/n")));
        std::fs::write(&path, "not json").unwrap();
        assert!(Settings::load(&path).is_err());
    }
}
