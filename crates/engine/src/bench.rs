//! For benchmarks:
//! - a first question about an image, then a second, different question about the same image in
//!   a new conversation. The second one's timings show the vision-cache hit, the prompt tokens
//!   reused from the prefix cache, and the smaller time to first token;
//! - the throughput of several requests through the service, one at a time and all at once
//!   (then decoded together, one batched model pass per round).

use std::time::Instant;

use serde::Serialize;

use crate::engine::{ms, Engine};
use crate::error::{EngineError, Result};
use crate::events::{Event, RequestTimings};
use crate::request::{ChatMessage, ContentPart, GenerationOptions, ImageSource, Request, Role, ValidRequest};
use crate::service::{EngineHandle, EventStream};

/// The two questions to ask about one image.
#[derive(Debug, Clone)]
pub struct SecondQuestionCase {
    pub image: ImageSource,
    pub system: Option<String>,
    pub first: String,
    pub second: String,
    pub max_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecondQuestionReport {
    pub first: RequestTimings,
    pub second: RequestTimings,
}

impl SecondQuestionReport {
    /// How many times faster the second question reached its first token.
    pub fn ttft_speedup(&self) -> f64 {
        if self.second.ttft_ms > 0.0 {
            self.first.ttft_ms / self.second.ttft_ms
        } else {
            f64::INFINITY
        }
    }
}

fn ask(case: &SecondQuestionCase, question: &str) -> Request {
    let mut messages = Vec::new();
    if let Some(s) = &case.system {
        messages.push(ChatMessage::text(Role::System, s.clone()));
    }
    messages.push(ChatMessage {
        role: Role::User,
        parts: vec![ContentPart::Image(case.image.clone()), ContentPart::Text(question.to_string())],
    });
    Request { messages, options: GenerationOptions { max_tokens: case.max_tokens, ..Default::default() }, tools: Vec::new() }
}

/// Asks both questions, in order, on `engine` (whose caches decide how cheap the second is).
pub fn second_question(engine: &mut Engine, case: &SecondQuestionCase) -> Result<SecondQuestionReport> {
    let first = engine.validate(ask(case, &case.first))?;
    let first = engine.run(&first, &mut |_| {})?.timings;
    let second = engine.validate(ask(case, &case.second))?;
    let second = engine.run(&second, &mut |_| {})?.timings;
    Ok(SecondQuestionReport { first, second })
}

/// What several requests cost together.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRun {
    pub requests: usize,
    /// From the first submission until the last request finished.
    pub wall_ms: f64,
    pub completion_tokens: usize,
    /// Tokens generated after each request's first (each needed a decode pass).
    pub decode_tokens: usize,
    /// Time the worker spent in decode rounds (prefills and vision not included).
    pub decode_ms: f64,
    /// `completion_tokens` per second of wall time: the whole pipeline, prefills included.
    pub throughput_tokens_per_s: f64,
    /// `decode_tokens` per second of decode rounds: the aggregate decode speed.
    pub decode_tokens_per_s: f64,
    /// Sequences per decode round, on average.
    pub mean_batch: f64,
    /// Each request's timings, in request order.
    pub timings: Vec<RequestTimings>,
    /// Each request's generated ids, in request order.
    #[serde(skip)]
    pub token_ids: Vec<Vec<u32>>,
}

/// Runs `reqs` through the service one after another, each alone (the next is submitted when
/// the previous one finished).
pub fn one_at_a_time(handle: &EngineHandle, reqs: &[ValidRequest]) -> Result<ThroughputRun> {
    measure(handle, reqs, |h, reqs| reqs.iter().map(|r| drain(submit(h, r)?)).collect())
}

/// Submits all of `reqs` at once: the worker admits them one per round and decodes all that
/// have been prefilled together. The handle's queue and `max_batch` should hold them all.
/// Identical requests would share one computation, so they are refused.
pub fn all_at_once(handle: &EngineHandle, reqs: &[ValidRequest]) -> Result<ThroughputRun> {
    measure(handle, reqs, |h, reqs| {
        let streams = reqs.iter().map(|r| submit(h, r)).collect::<Result<Vec<_>>>()?;
        streams.into_iter().map(drain).collect()
    })
}

type Outputs = Vec<(Vec<u32>, RequestTimings)>;

fn measure(
    handle: &EngineHandle,
    reqs: &[ValidRequest],
    run: impl FnOnce(&EngineHandle, &[ValidRequest]) -> Result<Outputs>,
) -> Result<ThroughputRun> {
    let before = handle.stats();
    let t = Instant::now();
    let outputs = run(handle, reqs)?;
    let wall_ms = ms(t);
    let after = handle.stats();
    let (token_ids, timings): (Vec<_>, Vec<_>) = outputs.into_iter().unzip();
    let completion_tokens = timings.iter().map(|t| t.completion_tokens).sum();
    let decode_tokens = timings.iter().map(|t| t.decode_tokens).sum();
    let decode_ms = after.decode_ms - before.decode_ms;
    let rounds = after.decode_rounds.saturating_sub(before.decode_rounds);
    let per_s = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1000.0 / ms } else { 0.0 };
    Ok(ThroughputRun {
        requests: reqs.len(),
        wall_ms,
        completion_tokens,
        decode_tokens,
        decode_ms,
        throughput_tokens_per_s: per_s(completion_tokens, wall_ms),
        decode_tokens_per_s: per_s(decode_tokens, decode_ms),
        mean_batch: if rounds > 0 { (after.decode_steps - before.decode_steps) as f64 / rounds as f64 } else { 0.0 },
        timings,
        token_ids,
    })
}

fn submit(handle: &EngineHandle, req: &ValidRequest) -> Result<EventStream> {
    let stream = handle.submit(req.clone())?;
    if stream.coalesced() {
        return Err(EngineError::InvalidRequest(
            "benchmark requests must differ: identical ones share one computation".into(),
        ));
    }
    Ok(stream)
}

/// The generated ids and timings of one request, once it finished.
fn drain(mut stream: EventStream) -> Result<(Vec<u32>, RequestTimings)> {
    let (mut ids, mut timings) = (Vec::new(), RequestTimings::default());
    while let Some(ev) = stream.blocking_next() {
        match ev {
            Event::Token(t) => ids.push(t.id),
            Event::Timings(t) => timings = t,
            Event::Finished(_) => return Ok((ids, timings)),
            Event::Error(e) => return Err(e),
        }
    }
    Err(EngineError::Stopped)
}
