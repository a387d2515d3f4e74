//! `screenpilot ask`: stream an answer about images, or print it as one JSON object. The
//! request goes through the engine's worker as the server's requests do (caches off: one
//! question per process), or to an OpenAI-compatible server with `--backend URL`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use screenpilot_engine::backend::Backend;
use screenpilot_engine::{
    ChatMessage, ContentPart, EngineConfig, Event, FinishReason, GenerationOptions, ImageSource, PromptLogits,
    Request, RequestLimits, RequestTimings, Role,
};
use serde::Serialize;
use serde_json::json;

use crate::args::AskArgs;
use crate::backend::{open, LocalEngine, Opened};
use crate::load::sampling;

/// How many of each step's highest logits `--json` prints.
const TOP: usize = 5;

pub fn run(a: AskArgs) -> anyhow::Result<ExitCode> {
    check_max_tokens(a.sampling.max_tokens)?;
    let trace = a.json || a.dump_logits.is_some();
    if trace && a.backend.backend.is_some() {
        bail!("--json and --dump-logits need a local model (--model DIR): a remote server reports no logits");
    }
    let opened = open(&a.backend, a.model.as_deref(), &a.runtime, engine_config(if trace { TOP } else { 0 }))?;
    let images: Vec<ImageSource> = a.image.iter().cloned().map(ImageSource::Path).collect();
    let options = options(&opened, &a.sampling)?;
    let request = request(images, a.system.as_deref(), &a.question, options);
    let l = match opened {
        Opened::Local(l) => l,
        Opened::Remote(r) => return remote(&r, request),
    };
    let Some(ans) = answer(&l, request, !a.json)? else {
        return Ok(ExitCode::SUCCESS); // stdout closed (e.g. piped into `head`): stop quietly
    };
    if let Some(path) = &a.dump_logits {
        let logits = ans.prompt.as_ref().map(|p| p.last_logits.as_slice()).unwrap_or_default();
        let bytes: Vec<u8> = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    let timings = CliTimings { request: ans.timings.clone(), load_ms: Some(l.load_ms) };
    if a.json {
        let prompt_ids = ans.prompt.as_ref().map(|p| p.token_ids.as_slice()).unwrap_or_default();
        let steps: Vec<_> = ans.steps.iter().map(|(id, top)| json!({"id": id, "top": top})).collect();
        let obj = json!({"prompt_token_ids": prompt_ids, "steps": steps, "text": ans.text,
                         "finish_reason": ans.finish, "timings": timings});
        crate::out_line(&obj.to_string())?;
    } else {
        crate::out_line("")?;
        let t = &ans.timings;
        eprintln!(
            "[{} prompt tokens, {} images] preprocess {:.1} ms | vision {:.1} ms | prefill {:.1} ms | \
             first token {:.1} ms | decode {} tokens at {:.1} tok/s",
            t.prompt_tokens, t.images, t.preprocess_ms, t.vision_ms, t.prefill_ms, t.ttft_ms, t.decode_tokens,
            t.decode_tokens_per_s
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses `--max-tokens 0` before the model is loaded: it would answer nothing and exit 0.
/// Too large a value is refused once the context length is known ([`options`]).
pub fn check_max_tokens(n: usize) -> anyhow::Result<()> {
    if n == 0 {
        anyhow::bail!("--max-tokens must be at least 1");
    }
    Ok(())
}

/// The engine of one command: both caches off (one request per process), one request at a time,
/// and no limits but the context (the user runs their own command). `trace_logits`: how many of
/// each step's highest logits the token events carry (0: none).
pub fn engine_config(trace_logits: usize) -> EngineConfig {
    let limits = RequestLimits {
        max_images: usize::MAX,
        max_videos: usize::MAX,
        max_tokens: usize::MAX,
        max_stop_strings: usize::MAX,
        max_text_bytes: usize::MAX,
    };
    EngineConfig { queue_capacity: 1, max_batch: 1, max_active: 1, limits, trace_logits, ..Default::default() }
        .without_caches()
}

/// The request options from the flags: the local model's generation_config.json fills in what
/// they leave open (a remote server gets exactly the flags, greedy by default).
pub fn options(opened: &Opened, args: &crate::args::SamplingArgs) -> anyhow::Result<GenerationOptions> {
    let Opened::Local(l) = opened else {
        return Ok(sampling(args, &Default::default()));
    };
    if args.max_tokens > l.context {
        bail!("--max-tokens is {}; the context holds {} (prompt and answer together)", args.max_tokens, l.context);
    }
    Ok(sampling(args, &l.defaults))
}

/// One user turn: the images in order, then the question; after an optional system turn.
pub fn request(images: Vec<ImageSource>, system: Option<&str>, question: &str, options: GenerationOptions) -> Request {
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(ChatMessage::text(Role::System, s));
    }
    let mut parts: Vec<ContentPart> = images.into_iter().map(ContentPart::Image).collect();
    parts.push(ContentPart::Text(question.to_string()));
    messages.push(ChatMessage { role: Role::User, parts });
    Request { messages, options, tools: Vec::new() }
}

/// The engine's timings of a request (serialised as the server's `timings`), with the time
/// the model took to load.
#[derive(Debug, Clone, Serialize)]
pub struct CliTimings {
    #[serde(flatten)]
    pub request: RequestTimings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<f64>,
}

/// A local answer, as the engine's events told it.
pub struct Answer {
    /// The prompt and the first step's raw logits (when the engine traces logits).
    pub prompt: Option<PromptLogits>,
    /// Each generated id (the end token included) with its step's highest raw logits (empty
    /// when not traced).
    pub steps: Vec<(u32, Vec<(u32, f32)>)>,
    pub text: String,
    pub finish: FinishReason,
    pub timings: RequestTimings,
}

/// Runs `request` on the local engine, writing the text to stdout as it comes when `stream`.
/// None when stdout was closed (the request is then cancelled).
pub fn answer(l: &LocalEngine, request: Request, stream: bool) -> anyhow::Result<Option<Answer>> {
    let handle = l.backend.handle();
    let mut events = handle.submit(handle.validate(request)?)?;
    let (mut prompt, mut steps, mut text) = (None, Vec::new(), String::new());
    let (mut finish, mut timings) = (None, RequestTimings::default());
    let mut out = std::io::stdout().lock();
    while let Some(ev) = events.blocking_next() {
        match ev {
            Event::Token(t) => {
                let mut top = Vec::new();
                if let Some(logits) = &t.logits {
                    top.clone_from(&logits.top);
                    if prompt.is_none() {
                        prompt.clone_from(&logits.prompt);
                    }
                }
                steps.push((t.id, top));
                text.push_str(&t.text);
                if stream && !t.text.is_empty() && (out.write_all(t.text.as_bytes()).is_err() || out.flush().is_err()) {
                    events.cancel();
                    return Ok(None);
                }
            }
            Event::Timings(t) => timings = t,
            Event::Finished(f) => finish = Some(f),
            Event::Error(e) => return Err(e.into()),
        }
    }
    let Some(finish) = finish else { bail!("the engine stopped before answering") };
    Ok(Some(Answer { prompt, steps, text, finish, timings }))
}

/// `ask --backend URL`: streams the server's answer.
fn remote(backend: &dyn Backend, request: Request) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut closed = false;
    let reply = backend.chat(request, &mut |piece| {
        closed = closed || out.write_all(piece.as_bytes()).is_err() || out.flush().is_err();
    })?;
    drop(out);
    if closed {
        return Ok(ExitCode::SUCCESS);
    }
    crate::out_line("")?;
    let t = &reply.timings;
    eprintln!(
        "[{}] {} prompt tokens | answered {} tokens in {:.1} ms ({:?})",
        backend.describe(),
        t.prompt_tokens,
        t.completion_tokens,
        start.elapsed().as_secs_f64() * 1000.0,
        reply.finish_reason
    );
    Ok(ExitCode::SUCCESS)
}
