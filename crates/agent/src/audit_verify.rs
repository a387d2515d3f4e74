//! Checks an audit log's hash chain (see [`crate::audit`]): every line must be a JSON
//! object with the record fields, and its `prev_sha256` must be the SHA-256 of the exact
//! bytes of the line before it ([`GENESIS`] for the first line). The first line that does
//! not fit is reported with its 1-based number and the reason.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::audit::{sha256_hex, AuditError, GENESIS};

/// Fields every record must have.
pub const REQUIRED_FIELDS: [&str; 6] = ["time", "turn", "screenshot_sha256", "model_output", "decision", "prev_sha256"];

/// The result of walking a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records that verified (all of them when `first_break` is `None`; those before it otherwise).
    pub records: u64,
    /// SHA-256 of the last verified line: note it to detect lines later cut off the end.
    pub head_sha256: String,
    /// The first line that breaks the chain, if any.
    pub first_break: Option<ChainBreak>,
}

impl VerifyReport {
    /// Whether the whole log verified.
    pub fn is_ok(&self) -> bool {
        self.first_break.is_none()
    }
}

/// The first line that does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// 1-based line number.
    pub line: u64,
    /// Why it does not fit.
    pub reason: BreakReason,
}

/// Why a line breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakReason {
    /// Not a JSON object (also: an empty line, or bytes that are not UTF-8).
    Unparsable(String),
    /// A record field is missing (or `prev_sha256` is not a string).
    MissingField(&'static str),
    /// `prev_sha256` is not the hash of the line before.
    HashMismatch {
        /// The hash of the previous line ([`GENESIS`] for line 1).
        expected: String,
        /// What the line carries.
        found: String,
    },
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = self.line;
        match &self.reason {
            BreakReason::Unparsable(why) => write!(f, "line {line}: not a JSON record ({why})"),
            BreakReason::MissingField(name) => write!(f, "line {line}: missing field `{name}`"),
            BreakReason::HashMismatch { expected, found } if line == 1 => write!(
                f,
                "line 1: hash mismatch: prev_sha256 is {found}, not the genesis value {expected} (lines before it were removed)"
            ),
            BreakReason::HashMismatch { expected, found } => write!(
                f,
                "line {line}: hash mismatch: prev_sha256 is {found} but line {} hashes to {expected} \
                 (line {} was changed, or lines were removed or reordered)",
                line - 1,
                line - 1
            ),
        }
    }
}

/// Walks the log in `reader` and stops at the first broken line. `Err` only when reading fails.
pub fn verify(mut reader: impl BufRead) -> Result<VerifyReport, AuditError> {
    let mut prev = GENESIS.to_string();
    let mut records = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(AuditError::Read)? == 0 {
            return Ok(VerifyReport { records, head_sha256: prev, first_break: None });
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Err(reason) = check_line(line, &prev) {
            let first_break = Some(ChainBreak { line: records + 1, reason });
            return Ok(VerifyReport { records, head_sha256: prev, first_break });
        }
        prev = sha256_hex(line);
        records += 1;
    }
}

/// [`verify`] on the file at `path`.
pub fn verify_file(path: &Path) -> Result<VerifyReport, AuditError> {
    let file = File::open(path).map_err(|error| AuditError::Open { path: path.to_path_buf(), error })?;
    verify(BufReader::new(file))
}

fn check_line(line: &[u8], prev: &str) -> Result<(), BreakReason> {
    if line.is_empty() {
        return Err(BreakReason::Unparsable("empty line".into()));
    }
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| BreakReason::Unparsable(e.to_string()))?;
    let obj = value.as_object().ok_or_else(|| BreakReason::Unparsable("not a JSON object".into()))?;
    if let Some(missing) = REQUIRED_FIELDS.iter().find(|k| !obj.contains_key(**k)) {
        return Err(BreakReason::MissingField(missing));
    }
    let found = obj.get("prev_sha256").and_then(|v| v.as_str()).ok_or(BreakReason::MissingField("prev_sha256"))?;
    if found != prev {
        return Err(BreakReason::HashMismatch { expected: prev.to_string(), found: found.to_string() });
    }
    Ok(())
}

#[cfg(test)]
#[path = "audit_verify_tests.rs"]
mod tests;
