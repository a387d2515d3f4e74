//! `screenpilot`: ask Qwen3-VL about images from the command line.
//! The binary only composes the library crates; each subcommand lives in its own module.

mod args;
mod ask;
mod audit;
mod backend;
mod bench;
mod bench_batch;
mod bench_task;
#[cfg(feature = "os")]
mod calibrate;
mod ground;
mod load;
mod quant_eval;
#[cfg(feature = "os")]
mod mcp;
mod replay;
mod serve;
#[cfg(feature = "os")]
mod task;
#[cfg(feature = "os")]
mod watch;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    quiet_panics();
    let cli = args::Cli::parse();
    // Before any thread starts (candle reads it once, when its CPU pool starts).
    screenpilot_engine::load::configure_cpu_threads(cli.threads);
    match run(cli) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line (plus causes), never a panic or a backtrace.
            eprintln!("error: {}", message(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, like anyhow's `{:#}`, but with candle's messages
/// through `candle_message`: candle appends a captured backtrace to its own message whenever
/// `RUST_BACKTRACE` is set.
fn message(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| match c.downcast_ref::<candle_core::Error>() {
            Some(ce) => screenpilot_model::error::candle_message(ce),
            None => c.to_string(),
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// A panic is a bug, but the user still gets one `error:` line (with where it happened) rather
/// than the default hook's report, which `RUST_BACKTRACE` (set in many shells and CI images)
/// turns into a stack dump. SCREENPILOT_BACKTRACE=1 restores the default report for debugging.
fn quiet_panics() {
    if std::env::var_os("SCREENPILOT_BACKTRACE").is_some_and(|v| v == "1") {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error (please report it): {what}{at}");
    }));
}

fn run(cli: args::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        args::Command::Ask(a) => ask::run(a),
        args::Command::Audit(a) => audit::run(a),
        args::Command::Bench(a) => bench::run(a),
        args::Command::BenchTask(a) => bench_task::run(a),
        args::Command::Ground(a) => ground::run(a),
        args::Command::QuantEval(a) => quant_eval::run(a),
        args::Command::Replay(a) => replay::run(a),
        args::Command::Serve(a) => serve::run(a),
        #[cfg(feature = "os")]
        args::Command::Do(a) => task::run(a),
        #[cfg(feature = "os")]
        args::Command::Mcp(a) => mcp::run(*a),
        #[cfg(feature = "os")]
        args::Command::Calibrate(a) => calibrate::run(a),
        #[cfg(feature = "os")]
        args::Command::Watch(a) => watch::run(a),
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
