//! The synchronous engine: owns the model, the tokenizer and both caches, turns a
//! [`ValidRequest`] into a prefilled [`Sequence`] (images and video clips through the vision
//! cache, the prompt through the prefix cache) and advances sequences one token at a time, alone or several in
//! one batched model pass. The async service drives it from one thread; tests and benchmarks
//! may drive it directly.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use screenpilot_model::generate::{top_k, Sampler};
use screenpilot_model::prompt::{Message, Part};
use screenpilot_model::preprocess::VideoConfig;
use screenpilot_model::{
    DType, Device, GridThw, KvCache, LogitsFor, PreprocessConfig, PreprocessedImage, PromptInput, Qwen3Vl,
    Tokenizer, VisionOutput,
};
use serde::Serialize;

use crate::error::{EngineError, Result};
use crate::events::{Event, FinishReason, PromptLogits, RequestTimings, StepLogits, TokenEvent};
use crate::images;
use crate::memory;
use crate::prefix_cache::{token_keys, PrefixCache};
use crate::request::{ContentPart, Request, RequestLimits, ValidRequest};
use crate::sequence::Sequence;
use crate::video::ClipMemo;
use crate::vision_cache::{CacheStats, ImageKey, VisionCache};

/// How the engine and its service are set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Vision-feature cache budget (0 disables it). Default 1 GiB.
    pub vision_cache_bytes: usize,
    /// Prefix KV cache budget (0 disables it). Default 1 GiB.
    pub prefix_cache_bytes: usize,
    /// Requests waiting for the worker; more are refused with [`EngineError::Busy`].
    pub queue_capacity: usize,
    /// Sequences decoded together: one token each per round, in one batched model pass.
    pub max_batch: usize,
    /// Sequences admitted at once (at least `max_batch`); beyond a batch they take turns, so a
    /// new request is not kept waiting for the end of others' long answers. Each holds its KV
    /// cache. Default 4 x `max_batch`.
    pub max_active: usize,
    /// Events buffered for one subscriber; one that stops reading (a stalled client) is
    /// dropped when its buffer is full, and its request stops when nobody else listens.
    pub subscriber_buffer: usize,
    /// Bytes a request's vision tower and prefill may take on the host when running on the
    /// CPU, where a failed allocation would end the process: a request estimated above it is
    /// refused before it runs. None: the memory available when the request starts.
    pub host_memory_budget: Option<u64>,
    pub limits: RequestLimits,
    /// Keep every step's logits in [`Completion::step_logits`] (for exactness tests).
    pub record_logits: bool,
    /// Each token event carries the `trace_logits` highest raw logits of its step, and the
    /// first one also the prompt's token ids and the whole raw logits of its last position
    /// ([`TokenEvent::logits`]; for `ask --json` and comparisons with transformers). 0: off.
    /// Tokens are the same either way (on a GPU the logits are then copied to the host).
    pub trace_logits: usize,
    /// Also put the KV of generated tokens in the prefix cache (a follow-up turn then reuses
    /// the answer too). Off by default: KV computed one token at a time differs from a
    /// prefill's in the last bits (logits within ~1e-5 instead of equal).
    pub reuse_answer_kv: bool,
    /// A prefix-cache hit still prefills at least this many prompt tokens (min 1). Candle's
    /// CPU matmul takes another kernel for a few rows (measured: up to 8), which changes the
    /// last bits of the logits (~2e-5 on the tiny model); with 9 or more new rows they are
    /// bitwise equal to a fresh prefill's. Default 16.
    pub min_prefill_tokens: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            vision_cache_bytes: 1 << 30,
            prefix_cache_bytes: 1 << 30,
            queue_capacity: 64,
            max_batch: 8,
            max_active: 32,
            subscriber_buffer: 1024,
            host_memory_budget: None,
            limits: RequestLimits::default(),
            record_logits: false,
            trace_logits: 0,
            reuse_answer_kv: false,
            min_prefill_tokens: 16,
        }
    }
}

impl EngineConfig {
    /// The same configuration with both caches off.
    pub fn without_caches(self) -> Self {
        Self { vision_cache_bytes: 0, prefix_cache_bytes: 0, ..self }
    }
}

/// A finished answer, as [`Engine::run`] returns it.
#[derive(Debug, Clone)]
pub struct Completion {
    pub token_ids: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub timings: RequestTimings,
    /// Raw logits of each step, when [`EngineConfig::record_logits`] is set.
    pub step_logits: Vec<Vec<f32>>,
}

/// Counters of both caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheReport {
    pub vision: CacheStats,
    pub prefix: CacheStats,
    pub prefix_reused_tokens: u64,
}

/// Decoded images whose preprocessing the engine remembers (with the vision cache on): the
/// screenshots a GUI task keeps in its conversation.
const MEMO_IMAGES: usize = 16;
/// Clips whose preprocessing the engine remembers (with the vision cache on).
const MEMO_CLIPS: usize = 4;

/// The images and clips of a request, preprocessed, in prompt order: the model inputs, and for
/// each clip the time of each temporal patch (None for an image).
struct Visuals {
    inputs: Vec<PreprocessedImage>,
    timestamps: Vec<Option<Vec<f64>>>,
    keys: Vec<ImageKey>,
}

pub struct Engine {
    model: Qwen3Vl,
    tok: Tokenizer,
    preprocess: PreprocessConfig,
    video: VideoConfig,
    vision: VisionCache,
    prefix: PrefixCache,
    memo: images::Memo,
    clips: ClipMemo,
    cfg: EngineConfig,
}

impl Engine {
    /// A request's `max_tokens` is capped at the model's context length (or lower, by
    /// `cfg.limits.max_tokens`).
    pub fn new(model: Qwen3Vl, tok: Tokenizer, preprocess: PreprocessConfig, mut cfg: EngineConfig) -> Self {
        cfg.limits.max_tokens = cfg.limits.max_tokens.min(model.max_context);
        Self {
            vision: VisionCache::new(cfg.vision_cache_bytes),
            prefix: PrefixCache::new(cfg.prefix_cache_bytes),
            memo: images::Memo::new(if cfg.vision_cache_bytes > 0 { MEMO_IMAGES } else { 0 }),
            clips: ClipMemo::new(if cfg.vision_cache_bytes > 0 { MEMO_CLIPS } else { 0 }),
            model,
            tok,
            preprocess,
            video: VideoConfig::default(),
            cfg,
        }
    }

    /// The same engine with the video processor's settings `video` (a model folder's
    /// video_preprocessor_config.json; the class defaults otherwise).
    pub fn with_video(mut self, video: VideoConfig) -> Self {
        self.video = video;
        self
    }

    /// The video processor's settings.
    pub fn video_config(&self) -> &VideoConfig {
        &self.video
    }

    /// Loads a Hugging Face model folder (end tokens of generation_config.json included)
    /// through [`crate::load::open_on`].
    pub fn load(dir: &Path, dtype: DType, device: &Device, cfg: EngineConfig) -> Result<Self> {
        let rt = crate::load::RuntimeConfig { dtype: Some(dtype), ..Default::default() };
        Ok(crate::load::open_on(dir, device, &rt)?.into_engine(cfg))
    }

    /// Gives the model, tokenizer and preprocessing back (e.g. for an engine configured
    /// differently); the caches are dropped.
    pub fn into_parts(self) -> (Qwen3Vl, Tokenizer, PreprocessConfig) {
        (self.model, self.tok, self.preprocess)
    }

    /// Empties both caches (their budgets stay): the next request computes everything.
    pub fn clear_caches(&mut self) {
        self.vision = VisionCache::new(self.cfg.vision_cache_bytes);
        self.prefix = PrefixCache::new(self.cfg.prefix_cache_bytes);
        self.memo = images::Memo::new(if self.cfg.vision_cache_bytes > 0 { MEMO_IMAGES } else { 0 });
        self.clips = ClipMemo::new(if self.cfg.vision_cache_bytes > 0 { MEMO_CLIPS } else { 0 });
    }

    /// Whether a step needs its logits on the host whatever the sampler (recorded or traced).
    fn keeps_logits(&self) -> bool {
        self.cfg.record_logits || self.cfg.trace_logits > 0
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn model(&self) -> &Qwen3Vl {
        &self.model
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }

    pub fn cache_report(&self) -> CacheReport {
        CacheReport {
            vision: self.vision.stats(),
            prefix: self.prefix.stats(),
            prefix_reused_tokens: self.prefix.reused_tokens(),
        }
    }

    /// Checks a request against this engine's limits.
    pub fn validate(&self, request: Request) -> Result<ValidRequest> {
        ValidRequest::new(request, &self.cfg.limits)
    }

    /// Runs a request to the end, calling `on_event` for each token and finally the timings.
    pub fn run(&mut self, req: &ValidRequest, on_event: &mut dyn FnMut(&Event)) -> Result<Completion> {
        let mut seq = self.start(req, Instant::now())?;
        while seq.finished().is_none() {
            if let Some(ev) = self.step(&mut seq)? {
                on_event(&Event::Token(ev));
            }
        }
        Ok(self.finish(seq, on_event))
    }

    /// Preprocesses, encodes (or fetches) the images, and prefills the prompt after the longest
    /// cached prefix. `submitted` is when the request arrived (for queue and first-token times).
    pub fn start(&mut self, req: &ValidRequest, submitted: Instant) -> Result<Sequence> {
        let mut timings = RequestTimings { queue_ms: ms(submitted), ..Default::default() };
        // Everything that can refuse the request runs before the vision tower and the prefill.
        let Visuals { inputs: images, timestamps, keys: image_keys } = self.load_visuals(req, &mut timings)?;
        let ids = self.tok.encode_chat(&self.messages(req.request(), &images, &timestamps), &req.request().tools, true)?;
        let total = ids.len() + req.options().max_tokens;
        if total > self.model.max_context {
            return Err(EngineError::ContextLength {
                tokens: ids.len(),
                max_tokens: req.options().max_tokens,
                context: self.model.max_context,
            });
        }
        let merge = self.model.merge_size();
        let per_image: Vec<(ImageKey, usize)> =
            image_keys.iter().zip(&images).map(|(k, i)| (*k, i.grid.num_tokens(merge))).collect();
        let keys = token_keys(&ids, &self.model.visual_tokens(), &per_image)?;
        let max_reuse = ids.len().saturating_sub(self.cfg.min_prefill_tokens.max(1));
        let cached = self.prefix.lookup(&keys, max_reuse)?;
        self.check_memory(&images, ids.len(), cached.as_ref().map_or(0, |kv| kv.len()))?;
        let vision = self.encode_images(&images, &image_keys, &mut timings)?;
        let t = Instant::now();
        let mut kv = match cached {
            Some(kv) => kv,
            None => self.model.new_cache(),
        };
        timings.prompt_tokens = ids.len();
        timings.cached_prompt_tokens = kv.len();
        timings.prefill_tokens = ids.len() - kv.len();
        let grids: Vec<GridThw> = images.iter().map(|i| i.grid).collect();
        let prompt = PromptInput { ids: &ids, grids: &grids, vision: vision.as_ref() };
        let out = self.model.prefill(&prompt, &mut kv, LogitsFor::Last)?;
        // The GPU runs ahead of the host: wait for the prefill, so that its time is counted here
        // and not in the first decode round.
        self.model.device().synchronize()?;
        timings.prefill_ms = ms(t);
        let prompt_kv = (!self.cfg.reuse_answer_kv && self.prefix.enabled()).then(|| kv.clone());
        Ok(Sequence {
            kv,
            prompt_kv,
            keys,
            logits: out.logits,
            greedy_next: None,
            sampler: Sampler::new(req.sampling()),
            decoder: Default::default(),
            options: req.options().clone(),
            text: String::new(),
            reasoning: crate::reasoning::ReasoningParser::new(self.tok.chat_format().starts_in_reasoning()),
            released: 0,
            ids: Vec::new(),
            // The repetition penalty looks at every token so far, the prompt's included (as
            // transformers' and the CLI's); kept only when the penalty is on.
            seen: if req.options().repetition_penalty != 1.0 { ids.clone() } else { Vec::new() },
            timings,
            submitted,
            decode_start: None,
            finish: None,
            step_logits: Vec::new(),
            trace_prompt: (self.cfg.trace_logits > 0).then_some(ids),
        })
    }

    /// Chooses the next token of `seq` and, unless the answer ends, computes the logits after
    /// it. Returns the token (None when the step ended the answer without one to show).
    pub fn step(&mut self, seq: &mut Sequence) -> Result<Option<TokenEvent>> {
        let (event, feed) = self.choose(seq)?;
        if let Some(id) = feed {
            seq.logits = self.model.decode_step(id, &mut seq.kv)?;
            seq.keys.push(u64::from(id));
        }
        Ok(event)
    }

    /// [`Engine::step`] for several sequences at once: each chooses its next token with its own
    /// sampler and stop rules, then every one that goes on is fed to the model in one batched
    /// pass. Results are in the order of `seqs`. A failed batched pass changes no cache; the
    /// sequences are then fed one at a time, so an error stays with the sequence that causes it.
    pub fn step_batch(&mut self, seqs: &mut [&mut Sequence]) -> Vec<Result<Option<TokenEvent>>> {
        let mut results = Vec::with_capacity(seqs.len());
        let mut feed: Vec<(usize, u32)> = Vec::new();
        for (i, seq) in seqs.iter_mut().enumerate() {
            results.push(self.choose(seq).map(|(event, id)| {
                feed.extend(id.map(|id| (i, id)));
                event
            }));
        }
        if feed.is_empty() {
            return results;
        }
        let tokens: Vec<u32> = feed.iter().map(|&(_, id)| id).collect();
        let mut caches: Vec<&mut KvCache> = seqs
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| feed.iter().any(|f| f.0 == *i))
            .map(|(_, s)| &mut s.kv)
            .collect();
        let batched = self.model.decode_batch(&tokens, &mut caches);
        // Greedy sequences on a GPU: the next choice of the whole batch in one argmax and one
        // copy to the host (instead of one round trip per sequence in `choose`).
        let greedy = match &batched {
            Ok(all) if !all.device().is_cpu() && !self.keeps_logits() && feed.iter().all(|&(i, _)| seqs[i].sampler.is_greedy()) => {
                all.argmax(candle_core::D::Minus1).and_then(|t| t.to_vec1::<u32>()).ok()
            }
            _ => None,
        };
        for (row, &(i, id)) in feed.iter().enumerate() {
            let logits = match &batched {
                Ok(all) => all.get(row).map_err(EngineError::from),
                Err(_) => self.model.decode_step(id, &mut seqs[i].kv).map_err(EngineError::from),
            };
            match logits {
                Ok(l) => {
                    seqs[i].logits = l;
                    seqs[i].greedy_next = greedy.as_ref().and_then(|g| g.get(row).copied());
                    seqs[i].keys.push(u64::from(id));
                }
                Err(e) => results[i] = Err(e),
            }
        }
        results
    }

    /// Picks the next token of `seq` from its logits and releases its text. Returns the token
    /// event and, unless the answer ended, the id to feed to the model next.
    fn choose(&mut self, seq: &mut Sequence) -> Result<(Option<TokenEvent>, Option<u32>)> {
        if seq.finish.is_some() {
            return Ok((None, None));
        }
        let mut logits = None;
        let id = if let Some(id) = seq.greedy_next.take() {
            id
        } else if seq.sampler.is_greedy() && !self.keeps_logits() && !seq.logits.device().is_cpu() {
            // On a GPU the argmax runs there: one number comes back instead of the vocabulary.
            seq.logits.argmax(candle_core::D::Minus1)?.to_scalar::<u32>()?
        } else {
            let raw: Vec<f32> = seq.logits.to_dtype(DType::F32)?.to_vec1()?;
            let id = seq.sampler.pick(&raw, &seq.seen)?;
            if self.cfg.trace_logits > 0 {
                let prompt = seq.trace_prompt.take().map(|token_ids| PromptLogits { token_ids, last_logits: raw.clone() });
                logits = Some(Arc::new(StepLogits { top: top_k(&raw, self.cfg.trace_logits), prompt }));
            }
            if self.cfg.record_logits {
                seq.step_logits.push(raw);
            }
            id
        };
        if seq.ids.is_empty() {
            seq.timings.ttft_ms = ms(seq.submitted);
            seq.decode_start = Some(Instant::now());
        }
        seq.ids.push(id);
        if seq.options.repetition_penalty != 1.0 {
            seq.seen.push(id);
        }
        if self.tok.is_end(id) && !seq.options.ignore_eos {
            seq.finish = Some(FinishReason::Stop);
            let text = seq.flush_text();
            return Ok((Some(seq.token_event(id, &text, logits, true)), None));
        }
        let piece = seq.decoder.push(&self.tok, id)?;
        let (mut text, stopped) = seq.push_text(&piece);
        let mut feed = None;
        if stopped {
            seq.finish = Some(FinishReason::StopString);
        } else if seq.ids.len() >= seq.options.max_tokens {
            seq.finish = Some(FinishReason::Length);
            text.push_str(&seq.flush_text());
        } else {
            feed = Some(id);
        }
        Ok((Some(seq.token_event(id, &text, logits, feed.is_none())), feed))
    }

    /// Ends a sequence: its KV goes to the prefix cache; reports its timings to `on_event`.
    pub fn finish(&mut self, mut seq: Sequence, on_event: &mut dyn FnMut(&Event)) -> Completion {
        let finish = seq.finish.unwrap_or(FinishReason::Cancelled);
        seq.finish_timings();
        on_event(&Event::Timings(seq.timings.clone()));
        on_event(&Event::Finished(finish));
        let Sequence { kv, prompt_kv, mut keys, ids, text, timings, step_logits, .. } = seq;
        match prompt_kv {
            Some(p) => {
                keys.truncate(p.len());
                self.prefix.insert(keys, p);
            }
            None => self.prefix.insert(keys, kv),
        }
        Completion { token_ids: ids, text, finish, timings, step_logits }
    }

    fn messages(&self, req: &Request, images: &[PreprocessedImage], timestamps: &[Option<Vec<f64>>]) -> Vec<Message> {
        let merge = self.model.merge_size();
        let mut next = images.iter().zip(timestamps);
        req.messages
            .iter()
            .map(|m| Message {
                role: m.role,
                parts: m
                    .parts
                    .iter()
                    .map(|p| match p {
                        ContentPart::Text(t) => Part::Text(t.clone()),
                        ContentPart::Image(_) => {
                            Part::Image { tokens: next.next().map(|(i, _)| i.grid.num_tokens(merge)).unwrap_or(0) }
                        }
                        ContentPart::Video(_) => match next.next() {
                            Some((clip, Some(stamps))) => Part::Video {
                                timestamps: stamps.clone(),
                                tokens_per_frame: clip.grid.h * clip.grid.w / (merge * merge).max(1),
                            },
                            _ => Part::Video { timestamps: Vec::new(), tokens_per_frame: 0 },
                        },
                    })
                    .collect(),
            })
            .collect()
    }

    /// Reads, decodes and preprocesses the request's images and videos, with their cache keys.
    fn load_visuals(&self, req: &ValidRequest, timings: &mut RequestTimings) -> Result<Visuals> {
        let t = Instant::now();
        let mut out = Visuals { inputs: Vec::new(), timestamps: Vec::new(), keys: Vec::new() };
        for part in req.visuals() {
            let (pre, stamps, key, remembered) = match part {
                ContentPart::Image(src) => {
                    let (pre, key, remembered) = self.memo.load(src, &self.preprocess)?;
                    (pre, None, key, remembered)
                }
                ContentPart::Video(src) => {
                    let (v, key, remembered) = self.clips.load(src, &self.video)?;
                    (v.clip, Some(v.timestamps), key, remembered)
                }
                ContentPart::Text(_) => continue,
            };
            timings.images_preprocessed += usize::from(!remembered);
            out.inputs.push(pre);
            out.timestamps.push(stamps);
            out.keys.push(key);
        }
        timings.preprocess_ms = ms(t);
        timings.images = out.inputs.len();
        Ok(out)
    }

    /// On the CPU, refuses a request whose vision tower and prefill would need more memory than
    /// the budget (a failed host allocation would end the process; see [`crate::memory`]).
    fn check_memory(&self, images: &[PreprocessedImage], prompt_tokens: usize, cached: usize) -> Result<()> {
        if !self.model.device().is_cpu() {
            return Ok(());
        }
        let Some(budget) = self.cfg.host_memory_budget.or_else(memory::available_host_bytes) else {
            return Ok(());
        };
        let patches: Vec<usize> = images.iter().map(|i| i.grid.t * i.grid.h * i.grid.w).collect();
        let dtype = self.model.dtype().size_in_bytes();
        let needed = memory::estimate_peak_bytes(&self.model.config, &patches, prompt_tokens - cached, cached, dtype);
        memory::check(needed, budget)
    }

    /// The vision features of preprocessed images in prompt order (through the vision cache
    /// when it is on); None without images.
    fn encode_images(
        &mut self,
        images: &[PreprocessedImage],
        keys: &[ImageKey],
        timings: &mut RequestTimings,
    ) -> Result<Option<VisionOutput>> {
        if images.is_empty() {
            return Ok(None);
        }
        let t = Instant::now();
        let vision = if self.vision.enabled() {
            let (v, hits) = self.encode_cached(images, keys)?;
            timings.vision_cache_hits = hits;
            v
        } else {
            self.model.encode_images(&images.iter().collect::<Vec<_>>())?
        };
        timings.vision_ms = ms(t);
        Ok(Some(vision))
    }

    /// Features of every image in order: hits from the cache, misses encoded in one call (each
    /// distinct image once) and stored. Returns them joined and the number of hits.
    fn encode_cached(&mut self, images: &[PreprocessedImage], keys: &[ImageKey]) -> Result<(VisionOutput, usize)> {
        let mut found: Vec<Option<VisionOutput>> = keys.iter().map(|k| self.vision.get(k)).collect();
        let hits = found.iter().filter(|f| f.is_some()).count();
        let mut missing: Vec<usize> = Vec::new();
        for (i, f) in found.iter().enumerate() {
            if f.is_none() && !missing.iter().any(|&j| keys[j] == keys[i]) {
                missing.push(i);
            }
        }
        if !missing.is_empty() {
            let batch = self.model.encode_images(&missing.iter().map(|&i| &images[i]).collect::<Vec<_>>())?;
            let merge = self.model.merge_size();
            let mut start = 0;
            for &i in &missing {
                let n = images[i].grid.num_tokens(merge);
                let part = batch.narrow(start, n)?;
                // Own copies, so that evicting one image frees its memory.
                let part = if missing.len() == 1 { part } else { images::own(&part)? };
                start += n;
                self.vision.insert(keys[i], part.clone());
                for (j, slot) in found.iter_mut().enumerate() {
                    if slot.is_none() && keys[j] == keys[i] {
                        *slot = Some(part.clone());
                    }
                }
            }
        }
        let parts: Vec<&VisionOutput> = found.iter().flatten().collect();
        Ok((VisionOutput::cat(&parts)?, hits))
    }
}

pub(crate) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
