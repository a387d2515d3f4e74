//! [`EngineAssistant`]: the app's [`Assistant`] over screenpilot-engine. The engine keeps the
//! vision features of every image it has seen and the KV cache of earlier prompts, so a
//! follow-up about the same capture skips the vision tower and prefills only what is new
//! (the previous answer and the new question); its tokens are those a cold engine computes.
//!
//! The conversation is rendered the way [`crate::session::Session`] keeps it: the capture and
//! the first question in the first user turn, then each answer and the next question. The
//! earlier turns are therefore a prefix of the follow-up's prompt, which is what the prefix
//! cache matches on (token ids, and the content of the images behind image tokens).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use image::DynamicImage;

use screenpilot_engine::{
    ChatMessage, ContentPart, Engine, EngineConfig, EngineError, FinishReason, GenerationOptions, ImageSource, Request,
    Role,
};
use screenpilot_model::generate::Flow;
use screenpilot_model::{DType, Device, Qwen3Vl, Tokenizer};

use crate::assistant::{ms, model_name, validate_folder, AskOutcome, AskRequest, AskTimings, Assistant, ModelInfo};
use crate::error::{DesktopError, Result};

/// Qwen3-VL through the engine, on the best device this build supports. Answers are greedy
/// (the same screen and question give the same answer). One question runs at a time.
pub struct EngineAssistant {
    engine: Mutex<Engine>,
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

fn device_name(d: &Device) -> &'static str {
    if d.is_cuda() {
        "cuda"
    } else if d.is_metal() {
        "metal"
    } else {
        "cpu"
    }
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
    /// [`EngineConfig`] (1 GiB for each cache). `max_image_tokens` caps the visual tokens of
    /// each image (a full screen is thousands otherwise); None keeps the folder's bounds.
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
            device: device_name(&device).into(),
            dtype: format!("{dtype:?}").to_lowercase(),
            parameters,
            weight_bytes: parameters * dtype.size_in_bytes() as u64,
        };
        let engine = Engine::new(model, tok, preprocess, EngineConfig::default());
        Ok(Self { engine: Mutex::new(engine), info })
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        // A panic in an earlier answer leaves the caches consistent (entries are only
        // inserted whole), so the engine stays usable.
        self.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The conversation of `req`: images and the first question, then each earlier answer and
/// the question after it.
fn request(req: &AskRequest<'_>) -> Request {
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
        let request = request(req);
        let mut engine = self.engine();
        let valid = engine.validate(request)?;
        let mut seq = engine.start(&valid, t0)?;
        let mut stopped = false;
        while seq.finished().is_none() {
            let step = engine.step(&mut seq)?;
            if let Some(ev) = step.filter(|ev| !ev.text.is_empty()) {
                if on_token(&ev.text) == Flow::Stop {
                    stopped = true;
                    seq.cancel();
                }
            }
        }
        let done = engine.finish(seq, &mut |_| {});
        let cache = engine.cache_report();
        Ok(AskOutcome {
            text: done.text,
            cancelled: stopped || done.finish == FinishReason::Cancelled,
            timings: AskTimings { engine: done.timings.clone(), total_ms: ms(t0) },
            token_ids: done.token_ids,
            cache: Some(cache),
        })
    }
}
