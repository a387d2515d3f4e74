//! `screenpilot audit verify FILE`: walks an audit log's hash chain (each record carries the
//! SHA-256 of the line before it) and reports OK with the record count, or the first broken
//! line and why. Exit codes: 0 intact, 2 broken, 1 the file could not be read.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use screenpilot_agent::audit_verify::verify_file;

use crate::out_line;

/// `screenpilot audit ...`
#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check an audit log's hash chain; exits 2 at the first edited, removed or reordered
    /// record (its line number and why), 0 when the log is intact.
    Verify {
        /// The audit log (JSON lines), e.g. the desktop app's audit.jsonl.
        file: PathBuf,
    },
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::Verify { file } => verify(&file),
    }
}

fn verify(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let report = verify_file(file).with_context(|| format!("cannot verify {}", file.display()))?;
    match &report.first_break {
        None => {
            out_line(&format!(
                "OK: {} records, hash chain intact (last record sha256 {})",
                report.records, report.head_sha256
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(b) => {
            out_line(&format!("BROKEN: {}: {b}", file.display()))?;
            out_line(&format!("{} records before it verified", report.records))?;
            Ok(ExitCode::from(2))
        }
    }
}
