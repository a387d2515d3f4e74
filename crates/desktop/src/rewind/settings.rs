//! Rewind's part of the app's settings ([`crate::settings::Settings::rewind`]): off by default,
//! the rate, the length, the memory cap in MiB and what is blacked out, checked field by field
//! the way the settings page shows errors (`rewind_fps`, `rewind_seconds`, `rewind_max_mib`,
//! `rewind_blackout`).

use serde::{Deserialize, Serialize};

use screenpilot_agent::xcap_backend::{MonitorChoice, XcapCapture};

use super::blackout::{Blackout, Region, XcapWindows};
use super::{Rewind, RewindConfig, DEFAULT_FPS, DEFAULT_MAX_MIB, DEFAULT_SECONDS};
use crate::error::Result;
use crate::settings::FieldError;

/// What the settings page edits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RewindSettings {
    /// Record the screen while the app runs (off by default).
    pub enabled: bool,
    /// Frames per second (0.5 to 4).
    pub fps: f64,
    /// Seconds kept (2 to 300).
    pub seconds: u32,
    /// Memory cap in MiB (16 to 8192).
    pub max_mib: u64,
    /// Rectangles of the monitor (physical pixels) blacked out.
    pub regions: Vec<Region>,
    /// Windows blacked out: those whose title contains one of these.
    pub windows: Vec<String>,
}

impl Default for RewindSettings {
    fn default() -> Self {
        Self { enabled: false, fps: DEFAULT_FPS, seconds: DEFAULT_SECONDS, max_mib: DEFAULT_MAX_MIB, regions: Vec::new(), windows: Vec::new() }
    }
}

impl RewindSettings {
    /// The recorder's settings.
    pub fn config(&self) -> RewindConfig {
        RewindConfig {
            fps: self.fps,
            seconds: self.seconds,
            max_bytes: self.max_mib.saturating_mul(1 << 20),
            threshold: 0.0,
            blackout: Blackout { regions: self.regions.clone(), windows: self.windows.clone() },
        }
    }

    /// Every bad field, each with the settings page's name for it.
    pub fn field_errors(&self) -> Vec<FieldError> {
        let base = RewindConfig::default();
        let cfg = self.config();
        let checks = [
            ("rewind_fps", RewindConfig { fps: cfg.fps, ..base.clone() }),
            ("rewind_seconds", RewindConfig { seconds: cfg.seconds, ..base.clone() }),
            ("rewind_max_mib", RewindConfig { max_bytes: cfg.max_bytes, ..base.clone() }),
            ("rewind_blackout", RewindConfig { blackout: cfg.blackout, ..base }),
        ];
        checks
            .into_iter()
            .filter_map(|(field, c)| c.validate().err().map(|e| FieldError { field: field.into(), message: plain(e.to_string()) }))
            .collect()
    }
}

impl Rewind {
    /// Follows the settings: off stops (dropping the frames); on starts recording `monitor` of
    /// the real screen, or starts over when the recording settings changed.
    pub fn apply(&self, s: &RewindSettings, monitor: usize) -> Result<()> {
        if !s.enabled {
            self.stop();
            return Ok(());
        }
        let cfg = s.config();
        if self.running_config().as_ref() == Some(&cfg) {
            return Ok(());
        }
        let capture = XcapCapture { monitor: MonitorChoice::Index(monitor), region: None };
        self.start(cfg, Box::new(capture), Box::new(XcapWindows))
    }
}

/// The message without the error kind's prefix (the page shows it under the field).
fn plain(message: String) -> String {
    message.strip_prefix("invalid argument: ").map(str::to_string).unwrap_or(message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_each_bad_field_is_named() {
        let s = RewindSettings::default();
        assert!(!s.enabled && s.field_errors().is_empty());
        assert_eq!(s.config().max_bytes, 512 << 20);
        let bad = RewindSettings { fps: 9.0, max_mib: 1, windows: vec![String::new()], ..RewindSettings::default() };
        let fields: Vec<_> = bad.field_errors().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["rewind_fps", "rewind_max_mib", "rewind_blackout"]);
        let old: RewindSettings = serde_json::from_str(r#"{"enabled": true}"#).unwrap();
        assert_eq!((old.enabled, old.seconds), (true, 30), "missing fields take their defaults");
    }
}
