//! `screenpilot watch`: rewind in the terminal. Records a monitor into the in-memory rewind
//! buffer (screenpilot-desktop's `rewind`: nothing is written to disk unless `save` is typed)
//! and answers questions typed on stdin with the local model, through the same engine and
//! session as the app:
//!
//! ```text
//! last 10: what did that dialog say?     the last 10 seconds, as a video
//! changed: what changed?                 the screen at the last question vs now (two images)
//! more: and then?                        a follow-up about the same clip or pair (cached)
//! save 20 ~/clips/bug                    the last 20 seconds as PNG files (+ clip.json)
//! status                                 what the buffer holds
//! quit                                   (or end of input)
//! ```
//!
//! Answers go to stdout, everything else to stderr; a line that is not understood, or a
//! question that cannot be answered, is one `error:` line and the next line is read.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use screenpilot_agent::xcap_backend::{MonitorChoice, XcapCapture};
use screenpilot_desktop::engine_assistant::{EngineAssistant, LoadOptions};
use screenpilot_desktop::rewind::ask::{ask_changed, ask_recent};
use screenpilot_desktop::rewind::blackout::{Blackout, Region, XcapWindows};
use screenpilot_desktop::rewind::save::save_clip;
use screenpilot_desktop::rewind::{Rewind, RewindConfig, RewindStatus};
use screenpilot_desktop::session::Session;

use crate::args::{DeviceArg, DtypeArg};

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// A local Qwen3-VL folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Default: cuda or metal when built with it and present, else cpu.
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// Default: bf16 on a GPU, f32 on the CPU.
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Quantize the language model at load (q8_0, q6_k, q5_k, q4_k, q4_0) [default: none].
    #[arg(long, value_parser = crate::args::parse_quant)]
    pub quant: Option<screenpilot_model::QuantType>,
    /// Cap on visual tokens per image.
    #[arg(long)]
    pub max_image_tokens: Option<usize>,
    /// The monitor to record, by its position in the system's list (default: the primary one).
    #[arg(long)]
    pub monitor: Option<usize>,
    /// Frames per second (0.5 to 4).
    #[arg(long, default_value_t = screenpilot_desktop::rewind::DEFAULT_FPS)]
    pub fps: f64,
    /// Seconds kept (2 to 300).
    #[arg(long, default_value_t = screenpilot_desktop::rewind::DEFAULT_SECONDS)]
    pub seconds: u32,
    /// Most memory the frames take, MiB (16 to 8192); the oldest frames go first.
    #[arg(long, default_value_t = screenpilot_desktop::rewind::DEFAULT_MAX_MIB)]
    pub max_mib: u64,
    /// Black out this rectangle of the monitor before a frame is stored: x,y,width,height in
    /// physical pixels (repeatable).
    #[arg(long, value_parser = parse_region)]
    pub black_region: Vec<Region>,
    /// Black out windows whose title contains this text (repeatable).
    #[arg(long)]
    pub black_window: Vec<String>,
}

fn parse_region(s: &str) -> Result<Region, String> {
    let n: Vec<u32> = s.split(',').map(|p| p.trim().parse::<u32>()).collect::<Result<_, _>>().map_err(|_| format!("{s:?} is not x,y,width,height"))?;
    match n[..] {
        [x, y, width, height] => Ok(Region { x, y, width, height }),
        _ => Err(format!("{s:?} is not x,y,width,height")),
    }
}

/// A line typed at the prompt.
#[derive(Debug, Clone, PartialEq)]
enum Line {
    Last(f64, String),
    Changed(String),
    More(String),
    Save(f64, PathBuf),
    Status,
    Quit,
    Empty,
}

const HELP: &str = "type `last N: QUESTION`, `changed: QUESTION`, `more: QUESTION`, `save N FOLDER`, `status` or `quit`";

fn parse_line(line: &str) -> Result<Line, String> {
    let line = line.trim();
    let question = |q: &str| {
        let q = q.trim();
        if q.is_empty() { Err(format!("no question after the colon; {HELP}")) } else { Ok(q.to_string()) }
    };
    let seconds = |n: &str| match n.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{:?} is not a number of seconds", n.trim())),
    };
    if line.is_empty() {
        return Ok(Line::Empty);
    }
    if matches!(line, "quit" | "exit") {
        return Ok(Line::Quit);
    }
    if line == "status" {
        return Ok(Line::Status);
    }
    if let Some(rest) = line.strip_prefix("save ") {
        let (n, dir) = rest.trim().split_once(' ').ok_or_else(|| "save needs seconds and a folder: `save 20 ~/clips/bug`".to_string())?;
        return Ok(Line::Save(seconds(n)?, PathBuf::from(dir.trim())));
    }
    let (head, q) = line.split_once(':').ok_or_else(|| format!("not understood: {HELP}"))?;
    let head = head.trim();
    if head == "changed" {
        return Ok(Line::Changed(question(q)?));
    }
    if head == "more" {
        return Ok(Line::More(question(q)?));
    }
    match head.strip_prefix("last") {
        Some(n) if !n.trim().is_empty() => Ok(Line::Last(seconds(n)?, question(q)?)),
        _ => Err(format!("not understood: {HELP}")),
    }
}

fn describe(s: &RewindStatus) -> String {
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let mut out = format!(
        "● recording at {} fps: {:.1} of {:.0} s, {} distinct frames, {:.1} of {:.0} MiB",
        s.fps, s.seconds, s.capacity_seconds, s.frames, mib(s.bytes), mib(s.max_bytes)
    );
    if let Some(e) = &s.error {
        out.push_str(&format!(" (last capture failed: {e})"));
    }
    out
}

pub fn run(a: WatchArgs) -> anyhow::Result<ExitCode> {
    let cfg = RewindConfig {
        fps: a.fps,
        seconds: a.seconds,
        max_bytes: a.max_mib.saturating_mul(1 << 20),
        threshold: 0.0,
        blackout: Blackout { regions: a.black_region.clone(), windows: a.black_window.clone() },
    };
    cfg.validate()?;
    let name = |d: Option<&str>| d.unwrap_or("auto").to_string();
    let opts = LoadOptions {
        max_image_tokens: a.max_image_tokens,
        device: name(a.device.map(|d| match d { DeviceArg::Cpu => "cpu", DeviceArg::Cuda => "cuda", DeviceArg::Metal => "metal" })),
        dtype: name(a.dtype.map(|d| match d { DtypeArg::F32 => "f32", DtypeArg::Bf16 => "bf16", DtypeArg::F16 => "f16" })),
        quant: a.quant.map_or("none", |q| q.name()).to_string(),
    };
    let assistant = EngineAssistant::load_with(&a.model, &opts).with_context(|| format!("cannot load {}", a.model.display()))?;
    let session = Session::new();
    session.set_assistant(Arc::new(assistant));
    let monitor = a.monitor.map_or(MonitorChoice::Primary, MonitorChoice::Index);
    let rewind = Rewind::new();
    rewind.start(cfg, Box::new(XcapCapture { monitor, region: None }), Box::new(XcapWindows))?;
    eprintln!("screenpilot watch: recording the screen into memory only (nothing is written to disk unless you type `save`)");
    eprintln!("{HELP}");
    for line in std::io::stdin().lock().lines() {
        let line = line.context("cannot read stdin")?;
        match parse_line(&line) {
            Ok(Line::Quit) => break,
            Ok(l) => {
                if let Err(e) = handle(l, &session, &rewind) {
                    eprintln!("error: {e}");
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    rewind.stop();
    eprintln!("screenpilot watch: stopped; the frames are gone");
    Ok(ExitCode::SUCCESS)
}

fn handle(line: Line, session: &Session, rewind: &Rewind) -> anyhow::Result<()> {
    let mut print = |p: &str| {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(p.as_bytes()).and_then(|()| o.flush());
    };
    let out = match line {
        Line::Empty => return Ok(()),
        Line::Status | Line::Quit => {
            eprintln!("{}", describe(&rewind.status()));
            return Ok(());
        }
        Line::Save(seconds, dir) => {
            let view = rewind.clip(seconds)?;
            let files = save_clip(&view.clip, &dir)?;
            eprintln!("saved {} frames ({:.1} s) to {}", files.len() - 1, view.seconds, dir.display());
            return Ok(());
        }
        Line::Last(seconds, q) => ask_recent(session, rewind, seconds, &q, &mut print)?,
        Line::Changed(q) => ask_changed(session, rewind, &q, &mut print)?,
        Line::More(q) => session.ask(&q, &mut print)?,
    };
    crate::out_line("")?;
    let t = &out.timings.engine;
    eprintln!("({:.0} ms to the first token, {} prompt tokens, {} cached) {}", t.ttft_ms, t.prompt_tokens, t.cached_prompt_tokens, describe(&rewind.status()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_and_bad_ones_explained() {
        assert_eq!(parse_line("last 10: what did it say?"), Ok(Line::Last(10.0, "what did it say?".into())));
        assert_eq!(parse_line(" last 2.5 :why"), Ok(Line::Last(2.5, "why".into())));
        assert_eq!(parse_line("changed: what changed?"), Ok(Line::Changed("what changed?".into())));
        assert_eq!(parse_line("more: and then?"), Ok(Line::More("and then?".into())));
        assert_eq!(parse_line("save 20 /tmp/my clip"), Ok(Line::Save(20.0, PathBuf::from("/tmp/my clip"))));
        assert_eq!((parse_line("status"), parse_line("quit"), parse_line("  ")), (Ok(Line::Status), Ok(Line::Quit), Ok(Line::Empty)));
        for (bad, says) in [("hello", "not understood"), ("last x: q", "not a number"), ("last 0: q", "not a number"), ("last 5:  ", "no question"), ("save 5", "seconds and a folder"), ("last: q", "not understood")] {
            let e = parse_line(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn regions_are_four_numbers() {
        assert_eq!(parse_region("1, 2,30,40"), Ok(Region { x: 1, y: 2, width: 30, height: 40 }));
        assert!(parse_region("1,2,3").is_err() && parse_region("a,b,c,d").is_err());
    }
}
