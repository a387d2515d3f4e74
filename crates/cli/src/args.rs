//! Raw command-line flags (clap). Validation and defaults are resolved where they are used.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use screenpilot_model::QuantType;

#[derive(Parser, Debug)]
#[command(name = "screenpilot", version, about = "Qwen3-VL on your own GPU: ask about screenshots, ground, act")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Threads of the CPU pool that runs quantized matmuls and large elementwise ops; fewer can be
    /// faster on a busy computer [default: one a physical core, or $CANDLE_NUM_THREADS].
    #[arg(long, global = true)]
    pub threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Ask a question about zero or more images; streams the answer.
    Ask(AskArgs),
    /// Find things on a screenshot; prints boxes and click points in screen pixels as JSON.
    /// Exits 3 when the model's answer holds no box or point.
    Ground(GroundArgs),
    /// Serve an OpenAI-compatible API (/v1/chat/completions, /v1/models).
    Serve(ServeArgs),
    /// Measure the speed workload (image + text prompt, then greedy tokens).
    Bench(BenchArgs),
    /// Check the audit log of the agent's actions (`audit verify FILE`).
    Audit(crate::audit::AuditArgs),
    /// Measure each step of a GUI task (k screenshots at step k) through the engine's caches.
    BenchTask(crate::bench_task::BenchTaskArgs),
    /// Carry out a GUI task on a monitor: screenshot, model, proposed action, your yes/no, repeat.
    #[cfg(feature = "os")]
    #[command(after_help = crate::task::EXIT_CODES)]
    Do(DoArgs),
    /// Check on each monitor that the model's coordinates land where they should: moves the pointer
    /// to five targets and reads it back (no clicks). Exits 3 when a target is off.
    #[cfg(feature = "os")]
    Calibrate(crate::calibrate::CalibrateArgs),
    /// Offer the screen to other agents as an MCP server (stdio, or streamable HTTP with --http):
    /// questions and grounding by the local model; screenshots and actions only when allowed.
    #[cfg(feature = "os")]
    Mcp(Box<crate::mcp::McpArgs>),
    /// Keep the last seconds of the screen in memory (nothing on disk) and answer questions typed
    /// on stdin about them: `last 10: what did that dialog say?`, `changed: what changed?`.
    #[cfg(feature = "os")]
    Watch(crate::watch::WatchArgs),
    /// What quantizing the language model costs in quality: KL divergence, top-1 and greedy
    /// agreement against the unquantized model over a fixed set of prompts with screens.
    QuantEval(crate::quant_eval::QuantEvalArgs),
    /// Re-run a recorded task's model outputs through the parser, the coordinate mapping and the
    /// policy (no input events) and report every difference from the recording. Exits 3 on one.
    Replay(crate::replay::ReplayArgs),
}

/// Where answers come from: the local model (`--model DIR`) or an OpenAI-compatible server.
#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// An OpenAI-compatible server instead of a local model: its base URL ending in /v1
    /// (`screenpilot serve`, vLLM, SGLang; see README "Remote backends").
    #[arg(long, value_name = "URL", conflicts_with = "model")]
    pub backend: Option<String>,
    /// The server's model to use (default: the first of its /v1/models).
    #[arg(long, value_name = "NAME", requires = "backend")]
    pub backend_model: Option<String>,
    /// The server's API key (default: $SCREENPILOT_API_KEY). Never printed or logged.
    #[arg(long, value_name = "KEY", requires = "backend")]
    pub api_key: Option<String>,
    /// Ask the server for whole answers instead of streamed ones.
    #[arg(long, requires = "backend")]
    pub no_stream: bool,
}

/// A local model folder, or a server with `--backend` (commands that run GUI tasks).
#[derive(Args, Debug)]
pub struct ModelSource {
    /// A local Qwen3-VL folder (or use --backend).
    #[arg(long, required_unless_present = "backend")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Args, Debug)]
pub struct DoArgs {
    #[command(flatten)]
    pub source: ModelSource,
    /// The monitor to work on, by its position in the system's list (default: the primary one).
    #[arg(long)]
    pub monitor: Option<usize>,
    /// Do not ask before each action (within --max-steps; some actions always ask: README "Safety").
    #[arg(long)]
    pub auto: bool,
    /// The most actions in --auto mode (the model gets twice as many turns).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_steps: u32,
    /// Least time between two automatic actions, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub min_interval_ms: u64,
    /// Append every decision to this hash-chained audit log (check it with `audit verify`).
    #[arg(long)]
    pub audit: Option<PathBuf>,
    /// Record the task into this new (or empty) folder: screenshots, model outputs, actions,
    /// decisions, timings. `screenpilot replay DIR` re-checks it.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Most tokens the model may write per step.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..100_000))]
    pub max_tokens: u32,
    /// What to do, in your words.
    pub task: String,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    Metal,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtypeArg {
    F32,
    Bf16,
    F16,
}

/// Which model folder, and how it runs.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A Qwen3-VL folder (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// How a model runs: device, precision and limits.
#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Default: cuda or metal when built with it and present, else cpu.
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// Default: bf16 on a GPU, f32 on the CPU.
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Cap on visual tokens per image (a 2560x1440 screen is ~3600 at the model's bounds).
    #[arg(long)]
    pub max_image_tokens: Option<usize>,
    /// Longest prompt + answer in tokens (default: the model's max_position_embeddings).
    #[arg(long)]
    pub context: Option<usize>,
    /// Our fused CUDA kernels: all, flash (attention only) or off (candle's ops), to measure them
    /// [default: all, or SCREENPILOT_FUSED=0|flash].
    #[arg(long, value_enum)]
    pub fused: Option<FusedArg>,
    /// The cuBLASLt matmul with bias (and GELU) in its epilogue: on, bias (GELU after it) or off
    /// [default: on, or SCREENPILOT_LT=0|bias].
    #[arg(long, value_enum)]
    pub cublaslt: Option<CublasLtArg>,
    /// Decode steps replayed as CUDA graphs [default: on, or SCREENPILOT_CUDA_GRAPHS=0].
    #[arg(long, value_enum)]
    pub cuda_graphs: Option<OnOff>,
    /// Quantize the language model's linear layers at load: q8_0, q6_k, q5_k, q4_k or q4_0
    /// (llama.cpp's formats; the vision tower keeps --dtype) [default: none].
    #[arg(long, value_parser = parse_quant)]
    pub quant: Option<QuantType>,
}

pub(crate) fn parse_quant(s: &str) -> Result<QuantType, String> {
    s.parse()
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedArg {
    All,
    Flash,
    Off,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CublasLtArg {
    On,
    Bias,
    Off,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Always take the most likely token (the default unless the model's
    /// generation_config.json asks for sampling).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k"])]
    pub greedy: bool,
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub repetition_penalty: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the answer contains this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AskArgs {
    /// A Qwen3-VL folder (config.json, *.safetensors, tokenizer.json), or use --backend.
    #[arg(long, required_unless_present = "backend")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// An image to ask about (repeatable; in order).
    #[arg(long)]
    pub image: Vec<PathBuf>,
    /// A video file to ask about (mp4, webm, mkv, mov, avi; repeatable; after the images).
    #[arg(long)]
    pub video: Vec<PathBuf>,
    /// A folder of images taken as the frames of a clip, in name order, --fps a second
    /// (repeatable; after the videos).
    #[arg(long, value_name = "DIR")]
    pub frames: Vec<PathBuf>,
    /// Frames a second of the --frames clips.
    #[arg(long, default_value_t = 2.0, requires = "frames")]
    pub fps: f64,
    /// A system turn.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Print one JSON object (prompt ids, per-step top-5 raw logits, text, timings) instead of
    /// streaming. Local model only.
    #[arg(long)]
    pub json: bool,
    /// Write the raw logits of the last prompt position here (little-endian f32), for
    /// comparisons. Local model only.
    #[arg(long)]
    pub dump_logits: Option<PathBuf>,
    /// The question.
    pub question: String,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A real model folder (otherwise random weights at --shape).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Random weights at a published shape: 2b, 4b or 8b (default 2b).
    #[arg(long)]
    pub shape: Option<String>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Side of the square synthetic screenshot, in pixels.
    #[arg(long, default_value_t = 1024)]
    pub image_size: u32,
    /// Instead of a screenshot, a rewind of the screen: this many seconds of a synthetic
    /// `--screen` at `--rewind-fps`, sent as a video (Qwen3-VL's published video settings).
    #[arg(long)]
    pub rewind: Option<f64>,
    /// Frames per second of `--rewind`.
    #[arg(long, default_value_t = 2.0)]
    pub rewind_fps: f64,
    /// The screen of `--rewind`, WIDTHxHEIGHT.
    #[arg(long, default_value = "1920x1080", value_parser = parse_size)]
    pub screen: (u32, u32),
    /// Text tokens of the question after the image.
    #[arg(long, default_value_t = 512)]
    pub text_tokens: usize,
    /// Tokens of a system turn before the image (0 = none).
    #[arg(long, default_value_t = 0)]
    pub system_tokens: usize,
    /// Tokens to generate greedily.
    #[arg(long, default_value_t = 128)]
    pub new_tokens: usize,
    /// New tokens of the second question on the same image.
    #[arg(long, default_value_t = 30)]
    pub followup_tokens: usize,
    /// Measured repetitions (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Concurrent requests: above 1, after the single runs, this many requests of the workload
    /// (distinct question text) go through the engine at once, decoded in batches, and one at
    /// a time, and both are reported.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// tokenizer.json (default: the model folder's, or with --shape
    /// tests/fixtures/tokenizer/tokenizer.json under the current folder).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// After the measured runs, one more with the device synchronised around every stage,
    /// printing where the time goes.
    #[arg(long)]
    pub profile: bool,
}

#[derive(Args, Debug)]
pub struct GroundArgs {
    /// A Qwen3-VL folder (config.json, *.safetensors, tokenizer.json), or use --backend.
    #[arg(long, required_unless_present = "backend")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The screenshot.
    #[arg(long)]
    pub image: PathBuf,
    /// Where the screenshot's monitor starts in the OS's global coordinates ("x,y"; may be negative).
    #[arg(long, value_parser = parse_origin, default_value = "0,0", allow_hyphen_values = true)]
    pub origin: (i32, i32),
    /// The monitor's scale factor (physical pixels per logical pixel).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Report logical points (macOS) instead of physical pixels (X11, Windows).
    #[arg(long)]
    pub logical: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// What to find, e.g. "the OK button".
    pub query: String,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or("expected WIDTHxHEIGHT")?;
    let side = |v: &str| v.trim().parse::<u32>().ok().filter(|&n| n > 0).ok_or(format!("{v:?} is not a positive size"));
    Ok((side(w)?, side(h)?))
}

fn parse_origin(s: &str) -> Result<(i32, i32), String> {
    let (x, y) = s.split_once(',').ok_or("expected x,y")?;
    Ok((x.trim().parse().map_err(|e| format!("x: {e}"))?, y.trim().parse().map_err(|e| format!("y: {e}"))?))
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (loopback by default; others need --api-key).
    #[arg(long, default_value_t = crate::serve::default_host())]
    pub host: std::net::IpAddr,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` (also read from SCREENPILOT_API_KEY).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Model id reported by the API (default: the folder's name).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Requests waiting beyond this many get 429.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Budget of the vision-feature cache.
    #[arg(long, default_value_t = 1024)]
    pub vision_cache_mib: usize,
    /// Budget of the prefix KV cache.
    #[arg(long, default_value_t = 1024)]
    pub prefix_cache_mib: usize,
    /// Let image URLs name regular files under DIR (`file:///...` or an absolute path);
    /// repeatable. Without it no local file is read.
    #[arg(long = "allow-local-files", value_name = "DIR")]
    pub allow_local_files: Vec<std::path::PathBuf>,
    /// Also answer requests whose Host (or browser Origin) is NAME (`name` or `name:port`);
    /// repeatable. By default only this address, localhost, 127.0.0.1 and [::1].
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_host: Vec<String>,
    /// Largest image accepted, in pixels (width x height), checked before decoding.
    #[arg(long, default_value_t = 100_000_000)]
    pub max_image_pixels: u64,
    /// Largest image width or height accepted, in pixels.
    #[arg(long, default_value_t = 16384)]
    pub max_image_side: u32,
    /// Largest image file or data accepted, in MiB.
    #[arg(long, default_value_t = 64)]
    pub max_image_file_mib: u64,
    /// Largest `max_tokens` a request may ask for (default: the model's context length).
    #[arg(long)]
    pub max_tokens_cap: Option<usize>,
    /// Answers decoded together in one batched model pass.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Answers in progress at once (beyond a batch they take turns, so that a new request is
    /// not kept waiting behind long answers); each holds its KV cache.
    #[arg(long, default_value_t = 32)]
    pub max_active: usize,
    /// Open connections at once; more wait until one closes.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Seconds a connection has to send its request head (also the keep-alive idle timeout).
    #[arg(long, default_value_t = 10)]
    pub header_timeout_s: u64,
    /// Seconds a request has to send its body.
    #[arg(long, default_value_t = 60)]
    pub body_timeout_s: u64,
}
