//! `screenpilot`: ask Qwen3-VL about images from the command line.
//! The binary only composes the library crates; each subcommand lives in its own module.

mod args;
mod ask;
mod audit;
mod bench;
mod bench_batch;
mod ground;
mod load;
mod serve;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
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
        args::Command::Audit(a) => audit::run(a),
        args::Command::Bench(a) => bench::run(a),
        args::Command::Ground(a) => ground::run(a),
        args::Command::Serve(a) => serve::run(a),
    }
}

/// A closed stdout (`screenpilot ... | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Prints a line to stdout, returning an error (instead of panicking) when stdout is closed.
pub fn out_line(s: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    writeln!(o, "{s}")?;
    o.flush()
}
