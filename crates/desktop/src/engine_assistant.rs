//! [`EngineAssistant`]: the app's [`Assistant`] over screenpilot-engine. The model is loaded
//! once into an engine actor ([`EngineHandle::spawn`]); the app's questions and its tasks
//! (through [`StoppableLocal`], a [`Backend`]) all go through that one handle, as the server's
//! requests do: one generation loop, one set of caches, continuous batching between them.
//!
//! The engine keeps the vision features of every image it has seen and the KV cache of earlier
//! prompts, so a follow-up about the same capture skips the vision tower and prefills only what
//! is new (the previous answer and the new question); its tokens are those a cold engine
//! computes. The conversation is rendered the way [`crate::session::Session`] keeps it: the
//! capture and the first question in the first user turn, then each answer and the next
//! question, so the earlier turns are a prefix of the follow-up's prompt.
//!
//! Cancelling: [`stream`] stops listening as soon as the caller says so (a `Flow::Stop` from
//! the text callback, or the `cancelled` check, polled every [`POLL`] while it waits); the
//! engine drops a request nobody listens to before its next decode step.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::DynamicImage;

use screenpilot_agent::StopFlag;
use screenpilot_engine::backend::{Backend, Reply};
use screenpilot_engine::{
    ChatMessage, ContentPart, Engine, EngineConfig, EngineError, EngineHandle, Event, FinishReason, GenerationOptions,
    ImageSource, Request, RequestTimings, Role,
};
use screenpilot_model::generate::Flow;
use screenpilot_model::{DType, Device, Qwen3Vl, Tokenizer};

use crate::assistant::{ms, model_name, validate_folder, AskOutcome, AskRequest, AskTimings, Assistant, ModelInfo};
use crate::error::{DesktopError, Result};

/// Longest wait between two checks of a cancel condition while an answer is pending.
pub const POLL: Duration = Duration::from_millis(10);

/// Qwen3-VL through the engine, on the best device this build supports. Answers are greedy
/// (the same screen and question give the same answer).
pub struct EngineAssistant {
    handle: EngineHandle,
    info: ModelInfo,
}

/// A GPU when this build has one and it opens, else the CPU.
fn best_device() -> Device {
    if candle_core::utils::cuda_is_available() {
        if let Ok(d) = screenpilot_model::cuda_device(0) {
            return d;
        }
    }
    Device::Cpu
}


fn bad_model(e: impl std::fmt::Display) -> DesktopError {
    DesktopError::BadModel(e.to_string())
}

impl From<EngineError> for DesktopError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidRequest(_) | EngineError::InvalidImage(_) | EngineError::ContextLength { .. } => {
                DesktopError::InvalidArgument(e.to_string())
            }
            other => DesktopError::Model(other.to_string()),
        }
    }
}

impl EngineAssistant {
    /// Loads the folder (f32 on the CPU, bf16 on a GPU) into an engine with the default
    /// [`EngineConfig`] (1 GiB for each cache) and starts its worker thread.
    /// `max_image_tokens` caps the visual tokens of each image (a full screen is thousands
    /// otherwise); None keeps the folder's bounds.
    pub fn load(dir: &Path, max_image_tokens: Option<usize>) -> Result<Self> {
        let folder = validate_folder(dir)?;
        let device = best_device();
        let dtype = if device.is_cpu() { DType::F32 } else { DType::BF16 };
        let model = Qwen3Vl::load(&folder, dtype, &device).map_err(bad_model)?;
        let mut tok = Tokenizer::from_file(&folder.tokenizer).map_err(bad_model)?;
        tok.add_end_ids(&folder.generation.eos_ids());
        let mut preprocess = folder.preprocess.clone();
        if max_image_tokens.is_some() {
            preprocess.max_image_tokens = max_image_tokens;
        }
        let parameters = folder.parameter_count().map_err(bad_model)?;
        let info = ModelInfo {
            name: model_name(dir),
            path: dir.display().to_string(),
            device: screenpilot_engine::load::device_name(&device).into(),
            dtype: format!("{dtype:?}").to_lowercase(),
            parameters,
            weight_bytes: parameters * dtype.size_in_bytes() as u64,
        };
        let handle = EngineHandle::spawn(Engine::new(model, tok, preprocess, EngineConfig::default()))?;
        Ok(Self { handle, info })
    }

    /// The engine's handle (clones share the one worker and its caches).
    pub fn handle(&self) -> &EngineHandle {
        &self.handle
    }
}

/// The conversation of `req`: images and the first question, then each earlier answer and
/// the question after it (also what [`crate::backend_assistant::BackendAssistant`] sends).
pub(crate) fn request(req: &AskRequest<'_>) -> Request {
    let mut parts: Vec<ContentPart> = req
        .images
        .iter()
        .map(|img| ContentPart::Image(ImageSource::Image(Arc::new(DynamicImage::ImageRgb8((*img).clone())))))
        .collect();
    let first_question = req.history.first().map_or(req.question, |e| e.question.as_str());
    parts.push(ContentPart::Text(first_question.to_string()));
    let mut messages = vec![ChatMessage { role: Role::User, parts }];
    for (i, e) in req.history.iter().enumerate() {
        messages.push(ChatMessage::text(Role::Assistant, e.answer.clone()));
        let next = req.history.get(i + 1).map_or(req.question, |n| n.question.as_str());
        messages.push(ChatMessage::text(Role::User, next));
    }
    Request { messages, options: GenerationOptions { max_tokens: req.max_tokens, ..GenerationOptions::default() }, tools: Vec::new() }
}

impl Assistant for EngineAssistant {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    /// Streams the answer; `Flow::Stop` from `on_token` ends it before the next decode step.
    fn ask(&self, req: &AskRequest<'_>, on_token: &mut dyn FnMut(&str) -> Flow) -> Result<AskOutcome> {
        let t0 = Instant::now();
        let s = stream(&self.handle, request(req), on_token, &|| false)?;
        Ok(AskOutcome {
            text: s.text,
            cancelled: s.cancelled,
            timings: AskTimings { engine: s.timings, total_ms: ms(t0) },
            token_ids: s.token_ids,
            cache: Some(self.handle.stats().caches),
        })
    }

    fn engine(&self) -> Option<EngineHandle> {
        Some(self.handle.clone())
    }
}

/// What [`stream`] received.
#[derive(Debug, Clone, Default)]
pub struct Streamed {
    /// The text released so far.
    pub text: String,
    /// Every token id received (also those whose text is held back).
    pub token_ids: Vec<u32>,
    /// The engine's timings (default when cancelled before they came).
    pub timings: RequestTimings,
    /// How the engine ended it (None when the caller stopped listening first).
    pub finish: Option<FinishReason>,
    /// The caller cancelled, or the engine reports the request as cancelled.
    pub cancelled: bool,
}

/// Sends `request` to the engine's worker and streams its answer: each piece of text goes to
/// `on_text` (`Flow::Stop` cancels), and `cancelled` is checked at least every [`POLL`] while
/// waiting (prefill included). A cancelled answer returns at once with what came so far; the
/// worker drops the request before its next decode step. An answer that ends normally is read
/// to the end of its stream, so the handle's statistics already count it on return.
/// Must not be called from inside an async task.
pub fn stream(
    handle: &EngineHandle,
    request: Request,
    on_text: &mut dyn FnMut(&str) -> Flow,
    cancelled: &dyn Fn() -> bool,
) -> screenpilot_engine::Result<Streamed> {
    let valid = handle.validate(request)?;
    let mut events = handle.submit(valid)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| EngineError::Io(format!("cannot start a timer for the answer: {e}")))?;
    let mut out = Streamed::default();
    loop {
        if cancelled() {
            events.cancel();
            out.cancelled = true;
            return Ok(out);
        }
        let ev = match rt.block_on(async { tokio::time::timeout(POLL, events.next()).await }) {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(ev)) => ev,
        };
        match ev {
            Event::Token(t) => {
                out.token_ids.push(t.id);
                if !t.text.is_empty() {
                    out.text.push_str(&t.text);
                    if on_text(&t.text) == Flow::Stop {
                        events.cancel();
                        out.cancelled = true;
                        return Ok(out);
                    }
                }
            }
            Event::Timings(t) => out.timings = t,
            Event::Finished(f) => {
                out.cancelled = f == FinishReason::Cancelled;
                out.finish = Some(f);
            }
            Event::Error(e) => return Err(e),
        }
    }
    if out.finish.is_none() {
        return Err(EngineError::Stopped);
    }
    Ok(out)
}

/// The local engine as a task's [`Backend`]: [`screenpilot_engine::backend::LocalBackend`]'s
/// path, plus the task's stop flag, which abandons a pending answer within [`POLL`]
/// (the answer then fails with [`EngineError::Stopped`]).
pub struct StoppableLocal {
    handle: EngineHandle,
    stop: StopFlag,
}

impl StoppableLocal {
    pub fn new(handle: EngineHandle, stop: StopFlag) -> Self {
        Self { handle, stop }
    }
}

impl Backend for StoppableLocal {
    fn chat(&self, request: Request, on_text: &mut dyn FnMut(&str)) -> screenpilot_engine::Result<Reply> {
        let stop = &self.stop;
        if stop.is_raised() {
            return Err(EngineError::Stopped);
        }
        let s = stream(&self.handle, request, &mut |t| {
            on_text(t);
            Flow::Continue
        }, &|| stop.is_raised())?;
        match s.finish {
            Some(finish_reason) if !s.cancelled => Ok(Reply { text: s.text, finish_reason, timings: s.timings }),
            _ => Err(EngineError::Stopped),
        }
    }

    fn describe(&self) -> String {
        "local engine".into()
    }
}
