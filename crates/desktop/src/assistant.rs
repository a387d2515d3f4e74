//! The [`Assistant`] seam: "answer this question about these images, streaming tokens".
//! [`ModelAssistant`] runs screenpilot-model directly; when crates/engine is ready, a type
//! implementing [`Assistant`] over it replaces [`ModelAssistant::load`] in one line.
//! [`ScriptedAssistant`] streams a fixed text (tests, the debug-only injection path).

use std::path::Path;
use std::time::Instant;

use image::{DynamicImage, RgbImage};
use serde::Serialize;

use screenpilot_model::generate::{generate, Flow};
use screenpilot_model::preprocess::preprocess;
use screenpilot_model::prompt::{render, Message, Part, Role};
use screenpilot_model::{DType, Device, GridThw, ModelFolder, PreprocessConfig, PromptInput, Qwen3Vl, SamplingParams, Tokenizer};

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
    /// Earlier exchanges about the same images.
    pub history: &'a [Exchange],
    /// The new question.
    pub question: &'a str,
    /// Most tokens to generate.
    pub max_tokens: usize,
}

/// Wall-clock times of one answer, milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AskTimings {
    /// Image preprocessing.
    pub preprocess_ms: f64,
    /// Vision tower.
    pub vision_ms: f64,
    /// Prompt prefill.
    pub prefill_ms: f64,
    /// From the request to the first token.
    pub ttft_ms: f64,
    /// Tokens generated.
    pub decode_tokens: usize,
    /// Decode speed.
    pub decode_tokens_per_s: f64,
    /// The whole request.
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
    fn ask(&self, req: &AskRequest<'_>, on_token: &mut dyn FnMut(&str) -> Flow) -> Result<AskOutcome>;
}

/// Qwen3-VL through screenpilot-model, on the best device this build supports.
pub struct ModelAssistant {
    folder: ModelFolder,
    model: Qwen3Vl,
    tok: Tokenizer,
    preprocess: PreprocessConfig,
    info: ModelInfo,
}

fn best_device() -> Device {
    if candle_core::utils::cuda_is_available() {
        if let Ok(d) = Device::new_cuda(0) {
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

/// Checks that `dir` is a Qwen3-VL folder without loading the weights.
pub fn validate_folder(dir: &Path) -> Result<ModelFolder> {
    ModelFolder::open(dir).map_err(|e| DesktopError::BadModel(e.to_string()))
}

impl ModelAssistant {
    /// Loads the folder: f32 on the CPU, bf16 on a GPU. `max_image_tokens` caps visual tokens.
    pub fn load(dir: &Path, max_image_tokens: Option<usize>) -> Result<Self> {
        let folder = validate_folder(dir)?;
        let device = best_device();
        let dtype = if device.is_cpu() { DType::F32 } else { DType::BF16 };
        let model = Qwen3Vl::load(&folder, dtype, &device).map_err(|e| DesktopError::BadModel(e.to_string()))?;
        let mut tok = Tokenizer::from_file(&folder.tokenizer).map_err(|e| DesktopError::BadModel(e.to_string()))?;
        tok.add_end_ids(&folder.generation.eos_ids());
        let mut preprocess = folder.preprocess.clone();
        if max_image_tokens.is_some() {
            preprocess.max_image_tokens = max_image_tokens;
        }
        let parameters = folder.parameter_count().map_err(|e| DesktopError::BadModel(e.to_string()))?;
        let info = ModelInfo {
            name: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            path: dir.display().to_string(),
            device: device_name(&device).into(),
            dtype: format!("{dtype:?}").to_lowercase(),
            parameters,
            weight_bytes: parameters * dtype.size_in_bytes() as u64,
        };
        Ok(Self { folder, model, tok, preprocess, info })
    }

    fn sampling(&self, max_tokens: usize) -> SamplingParams {
        // Greedy: reproducible answers for the same screen and question.
        SamplingParams {
            max_new_tokens: max_tokens,
            repetition_penalty: self.folder.generation.repetition_penalty.unwrap_or(1.0),
            ..SamplingParams::default()
        }
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl Assistant for ModelAssistant {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn ask(&self, req: &AskRequest<'_>, on_token: &mut dyn FnMut(&str) -> Flow) -> Result<AskOutcome> {
        let t0 = Instant::now();
        let mut images = Vec::with_capacity(req.images.len());
        for img in req.images {
            let dynamic = DynamicImage::ImageRgb8((*img).clone());
            images.push(preprocess(&dynamic, &self.preprocess).map_err(|e| DesktopError::Model(e.to_string()))?);
        }
        let preprocess_ms = ms(t0);
        let t1 = Instant::now();
        let vision = if images.is_empty() { None } else { Some(self.model.encode_images(&images.iter().collect::<Vec<_>>())?) };
        let vision_ms = ms(t1);

        let merge = self.model.merge_size();
        let mut msgs = Vec::new();
        // The images go with the first question; follow-ups are later turns of the same chat.
        let mut parts: Vec<Part> = images.iter().map(|i| Part::Image { tokens: i.grid.num_tokens(merge) }).collect();
        let first_question = req.history.first().map_or(req.question, |e| e.question.as_str());
        parts.push(Part::Text(first_question.to_string()));
        msgs.push(Message { role: Role::User, parts });
        for (i, e) in req.history.iter().enumerate() {
            msgs.push(Message::text(Role::Assistant, e.answer.clone()));
            let next = req.history.get(i + 1).map_or(req.question, |n| n.question.as_str());
            msgs.push(Message::text(Role::User, next));
        }
        let ids = self.tok.encode(&render(&msgs, &[], true))?;
        let grids: Vec<GridThw> = images.iter().map(|i| i.grid).collect();
        let prompt = PromptInput { ids: &ids, grids: &grids, vision: vision.as_ref() };
        let mut cache = self.model.new_cache();
        let mut stopped = false;
        let mut cb = |piece: &str| {
            let f = on_token(piece);
            stopped |= f == Flow::Stop;
            f
        };
        let g = generate(&self.model, &self.tok, &prompt, &self.sampling(req.max_tokens), &mut cache, &mut cb)?;
        let timings = AskTimings {
            preprocess_ms,
            vision_ms,
            prefill_ms: g.timings.prefill_ms,
            ttft_ms: preprocess_ms + vision_ms + g.timings.ttft_ms,
            decode_tokens: g.timings.decode_tokens,
            decode_tokens_per_s: g.timings.decode_tokens_per_s,
            total_ms: ms(t0),
        };
        Ok(AskOutcome { text: g.text, cancelled: stopped, timings })
    }
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
        Ok(AskOutcome { text, cancelled, timings: AskTimings { total_ms, ttft_ms: total_ms, ..AskTimings::default() } })
    }
}
