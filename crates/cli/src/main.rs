//! `screenpilot`: ask Qwen3-VL about images from the command line.
//! The binary only composes the library crates; each subcommand lives in its own module.

mod args;
mod ask;
mod bench;
mod load;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One clear line (plus causes), never a panic or a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: args::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        args::Command::Ask(a) => ask::run(a),
        args::Command::Bench(a) => bench::run(a),
    }
}
