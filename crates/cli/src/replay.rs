//! `screenpilot replay DIR`: re-runs a task recorded with `do --record DIR` (or by the app)
//! through the parser, the coordinate mapping and the policy with the recorded decisions, without
//! any input event, and reports every difference from what was recorded: a recorded task is a
//! regression test of the parser and the mapping. Exit code 0 when nothing differs, 3 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use screenpilot_agent::replay::replay;

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// A folder written by `screenpilot do --record DIR`.
    pub dir: PathBuf,
}

pub fn run(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let report = replay(&a.dir)?;
    for d in &report.differences {
        crate::out_line(&d.to_string())?;
    }
    let summary = format!("{} steps, {} actions replayed, {} differences", report.steps, report.actions, report.differences.len());
    if report.is_identical() {
        crate::out_line(&format!("replay: identical ({summary})"))?;
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("screenpilot: replay differs from the recording ({summary})");
    Ok(ExitCode::from(3))
}
