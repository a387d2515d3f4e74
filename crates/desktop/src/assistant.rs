//! The [`Assistant`] seam: "answer this question about these images, streaming tokens".
//! [`crate::engine_assistant::EngineAssistant`] answers through screenpilot-engine (vision and
//! prefix caches, so a follow-up about the same capture does not re-encode it);
//! [`ScriptedAssistant`] streams a fixed text (tests, the debug-only injection path).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;
use serde::Serialize;

use screenpilot_engine::backend::{Backend, LocalBackend};
use screenpilot_engine::{CacheReport, Clip, EngineHandle, RequestTimings};
use screenpilot_model::generate::Flow;
use screenpilot_model::ModelFolder;

use crate::error::{DesktopError, Result};

/// One earlier question and its answer (follow-ups see them).
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    /// What the user asked.
    pub question: String,
    /// What the assistant answered.
    pub answer: String,
}

/// A question about images.
#[derive(Debug, Clone, Copy)]
pub struct AskRequest<'a> {
    /// The images, in order (the capture).
    pub images: &'a [&'a RgbImage],
    /// A clip of the screen (rewind), sent as a video before the images; follow-ups pass the
    /// same `Arc`, so the engine reuses its preprocessing and features.
    pub clip: Option<&'a Arc<Clip>>,
    /// Earlier exchanges about the same images.
    pub history: &'a [Exchange],
    /// The new question.
    pub question: &'a str,
    /// Most tokens to generate.
    pub max_tokens: usize,
}

/// Wall-clock times of one answer: the engine's timings of the request (queue, preprocessing,
/// vision or cache hits, prefill, time to first token, decode), plus the whole request as the app
/// saw it. Serialised flat: the UI reads the engine's field names.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AskTimings {
    #[serde(flatten)]
    pub engine: RequestTimings,
    /// The whole request, milliseconds.
    pub total_ms: f64,
}

/// A finished answer.
#[derive(Debug, Clone, Serialize)]
pub struct AskOutcome {
    /// The full text.
    pub text: String,
    /// Whether the caller's callback stopped it.
    pub cancelled: bool,
    /// Timings.
    pub timings: AskTimings,
    /// The generated token ids (end token included); not sent to the UI.
    #[serde(skip)]
    pub token_ids: Vec<u32>,
    /// Counters of the assistant's caches after this answer (None: it has no caches).
    pub cache: Option<CacheReport>,
}

/// What the UI shows about the loaded model.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelInfo {
    /// Folder name (or the script's name).
    pub name: String,
    /// The folder.
    pub path: String,
    /// `cpu`, `cuda` or `metal`.
    pub device: String,
    /// `f32`, `bf16`, `f16`.
    pub dtype: String,
    /// Parameter count.
    pub parameters: u64,
    /// Bytes of weights in memory (parameters × dtype size).
    pub weight_bytes: u64,
}

/// Answers questions about images. Implementations are shared between threads.
pub trait Assistant: Send + Sync {
    /// What is loaded.
    fn info(&self) -> ModelInfo;
    /// Answers `req`, calling `on_token` with every new piece of text; `Flow::Stop` cancels.
    /// An implementation that may wait long without text (a remote server) also calls it with
    /// an empty piece while it waits, so the caller can cancel then; callers pass empty pieces
    /// on to nobody.
    fn ask(&self, req: &AskRequest<'_>, on_token: &mut dyn FnMut(&str) -> Flow) -> Result<AskOutcome>;
    /// The engine behind the answers, when there is one: tasks on the local model go through
    /// this same handle (one worker, one set of caches). None for scripted assistants.
    fn engine(&self) -> Option<EngineHandle> {
        None
    }
    /// The same answers as a [`Backend`] (the MCP server asks through it): the engine's, or
    /// the server's. None for scripted assistants.
    fn backend(&self) -> Option<Arc<dyn Backend>> {
        self.engine().map(|h| Arc::new(LocalBackend::new(h)) as Arc<dyn Backend>)
    }
}

/// Checks that `dir` is a Qwen3-VL folder without loading the weights.
pub fn validate_folder(dir: &Path) -> Result<ModelFolder> {
    ModelFolder::open(dir).map_err(|e| DesktopError::BadModel(e.to_string()))
}

/// What the UI calls the model in `dir`: `org/name` for a hub download
/// (`…/models--org--name/snapshots/<commit>`), else the folder's name.
pub fn model_name(dir: &Path) -> String {
    let hub_repo = dir
        .parent()
        .filter(|p| p.file_name().is_some_and(|n| n == "snapshots"))
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("models--"))
        .map(|n| n.replacen("--", "/", 1));
    hub_repo.unwrap_or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
}

pub(crate) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Streams a fixed text word by word, whatever the question (tests; the debug injection path).
#[derive(Debug, Clone)]
pub struct ScriptedAssistant {
    /// The answer.
    pub text: String,
}

impl Assistant for ScriptedAssistant {
    fn info(&self) -> ModelInfo {
        ModelInfo { name: "scripted".into(), path: String::new(), device: "none".into(), dtype: "none".into(), parameters: 0, weight_bytes: 0 }
    }

    fn ask(&self, _req: &AskRequest<'_>, on_token: &mut dyn FnMut(&str) -> Flow) -> Result<AskOutcome> {
        let t0 = Instant::now();
        let mut text = String::new();
        let mut cancelled = false;
        for piece in self.text.split_inclusive(' ') {
            text.push_str(piece);
            if on_token(piece) == Flow::Stop {
                cancelled = true;
                break;
            }
        }
        let total_ms = ms(t0);
        let timings = AskTimings { engine: RequestTimings { ttft_ms: total_ms, ..RequestTimings::default() }, total_ms };
        Ok(AskOutcome { text, cancelled, timings, token_ids: Vec::new(), cache: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_snapshots_are_named_by_their_repo_and_other_folders_by_their_name() {
        assert_eq!(model_name(Path::new("/c/models--Qwen--Qwen3-VL-2B-Instruct/snapshots/0123abc")), "Qwen/Qwen3-VL-2B-Instruct");
        assert_eq!(model_name(Path::new("/home/me/models/qwen3-vl-2b")), "qwen3-vl-2b");
        assert_eq!(model_name(Path::new("/x/snapshots/abc")), "abc");
        assert_eq!(model_name(Path::new("/")), "");
    }
}
