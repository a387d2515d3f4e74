//! Where answers come from: one [`Backend`] notion for every front end (the CLI's `ask`,
//! `ground` and `do`, the HTML generation, the app).
//!
//! - [`LocalBackend`]: this machine's engine, through its [`crate::EngineHandle`] (the one
//!   generation loop: caches, batching, sampling, stop strings and repetition penalty as the
//!   server has them).
//! - [`RemoteBackend`]: any OpenAI-compatible server (`screenpilot serve` on a GPU box, vLLM or
//!   SGLang serving a model that outgrows one GPU).
//!
//! Both take an engine [`Request`] and give a [`Reply`] whose text is in Qwen's own format: a
//! remote server's structured `tool_calls` are written back as `<tool_call>` blocks, so callers
//! parse one format whichever backend answered.

mod local;
mod remote;
pub mod tool_text;

pub use local::LocalBackend;
pub use remote::{RemoteBackend, RemoteConfig};

use crate::error::Result;
use crate::events::{FinishReason, RequestTimings};
use crate::request::Request;

/// One answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The answer, with any tool calls as Qwen's `<tool_call>\n{json}\n</tool_call>` blocks;
    /// never a Thinking model's reasoning.
    pub text: String,
    /// A Thinking model's reasoning (the local engine's, or a remote server's
    /// `reasoning_content`); empty for other models.
    pub reasoning: String,
    pub finish_reason: FinishReason,
    /// The engine's timings (a remote backend reports only token counts, when it sends them).
    pub timings: RequestTimings,
}

/// Something that answers chat requests.
pub trait Backend: Send + Sync {
    /// Answers `request`, calling `on_text` with each piece of text to show as it arrives (a
    /// backend that does not stream calls it once): the answer, which a backend made for display
    /// may precede with a Thinking model's reasoning inside `<think>` … `</think>`;
    /// [`Reply::text`] never holds the reasoning. Blocks; must not be called from an async task.
    fn chat(&self, request: Request, on_text: &mut dyn FnMut(&str)) -> Result<Reply>;

    /// What answers, for messages and logs: "local engine" or the server's URL and model.
    /// Never holds a secret.
    fn describe(&self) -> String;
}
