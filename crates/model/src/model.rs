//! The whole model: vision tower + text decoder, and the two passes generation needs
//! (prefill of a prompt, possibly after a cached prefix, and one decode step, for one sequence
//! or for several at once).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::Qwen3VlConfig;
use crate::error::{ModelError, Result};
use crate::graph::DeviceDecoder;
use crate::loader::ModelFolder;
use crate::ops::{KernelConfig, Ops};
use crate::preprocess::{GridThw, PreprocessedImage};
use crate::rope::{get_rope_index, Positions};
use crate::text::{DeepstackInput, KvCache, TextModel};
use crate::vision::{VisionModel, VisionOutput};

/// A tokenized prompt with the images and videos its `<|image_pad|>` / `<|video_pad|>` runs
/// stand for, in order (a video's grid has one `t` per temporal patch, each its own run).
#[derive(Debug, Clone)]
pub struct PromptInput<'a> {
    pub ids: &'a [u32],
    pub grids: &'a [GridThw],
    /// Vision features of all images and videos, concatenated in prompt order (None for text only).
    pub vision: Option<&'a VisionOutput>,
}

/// Which logits a prefill returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// Only the last position: (vocab).
    Last,
    /// Every new position: (new tokens, vocab).
    All,
}

/// What a prefill returns: logits and the final hidden states of the new tokens.
pub struct PrefillOutput {
    pub logits: Tensor,
    /// (new tokens, hidden), after the final norm.
    pub hidden: Tensor,
}

pub struct Qwen3Vl {
    pub vision: VisionModel,
    pub text: TextModel,
    pub config: Qwen3VlConfig,
    /// Longest prompt + answer accepted, in tokens (defaults to max_position_embeddings).
    pub max_context: usize,
    device: Device,
    dtype: DType,
    /// Decode steps on CUDA (bf16): inputs in device memory, replayed as CUDA graphs.
    decoder: Option<DeviceDecoder>,
    ops: Ops,
}

impl Qwen3Vl {
    /// Builds the model from weights named as in the Hugging Face checkpoint, with every kernel
    /// that applies ([`KernelConfig::default`]).
    pub fn new(config: &Qwen3VlConfig, vb: VarBuilder) -> Result<Self> {
        Self::new_with(config, vb, KernelConfig::default())
    }

    /// [`Self::new`] with the kernel choice `kernels`.
    pub fn new_with(config: &Qwen3VlConfig, vb: VarBuilder, kernels: KernelConfig) -> Result<Self> {
        let params = config.text_params()?;
        let ops = Ops::new(vb.device(), kernels);
        let wrap = |e: ModelError| match e {
            ModelError::Candle(c) => ModelError::Weights(crate::error::candle_message(&c)),
            other => other,
        };
        let vision = VisionModel::new(&config.vision_config, vb.pp("model").pp("visual"), &ops).map_err(wrap)?;
        let text = TextModel::new(&params, config.tied_embeddings(), vb.pp("model").pp("language_model"), vb.clone(), &ops)
            .map_err(wrap)?;
        Ok(Self {
            vision,
            text,
            config: config.clone(),
            max_context: params.max_position_embeddings,
            device: vb.device().clone(),
            dtype: vb.dtype(),
            decoder: DeviceDecoder::new(&ops, vb.dtype()),
            ops,
        })
    }

    /// Loads a checked model folder onto `device` in `dtype`, with every kernel that applies.
    pub fn load(folder: &ModelFolder, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_with(folder, dtype, device, KernelConfig::default())
    }

    /// [`Self::load`] with the kernel choice `kernels` (kept by this model alone: another model
    /// in the same process may use another).
    pub fn load_with(folder: &ModelFolder, dtype: DType, device: &Device, kernels: KernelConfig) -> Result<Self> {
        let vb = folder.var_builder(dtype, device)?;
        Self::new_with(&folder.config, vb, kernels)
    }

    /// The kernel choice this model was loaded with.
    pub fn kernel_config(&self) -> &KernelConfig {
        self.ops.config()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn merge_size(&self) -> usize {
        self.config.vision_config.spatial_merge_size
    }

    pub fn new_cache(&self) -> KvCache {
        self.text.new_cache()
    }

    /// How decode steps ran on the GPU so far (CUDA graphs replayed, recorded, eager); `None`
    /// where steps run as plain candle ops (CPU, Metal, f32).
    pub fn decode_counts(&self) -> Option<crate::graph::GraphCounts> {
        self.decoder.as_ref().map(DeviceDecoder::counts)
    }

    /// Runs the vision tower over preprocessed images and clips (in order) in one call.
    pub fn encode_images(&self, images: &[&PreprocessedImage]) -> Result<VisionOutput> {
        let dtype = self.vision.dtype();
        let parts = images.iter().map(|i| crate::vision::input::pixel_rows_as(i, &self.device, dtype, &self.ops)).collect::<Result<Vec<_>>>()?;
        let pixels = Tensor::cat(&parts, 0)?;
        let grids: Vec<GridThw> = images.iter().map(|i| i.grid).collect();
        self.vision.forward(&pixels, &grids)
    }

    /// The prompt's 3-D positions and rope delta.
    pub fn positions(&self, prompt: &PromptInput) -> Result<(Positions, i64)> {
        get_rope_index(prompt.ids, &self.visual_tokens(), prompt.grids, self.merge_size())
    }

    /// The ids whose embeddings visual features replace: the image pad and the video pad.
    pub fn visual_tokens(&self) -> [u32; 2] {
        [self.config.image_token_id, self.config.video_token_id]
    }

    /// Prefills the tokens of `prompt` that `cache` does not hold yet (the cache must hold an
    /// exact prefix of this prompt). Sets the cache's rope delta for decoding.
    pub fn prefill(&self, prompt: &PromptInput, cache: &mut KvCache, which: LogitsFor) -> Result<PrefillOutput> {
        let total = prompt.ids.len();
        let from = cache.len();
        if total > self.max_context {
            return Err(ModelError::PromptTooLong { tokens: total, max: self.max_context });
        }
        if from >= total {
            return Err(ModelError::Input("nothing to prefill: the cache already holds the whole prompt".into()));
        }
        let (pos, delta) = self.positions(prompt)?;
        let visual = self.visual_tokens();
        let is_visual = |t: &u32| visual.contains(t);
        let n_visual = prompt.ids.iter().filter(|t| is_visual(t)).count();
        let vis_tokens = prompt.vision.map(|v| v.tokens()).unwrap_or(0);
        if n_visual != vis_tokens {
            return Err(ModelError::Input(format!(
                "the prompt has {n_visual} image and video tokens but {vis_tokens} visual features were given"
            )));
        }
        let tail = &prompt.ids[from..];
        let mut embeds = self.text.embed(tail)?;
        // Rows of the new tokens that are image tokens, and which visual feature each one takes.
        let skipped = prompt.ids[..from].iter().filter(|t| is_visual(t)).count() as u32;
        let rows: Vec<u32> = tail.iter().enumerate().filter(|(_, t)| is_visual(t)).map(|(j, _)| j as u32).collect();
        let mut ds_rows = None;
        let mut ds_feats = Vec::new();
        if let (Some(vision), false) = (prompt.vision, rows.is_empty()) {
            let vis_idx = Tensor::from_vec((skipped..skipped + rows.len() as u32).collect(), rows.len(), &self.device)?;
            let visual = vision.embeds.index_select(&vis_idx, 0)?.to_dtype(self.dtype)?;
            // Exact replacement: gather from [text embeddings; visual rows].
            let n = tail.len();
            let mut gather: Vec<u32> = (0..n as u32).collect();
            for (k, &r) in rows.iter().enumerate() {
                gather[r as usize] = (n + k) as u32;
            }
            let table = Tensor::cat(&[&embeds.squeeze(0)?, &visual], 0)?;
            embeds = table.index_select(&Tensor::from_vec(gather, n, &self.device)?, 0)?.unsqueeze(0)?;
            for f in &vision.deepstack {
                ds_feats.push(f.index_select(&vis_idx, 0)?);
            }
            let n_rows = rows.len();
            ds_rows = Some(Tensor::from_vec(rows, n_rows, &self.device)?);
        }
        let deepstack = ds_rows.as_ref().map(|r| DeepstackInput { rows: r, features: &ds_feats });
        let hidden = self.text.forward(&embeds, &pos.tail(from), deepstack, cache)?.squeeze(0)?;
        cache.rope_delta = delta;
        let logits = match which {
            LogitsFor::All => self.text.logits(&hidden)?,
            LogitsFor::Last => self.text.logits(&hidden.narrow(0, hidden.dim(0)? - 1, 1)?)?.squeeze(0)?,
        };
        Ok(PrefillOutput { logits, hidden })
    }

    /// Feeds one generated token; returns the next logits (vocab,) in f32.
    pub fn decode_step(&self, token: u32, cache: &mut KvCache) -> Result<Tensor> {
        if cache.len() + 1 > self.max_context {
            return Err(ModelError::PromptTooLong { tokens: cache.len() + 1, max: self.max_context });
        }
        if let (Some(d), false) = (&self.decoder, cache.is_empty()) {
            return Ok(d.decode(&self.text, &[token], &mut [cache])?.squeeze(0)?);
        }
        let embeds = self.text.embed(&[token])?;
        let pos = Positions::text(cache.len() as i64 + cache.rope_delta, 1);
        let hidden = self.text.forward(&embeds, &pos, None, cache)?;
        Ok(self.text.logits(&hidden.squeeze(0)?)?.squeeze(0)?)
    }

    /// Feeds one generated token to each of several sequences in one pass: `tokens[i]` goes to
    /// `caches[i]` (each at its own length and position). Returns the next logits (batch, vocab)
    /// in f32, row i for sequence i; the same as `decode_step` on each (to the last bits of the
    /// matmuls). Errors leave every cache as it was: no sequence, a different number of tokens
    /// and caches, a cache already at `max_context` (`PromptTooLong`, as decode_step), or a
    /// failure midway through the pass (what was appended is dropped again).
    pub fn decode_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        if tokens.is_empty() || tokens.len() != caches.len() {
            return Err(ModelError::Input(format!(
                "a batched decode needs one token per sequence and at least one: {} tokens for {} caches",
                tokens.len(),
                caches.len()
            )));
        }
        if let Some(c) = caches.iter().find(|c| c.len() + 1 > self.max_context) {
            return Err(ModelError::PromptTooLong { tokens: c.len() + 1, max: self.max_context });
        }
        if let (Some(d), false) = (&self.decoder, caches.iter().any(|c| c.is_empty())) {
            return d.decode(&self.text, tokens, caches);
        }
        let embeds = self.text.embed(tokens)?.transpose(0, 1)?;
        let hidden = self.text.forward_decode_batch(&embeds, caches)?;
        self.text.logits(&hidden.squeeze(1)?)
    }
}
