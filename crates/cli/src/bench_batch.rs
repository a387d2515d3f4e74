//! `screenpilot bench --batch N`: N requests of the speed workload through the engine, submitted
//! at once (continuous batching: each joins after its prefill, and every round decodes all of
//! them in one batched model pass), against the same N requests one at a time through the same
//! engine. Every request has the single run's image size and token counts but its own question
//! text, so none coalesces; both caches are off, so every request runs its own vision and
//! prefill as the single run does.

use std::sync::Arc;

use anyhow::{bail, Context};
use screenpilot_engine::bench::{all_at_once, one_at_a_time, ThroughputRun};
use screenpilot_engine::{
    ChatMessage, ContentPart, Engine, EngineConfig, EngineHandle, GenerationOptions, ImageSource, Request,
    RequestLimits, Role, ValidRequest,
};
use screenpilot_model::{PreprocessConfig, Qwen3Vl, Tokenizer};
use serde_json::json;

use crate::bench::stats;

/// The workload each of the N requests repeats.
pub struct BatchWorkload<'a> {
    pub requests: usize,
    pub image: &'a image::DynamicImage,
    pub system_tokens: usize,
    pub text_tokens: usize,
    pub new_tokens: usize,
    /// Measured repetitions (after one warm-up of the batched run).
    pub reps: usize,
}

/// Words that are one token each, leading space included (" hello"): a text made of them has
/// exactly as many tokens as words, whatever their order.
pub fn word_pool(tok: &Tokenizer) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    for id in 1000u32..100_000 {
        if words.len() == 512 {
            break;
        }
        let w = tok.decode(&[id])?;
        let letters = w.strip_prefix(' ').is_some_and(|l| l.len() >= 3 && l.bytes().all(|b| b.is_ascii_lowercase()));
        if letters && tok.encode(&w)? == [id] {
            words.push(w);
        }
    }
    if words.len() < 64 {
        bail!("the tokenizer has too few single-token words ({}) to build the benchmark's text", words.len());
    }
    Ok(words)
}

/// `n` words of the pool; each `salt` gives a different text.
pub fn text_of(words: &[String], n: usize, salt: usize) -> String {
    (0..n).map(|i| words[(i * 7919 + salt * 104_729) % words.len()].as_str()).collect()
}

fn requests(tok: &Tokenizer, w: &BatchWorkload, limits: &RequestLimits) -> anyhow::Result<Vec<ValidRequest>> {
    let words = word_pool(tok)?;
    let image = ImageSource::Image(Arc::new(w.image.clone()));
    let system = text_of(&words, w.system_tokens, 0);
    (0..w.requests)
        .map(|i| {
            let question = text_of(&words, w.text_tokens, i + 1);
            let n = tok.encode(&question)?.len();
            if n != w.text_tokens {
                bail!("the benchmark question has {n} tokens instead of {}", w.text_tokens);
            }
            let mut messages = Vec::new();
            if w.system_tokens > 0 {
                messages.push(ChatMessage::text(Role::System, system.clone()));
            }
            messages.push(ChatMessage {
                role: Role::User,
                parts: vec![ContentPart::Image(image.clone()), ContentPart::Text(question)],
            });
            let options = GenerationOptions { max_tokens: w.new_tokens, ignore_eos: true, ..Default::default() };
            Ok(ValidRequest::new(Request { messages, options, tools: Vec::new() }, limits)?)
        })
        .collect()
}

fn summary(runs: &[ThroughputRun]) -> serde_json::Value {
    let col = |f: fn(&ThroughputRun) -> f64| stats(&runs.iter().map(f).collect::<Vec<_>>());
    json!({
        "wall_ms": col(|r| r.wall_ms),
        "throughput_tokens_per_s": col(|r| r.throughput_tokens_per_s),
        "decode_tokens_per_s": col(|r| r.decode_tokens_per_s),
        "mean_batch": col(|r| r.mean_batch),
        "mean_ttft_ms": col(|r| r.timings.iter().map(|t| t.ttft_ms).sum::<f64>() / r.timings.len().max(1) as f64),
    })
}

/// Runs the batch comparison on `model` (moved into an engine) and returns its JSON report.
pub fn run(model: Qwen3Vl, tok: Tokenizer, pcfg: PreprocessConfig, w: &BatchWorkload) -> anyhow::Result<serde_json::Value> {
    let limits = RequestLimits { max_tokens: w.new_tokens.max(RequestLimits::default().max_tokens), ..Default::default() };
    let reqs = requests(&tok, w, &limits)?;
    let cfg = EngineConfig { max_batch: w.requests, queue_capacity: w.requests, limits, ..Default::default() };
    let handle = EngineHandle::spawn(Engine::new(model, tok, pcfg, cfg.without_caches()))?;
    all_at_once(&handle, &reqs).context("batched warm-up")?;
    let (mut alone, mut batched) = (Vec::new(), Vec::new());
    for _ in 0..w.reps.max(1) {
        alone.push(one_at_a_time(&handle, &reqs)?);
        batched.push(all_at_once(&handle, &reqs)?);
    }
    let ratio = |f: fn(&ThroughputRun) -> f64| {
        stats(&alone.iter().zip(&batched).map(|(a, b)| f(b) / f(a)).collect::<Vec<_>>())
    };
    let same_tokens = alone.iter().zip(&batched).all(|(a, b)| a.token_ids == b.token_ids);
    Ok(json!({
        "requests": w.requests,
        "how": "distinct question text per request (same image size and token counts as the single run), \
                caches off; one_at_a_time submits each after the previous finished, batched submits all at \
                once (continuous batching, one decode pass per round); ratios are batched / one_at_a_time",
        "prompt_tokens": batched.last().and_then(|r| r.timings.first()).map(|t| t.prompt_tokens),
        "reps": batched.len(),
        "one_at_a_time": summary(&alone),
        "batched": summary(&batched),
        "decode_ratio": ratio(|r| r.decode_tokens_per_s),
        "throughput_ratio": ratio(|r| r.throughput_tokens_per_s),
        "same_tokens_as_one_at_a_time": same_tokens,
        "batched_request_timings": batched.last().map(|r| r.timings.clone()),
    }))
}

/// The batch section of the table.
pub fn print_table(b: &serde_json::Value) -> std::io::Result<()> {
    let f = |v: &serde_json::Value| v.as_f64().map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    crate::out_line(&format!(
        "batch of {} through the engine (caches off, distinct questions, prompt {} tokens each), medians of {} reps",
        b["requests"], b["prompt_tokens"], b["reps"]
    ))?;
    crate::out_line(&format!("{:<34}{:>14}{:>12}{:>10}", "metric", "one at a time", "batched", "ratio"))?;
    for (k, ratio) in [
        ("decode_tokens_per_s", "decode_ratio"),
        ("throughput_tokens_per_s", "throughput_ratio"),
        ("wall_ms", ""),
        ("mean_ttft_ms", ""),
        ("mean_batch", ""),
    ] {
        let (a, z) = (&b["one_at_a_time"][k]["median"], &b["batched"][k]["median"]);
        let r = if ratio.is_empty() { "".into() } else { format!("{}x", f(&b[ratio]["median"])) };
        crate::out_line(&format!("{:<34}{:>14}{:>12}{:>10}", k, f(a), f(z), r))?;
    }
    let same = if b["same_tokens_as_one_at_a_time"].as_bool() == Some(true) { "yes" } else { "no" };
    crate::out_line(&format!("{:<34}{:>14}", "same tokens as one at a time", same))
}
