//! Audit log: one JSON object per line for every model turn and every action decision
//! (time, screenshot hash, model output, action, screen coordinates, decision).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use image::RgbImage;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::coords::OsPoint;
use crate::error::Result;
use crate::model_action::ModelAction;
use crate::screen_action::ScreenAction;

/// What happened to an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditDecision {
    /// Executed.
    Executed,
    /// The user rejected it.
    RejectedByUser,
    /// Actions are switched off.
    RefusedDisabled,
    /// Off the target monitor, bad key, bad arguments.
    RefusedInvalid,
    /// Auto-mode step limit reached.
    RefusedStepLimit,
    /// Stopped by the stop flag.
    Stopped,
    /// The input backend failed.
    Failed,
    /// `terminate` / `answer`.
    Finished,
    /// Model output without a usable action.
    NoAction,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// UTC time, RFC 3339.
    pub time: String,
    /// Turn number within the task.
    pub turn: u32,
    /// SHA-256 (hex) of the screenshot the model saw.
    pub screenshot_sha256: String,
    /// The raw model output.
    pub model_output: String,
    /// The parsed action, if any.
    pub action: Option<ModelAction>,
    /// The mapped action, if it got that far.
    pub screen_action: Option<ScreenAction>,
    /// OS coordinates the action touches.
    pub screen_coordinates: Vec<OsPoint>,
    /// The decision.
    pub decision: AuditDecision,
    /// Error text or other detail.
    pub detail: Option<String>,
}

/// Writes [`AuditRecord`]s as JSON lines to any writer (a file in the app).
pub struct AuditLog {
    sink: Box<dyn Write + Send>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

impl AuditLog {
    /// A log writing to `sink`.
    pub fn new(sink: Box<dyn Write + Send>) -> Self {
        Self { sink }
    }

    /// Appends one record and flushes.
    pub fn record(&mut self, record: &AuditRecord) -> Result<()> {
        let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        writeln!(self.sink, "{line}")?;
        self.sink.flush()?;
        Ok(())
    }
}

/// SHA-256 (lower-case hex) over the image size and pixels.
pub fn screenshot_hash(image: &RgbImage) -> String {
    let mut h = Sha256::new();
    h.update(image.width().to_le_bytes());
    h.update(image.height().to_le_bytes());
    h.update(image.as_raw());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The current UTC time as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format_rfc3339(d.as_secs(), d.subsec_millis())
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339(secs: u64, millis: u32) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(format_rfc3339(1_767_225_599, 999), "2025-12-31T23:59:59.999Z");
    }

    #[test]
    fn hash_depends_on_pixels() {
        let a = RgbImage::new(4, 4);
        let mut b = a.clone();
        b.put_pixel(1, 1, image::Rgb([1, 0, 0]));
        assert_ne!(screenshot_hash(&a), screenshot_hash(&b));
        assert_eq!(screenshot_hash(&a).len(), 64);
    }
}
