//! What the engine reports about a request while it runs: tokens as they are generated, the
//! request's timings, and how it finished (or an error).

use std::sync::Arc;

use serde::Serialize;

use crate::error::EngineError;

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-answer token.
    Stop,
    /// A stop string appeared (it is not part of the text).
    StopString,
    /// `max_tokens` were generated.
    Length,
    /// Every subscriber went away (or cancelled explicitly).
    Cancelled,
}

impl FinishReason {
    /// The OpenAI `finish_reason`.
    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::StopString | FinishReason::Cancelled => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Where the time of one request went, in milliseconds, and what the caches saved.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestTimings {
    /// From submission until the worker took the request.
    pub queue_ms: f64,
    /// Decoding and preprocessing the images.
    pub preprocess_ms: f64,
    /// The vision tower (0 when every image was a cache hit).
    pub vision_ms: f64,
    pub images: usize,
    /// Images resized and patchified for this request (the others were decoded images whose
    /// preprocessing the engine remembered from an earlier request).
    pub images_preprocessed: usize,
    /// Images whose features came from the vision cache (the tower did not run for them).
    pub vision_cache_hits: usize,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_prompt_tokens: usize,
    /// Prompt tokens actually prefilled.
    pub prefill_tokens: usize,
    pub prefill_ms: f64,
    /// From submission until the first token was chosen.
    pub ttft_ms: f64,
    /// Tokens generated after the first.
    pub decode_tokens: usize,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
    /// Generated tokens in all.
    pub completion_tokens: usize,
}

/// One generated token: its id and the text it released (may be empty while a multi-byte
/// character, a possible stop string or a possible `</think>` is held back, and is empty for an
/// end-of-answer token). Every generated token has its event, the end token included.
///
/// A Thinking model's reasoning comes in `reasoning`, its answer in `text`
/// ([`crate::reasoning`]); for an Instruct model `reasoning` is always empty.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent {
    pub id: u32,
    /// Answer text: never any of the reasoning.
    pub text: String,
    /// Reasoning text (a Thinking model's, before its `</think>`; the tags are not included).
    pub reasoning: String,
    /// The raw logits of this step, when the engine traces them
    /// ([`crate::EngineConfig::trace_logits`]); None otherwise.
    pub logits: Option<Arc<StepLogits>>,
}

/// What the engine traces about one step, for comparisons with a reference implementation
/// (`screenpilot ask --json` and `--dump-logits`).
#[derive(Debug, Clone, PartialEq)]
pub struct StepLogits {
    /// The highest raw logits of the step (before any repetition penalty or temperature),
    /// highest first, ties by lower id.
    pub top: Vec<(u32, f32)>,
    /// First step only: the prompt as the model saw it and the whole raw logits of its last
    /// position (what chose the first token).
    pub prompt: Option<PromptLogits>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PromptLogits {
    pub token_ids: Vec<u32>,
    pub last_logits: Vec<f32>,
}

/// What a request's stream yields: tokens, then its timings, then how it finished; or an error.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Token(TokenEvent),
    Timings(RequestTimings),
    Finished(FinishReason),
    Error(EngineError),
}
