//! Serving Qwen3-VL: the second question about an image is nearly free, and no output changes.
//!
//! - [`vision_cache`]: the vision tower's output per image, keyed by a hash of the preprocessed
//!   pixels and grid, LRU under a byte budget.
//! - [`prefix_cache`]: KV caches of earlier sequences, reused for any prompt whose token ids and
//!   images agree on a prefix.
//! - [`engine`]: the synchronous core that owns the model and both caches.
//! - [`service`]: the async handle ([`EngineHandle`]) — a bounded queue, one worker thread,
//!   continuous batching (every active sequence decoded in one batched model pass per round),
//!   cancellation and coalescing of identical requests.
//! - [`reasoning`]: a Thinking model's reasoning told apart from its answer as the text streams.
//! - [`intake`]: reading and decoding a request's images off the engine thread, under limits.
//! - [`video`]: a request's videos sampled and preprocessed ([`video_file`] decodes files).
//! - [`load`]: the one loader of a model folder (model, tokenizer, preprocessing, generation
//!   defaults) for every front end.
//! - [`server`]: an OpenAI-compatible HTTP API (axum).
//! - [`backend`]: where answers come from, the local engine or an OpenAI-compatible server.
//! - [`bench`]: measuring a second question on the same image, and batched throughput;
//!   [`bench_task`]: the steps of a GUI task, each with one more screenshot.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod backend;
pub mod bench;
pub mod bench_task;
pub mod engine;
pub mod error;
pub mod events;
mod images;
pub mod intake;
pub mod load;
pub mod memory;
pub mod prefix_cache;
pub mod reasoning;
pub mod request;
pub mod sequence;
pub mod server;
pub mod service;
pub mod video;
pub mod video_file;
pub mod vision_cache;

pub use engine::{CacheReport, Completion, Engine, EngineConfig};
pub use error::{EngineError, Result};
pub use events::{Event, FinishReason, PromptLogits, RequestTimings, StepLogits, TokenEvent};
pub use request::{
    Clip, VideoSource,
    ChatMessage, ContentPart, GenerationOptions, ImageSource, Request, RequestLimits, Role, ValidRequest,
};
pub use server::{bind, serve, serve_on, ServeConfig};
pub use service::{EngineHandle, EngineStats, EventStream};
