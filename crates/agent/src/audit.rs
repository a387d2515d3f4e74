//! Audit log: one JSON object per line for every model turn and every action decision
//! (time, screenshot hash, model output, action, screen coordinates, decision).
//!
//! **Tamper evidence.** Every line carries `prev_sha256`: the SHA-256 (lower-case hex) of the
//! exact bytes of the line before it, without its newline. The first line of a file carries
//! [`GENESIS`]; a log opened on a file that already has lines chains from its last line.
//! [`crate::audit_verify::verify`] walks the chain and names the first line that does not fit,
//! so an edited, deleted or reordered line shows. The chain is not a signature: someone who
//! rewrites every later hash goes unseen, and lines cut off the end show only against a
//! remembered head hash (`verify` reports it).
//!
//! **Fail closed.** [`AuditLog::record`] returns `Ok` only once the line is written, flushed and
//! (for files) synced to disk, so a full disk (`ENOSPC`) surfaces there. A file-backed log also
//! checks before every record that its path still names the file it holds open, so a log whose
//! file or folder was removed fails instead of writing into an unlinked file. Callers write
//! the record of an action *before* its first input event and do not act when that fails.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use image::RgbImage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::coords::OsPoint;
use crate::model_action::ModelAction;
use crate::screen_action::ScreenAction;

/// `prev_sha256` of the first line of a log: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened to an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditDecision {
    /// Passed the gate and about to run: written before the first input event.
    Approved,
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

/// One line of the audit log (without its `prev_sha256`, which [`AuditLog`] adds).
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

/// A record as written: the record's fields, then the hash of the line before.
#[derive(Serialize)]
struct ChainedLine<'a> {
    #[serde(flatten)]
    record: &'a AuditRecord,
    prev_sha256: &'a str,
}

/// Why the audit log could not be opened, written or read. The OS error is part of the
/// message (not a `source`), so the one line a user sees says what happened.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Opening (or reading the tail of) the log file failed.
    #[error("cannot open the audit log {}: {error}", path.display())]
    Open {
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// Writing, flushing or syncing a record failed (full disk, I/O error).
    #[error("cannot write to the audit log {name}: {error}")]
    Write {
        /// The log file's path, or `(stream)`.
        name: String,
        /// What the OS said.
        error: io::Error,
    },
    /// The log's file no longer exists at its path (removed, replaced, or its folder gone).
    #[error("the audit log {} was removed or replaced while in use", path.display())]
    Gone {
        /// The log file.
        path: PathBuf,
    },
    /// A record could not be encoded as JSON.
    #[error("cannot encode an audit record: {0}")]
    Encode(#[from] serde_json::Error),
    /// Reading a log (to verify it) failed.
    #[error("cannot read the audit log: {0}")]
    Read(io::Error),
}

enum Sink {
    Stream(Box<dyn Write + Send>),
    File { file: File, path: PathBuf },
}

/// Writes [`AuditRecord`]s as hash-chained JSON lines to a file or any writer.
pub struct AuditLog {
    sink: Sink,
    /// Hash of the last line (the next record's `prev_sha256`).
    prev: String,
    /// The file ends in a line without its newline (a torn write): end it first.
    needs_newline: bool,
    /// A write failed: re-read the chain state from the file before the next one.
    resync: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({})", self.name())
    }
}

impl AuditLog {
    /// A log writing to `sink`, chaining from [`GENESIS`] (a new, empty stream).
    pub fn new(sink: Box<dyn Write + Send>) -> Self {
        Self::chained(sink, GENESIS.to_string())
    }

    /// A log writing to `sink` whose first record follows a line hashing to `prev`.
    pub fn chained(sink: Box<dyn Write + Send>, prev: String) -> Self {
        Self { sink: Sink::Stream(sink), prev, needs_newline: false, resync: false }
    }

    /// Opens (creating if needed) the log file at `path` for appending; the first record
    /// chains from the file's last line, or from [`GENESIS`] when the file is empty.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let open_err = |error| AuditError::Open { path: path.to_path_buf(), error };
        let mut file = File::options().read(true).append(true).create(true).open(path).map_err(open_err)?;
        let (prev, needs_newline) = tail_state(&mut file).map_err(open_err)?;
        Ok(Self { sink: Sink::File { file, path: path.to_path_buf() }, prev, needs_newline, resync: false })
    }

    /// The hash the next record will carry as `prev_sha256` (the chain's head).
    pub fn head(&self) -> &str {
        &self.prev
    }

    fn name(&self) -> String {
        match &self.sink {
            Sink::Stream(_) => "(stream)".to_string(),
            Sink::File { path, .. } => path.display().to_string(),
        }
    }

    /// Appends one record; `Ok` only once it is written, flushed and (files) synced.
    pub fn record(&mut self, record: &AuditRecord) -> Result<(), AuditError> {
        if let Sink::File { file, path } = &mut self.sink {
            ensure_same_file(file, path)?;
            if self.resync {
                let (prev, needs_newline) = tail_state(file).map_err(|error| AuditError::Open { path: path.clone(), error })?;
                (self.prev, self.needs_newline, self.resync) = (prev, needs_newline, false);
            }
        }
        let line = serde_json::to_vec(&ChainedLine { record, prev_sha256: &self.prev })?;
        let mut bytes = Vec::with_capacity(line.len() + 2);
        if self.needs_newline {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(&line);
        bytes.push(b'\n');
        let written = match &mut self.sink {
            Sink::Stream(w) => w.write_all(&bytes).and_then(|()| w.flush()),
            Sink::File { file, .. } => file.write_all(&bytes).and_then(|()| file.flush()).and_then(|()| file.sync_data()),
        };
        match written {
            Ok(()) => {
                self.prev = sha256_hex(&line);
                self.needs_newline = false;
                Ok(())
            }
            Err(error) => {
                // A partial line may have reached the file: read the state back next time.
                self.resync = matches!(self.sink, Sink::File { .. });
                Err(AuditError::Write { name: self.name(), error })
            }
        }
    }
}

/// Fails with [`AuditError::Gone`] when `path` no longer names the open `file`.
fn ensure_same_file(file: &File, path: &Path) -> Result<(), AuditError> {
    let gone = || AuditError::Gone { path: path.to_path_buf() };
    let on_disk = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Err(gone()),
        Err(error) => return Err(AuditError::Write { name: path.display().to_string(), error }),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let held = file.metadata().map_err(|error| AuditError::Write { name: path.display().to_string(), error })?;
        if (held.dev(), held.ino()) != (on_disk.dev(), on_disk.ino()) || held.nlink() == 0 {
            return Err(gone());
        }
    }
    #[cfg(not(unix))]
    let _ = (file, on_disk);
    Ok(())
}

/// The hash of the file's last line (or [`GENESIS`] when empty) and whether that line
/// lacks its newline. Reads backwards from the end, so a long log costs one line's read.
fn tail_state(file: &mut File) -> io::Result<(String, bool)> {
    const CHUNK: u64 = 8192;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((GENESIS.to_string(), false));
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    let torn = last[0] != b'\n';
    let end = if torn { len } else { len - 1 };
    let mut start = end;
    let mut buf = Vec::new();
    while start > 0 {
        let n = CHUNK.min(start);
        buf.resize(usize::try_from(n).map_err(io::Error::other)?, 0);
        file.seek(SeekFrom::Start(start - n))?;
        file.read_exact(&mut buf)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            start = start - n + i as u64 + 1;
            break;
        }
        start -= n;
    }
    file.seek(SeekFrom::Start(start))?;
    let mut h = Sha256::new();
    io::copy(&mut (&*file).take(end - start), &mut HashWriter(&mut h))?;
    Ok((hex(&h.finalize()), torn))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (lower-case hex) over the image size and pixels.
pub fn screenshot_hash(image: &RgbImage) -> String {
    let mut h = Sha256::new();
    h.update(image.width().to_le_bytes());
    h.update(image.height().to_le_bytes());
    h.update(image.as_raw());
    hex(&h.finalize())
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
#[path = "audit_tests.rs"]
mod tests;
