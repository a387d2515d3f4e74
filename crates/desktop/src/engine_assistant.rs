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
    ChatMessage, ContentPart, EngineConfig, EngineError, EngineHandle, Event, FinishReason, GenerationOptions,
    ImageSource, Request, RequestTimings, Role, VideoSource,
};
use screenpilot_model::generate::Flow;
use screenpilot_engine::load::{DeviceChoice, RuntimeConfig};
use screenpilot_model::{DType, QuantType};

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

/// How to load a model: the settings' choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Cap on the visual tokens of each image (None: the folder's pixel bounds alone).
    pub max_image_tokens: Option<usize>,
    /// `auto` (CUDA, else Metal, else the CPU), `cpu`, `cuda` or `metal`.
    pub device: String,
    /// `auto` (bf16 on a GPU, f32 on the CPU), `f32`, `bf16` or `f16`.
    pub dtype: String,
    /// `none` or a quantization of the language model (`q8_0`, `q4_k`, ...).
    pub quant: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { max_image_tokens: None, device: "auto".into(), dtype: "auto".into(), quant: "none".into() }
    }
}

/// The engine's device choice for a settings value.
pub fn device_choice(device: &str) -> Result<DeviceChoice> {
    match device {
        "auto" => Ok(DeviceChoice::Auto),
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" => Ok(DeviceChoice::Cuda),
        "metal" => Ok(DeviceChoice::Metal),
        other => Err(DesktopError::InvalidArgument(format!("device {other:?} is not one of auto, cpu, cuda, metal"))),
    }
}

/// The precision for a settings value (None: the device's default).
pub fn dtype_choice(dtype: &str) -> Result<Option<DType>> {
    match dtype {
        "auto" => Ok(None),
        "f32" => Ok(Some(DType::F32)),
        "bf16" => Ok(Some(DType::BF16)),
        "f16" => Ok(Some(DType::F16)),
        other => Err(DesktopError::InvalidArgument(format!("precision {other:?} is not one of auto, f32, bf16, f16"))),
    }
}

/// The quantization for a settings value (None: `none`).
pub fn quant_choice(quant: &str) -> Result<Option<QuantType>> {
    match quant {
        "none" => Ok(None),
        other => other.parse().map(Some).map_err(|e: String| DesktopError::InvalidArgument(format!("quantization: {e}"))),
    }
}

/// An engine error's message without the engine's prefix (`I/O: `).
fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::Io(m) | EngineError::InvalidRequest(m) => m.clone(),
        other => other.to_string(),
    }
}

fn bad_model(e: impl std::fmt::Display) -> DesktopError {
    DesktopError::BadModel(e.to_string())
}

impl From<EngineError> for DesktopError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidRequest(_)
            | EngineError::InvalidImage(_)
            | EngineError::InvalidVideo(_)
            | EngineError::ContextLength { .. } => {
                DesktopError::InvalidArgument(e.to_string())
            }
            other => DesktopError::Model(other.to_string()),
        }
    }
}

impl EngineAssistant {
    /// Loads the folder onto the best device (f32 on the CPU, bf16 on a GPU) into an engine
    /// with the default [`EngineConfig`] (1 GiB for each cache) and starts its worker thread.
    /// `max_image_tokens` caps the visual tokens of each image (a full screen is thousands
    /// otherwise); None keeps the folder's bounds.
    pub fn load(dir: &Path, max_image_tokens: Option<usize>) -> Result<Self> {
        Self::load_with(dir, &LoadOptions { max_image_tokens, ..LoadOptions::default() })
    }

    /// [`Self::load`] on the device and in the precision `opts` name. A device this build or
    /// this computer does not have is one error saying so (`cuda was chosen but this build has
    /// no CUDA support …`); the folder is checked first, so a wrong folder fails without a GPU.
    pub fn load_with(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let choice = device_choice(&opts.device)?;
        let dtype = dtype_choice(&opts.dtype)?;
        let quant = quant_choice(&opts.quant)?;
        if opts.max_image_tokens == Some(0) {
            return Err(DesktopError::InvalidArgument("max_image_tokens must be at least 1".into()));
        }
        let folder = validate_folder(dir)?;
        let device = screenpilot_engine::load::device(choice)
            .map_err(|e| DesktopError::InvalidArgument(format!("{} was chosen but {}", opts.device, engine_message(&e))))?;
        let mut rt = RuntimeConfig { device: choice, dtype, max_image_tokens: opts.max_image_tokens, ..RuntimeConfig::default() };
        rt.kernels.quant = quant;
        let loaded = screenpilot_engine::load::open_on(dir, &device, &rt).map_err(|e| bad_model(engine_message(&e)))?;
        let dtype = loaded.model.dtype();
        let parameters = folder.parameter_count().map_err(bad_model)?;
        let proj = loaded.model.text.quant_summary();
        let dense = parameters.saturating_sub(proj.params as u64);
        let info = ModelInfo {
            name: model_name(dir),
            path: dir.display().to_string(),
            device: loaded.device_name().into(),
            dtype: match quant {
                None => format!("{dtype:?}").to_lowercase(),
                Some(q) => format!("{} + {q}", format!("{dtype:?}").to_lowercase()),
            },
            parameters,
            weight_bytes: dense * dtype.size_in_bytes() as u64 + proj.bytes as u64,
        };
        let handle = EngineHandle::spawn(loaded.into_engine(EngineConfig::default()))?;
        Ok(Self { handle, info })
    }

    /// The engine's handle (clones share the one worker and its caches).
    pub fn handle(&self) -> &EngineHandle {
        &self.handle
    }
}

/// The conversation of `req`: the clip (if any), the images and the first question, then each earlier answer and
/// the question after it (also what [`crate::backend_assistant::BackendAssistant`] sends).
pub(crate) fn request(req: &AskRequest<'_>) -> Request {
    let video = req.clip.map(|c| ContentPart::Video(VideoSource::Clip(Arc::clone(c))));
    let images = req.images.iter().map(|img| ContentPart::Image(ImageSource::Image(Arc::new(DynamicImage::ImageRgb8((*img).clone())))));
    let mut parts: Vec<ContentPart> = video.into_iter().chain(images).collect();
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
            text: s.shown,
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
    /// The answer released so far (never a Thinking model's reasoning).
    pub text: String,
    /// A Thinking model's reasoning released so far (empty for other models).
    pub reasoning: String,
    /// What was shown: the reasoning inside `<think>` … `</think>` (the app folds it into a
    /// collapsed "Reasoning" block), then the answer; the answer alone without reasoning.
    pub shown: String,
    /// Every token id received (also those whose text is held back).
    pub token_ids: Vec<u32>,
    /// The engine's timings (default when cancelled before they came).
    pub timings: RequestTimings,
    /// How the engine ended it (None when the caller stopped listening first).
    pub finish: Option<FinishReason>,
    /// The caller cancelled, or the engine reports the request as cancelled.
    pub cancelled: bool,
}

impl Streamed {
    /// Adds a token's reasoning and answer; returns the text to show for them.
    fn add(&mut self, reasoning: &str, answer: &str) -> String {
        let mut shown = String::new();
        if !reasoning.is_empty() {
            if self.reasoning.is_empty() {
                shown.push_str("<think>");
            }
            self.reasoning.push_str(reasoning);
            shown.push_str(reasoning);
        }
        if !answer.is_empty() {
            if self.text.is_empty() && !self.reasoning.is_empty() {
                shown.push_str("</think>");
            }
            self.text.push_str(answer);
            shown.push_str(answer);
        }
        self.shown.push_str(&shown);
        shown
    }

    /// At the end: reasoning that never reached an answer is closed (shown as reasoning).
    fn close(&mut self) -> String {
        if self.text.is_empty() && !self.reasoning.is_empty() && !self.shown.ends_with("</think>") {
            self.shown.push_str("</think>");
            return "</think>".into();
        }
        String::new()
    }
}

/// Sends `request` to the engine's worker and streams its answer: each piece of text to show
/// goes to `on_text` (`Flow::Stop` cancels; a Thinking model's reasoning comes first, inside
/// `<think>` … `</think>`: [`Streamed::shown`]), and `cancelled` is checked at least every [`POLL`] while
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
                let shown = out.add(&t.reasoning, &t.text);
                if !shown.is_empty() && on_text(&shown) == Flow::Stop {
                    events.cancel();
                    out.cancelled = true;
                    return Ok(out);
                }
            }
            Event::Timings(t) => out.timings = t,
            Event::Finished(f) => {
                out.cancelled = f == FinishReason::Cancelled;
                out.finish = Some(f);
                let end = out.close();
                if !end.is_empty() {
                    on_text(&end);
                }
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
            Some(finish_reason) if !s.cancelled => {
                Ok(Reply { text: s.text, reasoning: s.reasoning, finish_reason, timings: s.timings })
            }
            _ => Err(EngineError::Stopped),
        }
    }

    fn describe(&self) -> String {
        "local engine".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_is_shown_inside_think_tags_and_kept_out_of_the_answer() {
        let mut s = Streamed::default();
        let shown: String = [s.add("I look", ""), s.add(" at it.\n", "\n\n"), s.add("", "OK.")].concat();
        assert_eq!(shown, "<think>I look at it.\n</think>\n\nOK.");
        assert_eq!((s.text.as_str(), s.reasoning.as_str()), ("\n\nOK.", "I look at it.\n"));
        assert_eq!(s.close(), "", "already closed");
        // Reasoning cut before any answer is closed at the end; an answer alone is shown as is.
        let mut s = Streamed::default();
        assert_eq!(s.add("thinking", ""), "<think>thinking");
        assert_eq!(s.close(), "</think>");
        assert_eq!((s.shown.as_str(), s.text.as_str()), ("<think>thinking</think>", ""));
        let mut s = Streamed::default();
        assert_eq!(s.add("", "Hi"), "Hi");
        assert_eq!(s.close(), "");
    }
}
