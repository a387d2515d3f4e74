//! Token selection and the generation loop: greedy or sampled (temperature, top-k, top-p,
//! repetition penalty, seed), stops on end tokens and user stop strings, a token limit, and a
//! per-token callback for streaming. Records the raw top logits of each step for exactness checks.

use std::time::{Duration, Instant};

use candle_core::Tensor;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::model::{LogitsFor, PromptInput, Qwen3Vl};
use crate::text::KvCache;
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// How the next token is chosen. `temperature == 0` means greedy.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f64,
    /// Nucleus mass kept (1.0 = off).
    pub top_p: f64,
    /// Candidates kept (0 = off).
    pub top_k: usize,
    /// HF-style penalty on tokens already in the prompt or answer (1.0 = off).
    pub repetition_penalty: f64,
    pub seed: u64,
    pub max_new_tokens: usize,
    pub stop_strings: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            seed: 0,
            max_new_tokens: 256,
            stop_strings: Vec::new(),
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ModelError::Input(m.into()));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature must be >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty must be > 0");
        }
        if self.max_new_tokens == 0 {
            return bad("max_tokens must be at least 1");
        }
        Ok(())
    }
}

/// Picks tokens from logits; owns the RNG so a seed reproduces a whole answer.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// Whether [`Self::pick`] is a plain argmax (temperature 0, no repetition penalty).
    pub fn is_greedy(&self) -> bool {
        self.params.temperature == 0.0 && self.params.repetition_penalty == 1.0
    }

    /// Chooses the next token from raw logits, given every token seen so far. The id is always
    /// an index of `logits`. Logits holding NaN or +inf, or nothing above -inf, are an error:
    /// they mean the forward pass failed, and any id taken from them would be garbage.
    pub fn pick(&mut self, logits: &[f32], seen: &[u32]) -> Result<u32> {
        check_logits(logits)?;
        let l = self.penalized(logits, seen);
        if self.params.temperature == 0.0 {
            return Ok(argmax_f64(&l));
        }
        // Everything in f64 with the maximum subtracted before dividing by the temperature: the
        // exponents are <= 0 for any temperature > 0, so nothing overflows, and a temperature so
        // small that every other token underflows to probability 0 is greedy, as its limit is.
        let t = self.params.temperature;
        let mut cand: Vec<(u32, f64)> = l.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
        // Stable: ties keep the lower id first, like argmax.
        cand.sort_by(|a, b| b.1.total_cmp(&a.1));
        if self.params.top_k > 0 {
            cand.truncate(self.params.top_k);
        }
        let max = cand.first().map(|c| c.1).unwrap_or(0.0);
        let mut probs: Vec<f64> = cand.iter().map(|c| ((c.1 - max) / t).exp()).collect();
        // >= 1: the first candidate is the maximum and contributes exp(0).
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if self.params.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs
                .iter()
                .position(|&x| {
                    acc += x;
                    acc >= self.params.top_p
                })
                .map(|i| i + 1)
                .unwrap_or(probs.len());
            cand.truncate(keep);
            probs.truncate(keep);
            let s: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|x| *x /= s);
        }
        let r: f64 = self.rng.random();
        let mut acc = 0.0;
        for (c, pr) in cand.iter().zip(&probs) {
            acc += pr;
            if r < acc {
                return Ok(c.0);
            }
        }
        // Rounding left the total a hair below r: the last candidate with any mass.
        let last = cand.iter().zip(&probs).rev().find(|(_, p)| **p > 0.0).map(|(c, _)| c.0);
        last.or(cand.first().map(|c| c.0)).ok_or_else(|| ModelError::BadLogits("no candidate token".into()))
    }

    /// The logits in f64 with the repetition penalty applied to every token seen. The result
    /// stays finite where the input was (clamped), so a tiny penalty cannot make +inf or NaN.
    fn penalized(&self, logits: &[f32], seen: &[u32]) -> Vec<f64> {
        let mut l: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
        let p = self.params.repetition_penalty;
        if p != 1.0 {
            let mut done = std::collections::HashSet::new();
            for &t in seen {
                if let (true, Some(x)) = (done.insert(t), l.get_mut(t as usize)) {
                    if x.is_finite() {
                        *x = (if *x > 0.0 { *x / p } else { *x * p }).clamp(f64::MIN, f64::MAX);
                    }
                }
            }
        }
        l
    }
}

/// Refuses logits no token can be chosen from: empty, NaN, +inf, or all -inf.
fn check_logits(logits: &[f32]) -> Result<()> {
    if let Some(i) = logits.iter().position(|x| x.is_nan()) {
        return Err(ModelError::BadLogits(format!("NaN at token {i}")));
    }
    if let Some(i) = logits.iter().position(|&x| x == f32::INFINITY) {
        return Err(ModelError::BadLogits(format!("+inf at token {i}")));
    }
    if !logits.iter().any(|x| x.is_finite()) {
        return Err(ModelError::BadLogits(format!("none of the {} logits is finite", logits.len())));
    }
    Ok(())
}

/// [`argmax`] of checked (NaN-free) f64 logits.
fn argmax_f64(xs: &[f64]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// Index of the largest value; the first one on ties, like torch.argmax. NaN never wins (so
/// the id is a real candidate when there is one); an empty slice gives 0.
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] || (xs[best].is_nan() && !x.is_nan()) {
            best = i;
        }
    }
    best as u32
}

/// The `k` largest (id, logit) pairs, largest first.
pub fn top_k(xs: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = xs.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
    let k = k.min(v.len());
    if k == 0 {
        return Vec::new();
    }
    v.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// One generated token with the five highest raw logits of its step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub id: u32,
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    EndToken,
    StopString,
    MaxTokens,
    Cancelled,
}

/// Wall-clock times of one answer, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub preprocess_ms: f64,
    pub vision_ms: f64,
    pub prefill_ms: f64,
    pub prefill_tokens: usize,
    pub ttft_ms: f64,
    pub decode_tokens: usize,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub steps: Vec<Step>,
    /// Raw logits of the last prompt position (what chose the first token).
    #[serde(skip)]
    pub first_logits: Vec<f32>,
    pub text: String,
    pub finish: FinishReason,
    pub timings: Timings,
}

/// What the per-token callback may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Prefills `prompt` (after whatever `cache` already holds) and decodes until a stop.
/// `on_text` gets each new piece of text as it becomes printable.
pub fn generate(
    model: &Qwen3Vl,
    tok: &Tokenizer,
    prompt: &PromptInput,
    params: &SamplingParams,
    cache: &mut KvCache,
    on_text: &mut dyn FnMut(&str) -> Flow,
) -> Result<Generation> {
    params.validate()?;
    // checked_add: max_new_tokens may be anything a caller parsed (usize::MAX included).
    let fits = prompt.ids.len().checked_add(params.max_new_tokens).is_some_and(|t| t <= model.max_context);
    if !fits {
        return Err(ModelError::ContextLength {
            prompt_tokens: prompt.ids.len(),
            max_new_tokens: params.max_new_tokens,
            context: model.max_context,
        });
    }
    let start = Instant::now();
    let prefill_tokens = prompt.ids.len() - cache.len().min(prompt.ids.len());
    let mut logits = model.prefill(prompt, cache, LogitsFor::Last)?.logits;
    let mut timings = Timings { prefill_tokens, ..Default::default() };
    let mut sampler = Sampler::new(params.clone());
    let mut seen = prompt.ids.to_vec();
    let mut steps = Vec::new();
    let mut decoder = StreamDecoder::default();
    let mut text = String::new();
    let mut finish = FinishReason::MaxTokens;
    let mut decode_start = None;
    let mut first_logits = Vec::new();
    while steps.len() < params.max_new_tokens {
        let raw: Vec<f32> = logits.to_vec1()?;
        let id = sampler.pick(&raw, &seen)?;
        if steps.is_empty() {
            first_logits = raw.clone();
            timings.prefill_ms = ms(start.elapsed());
            timings.ttft_ms = timings.prefill_ms;
            decode_start = Some(Instant::now());
        }
        steps.push(Step { id, top: top_k(&raw, 5) });
        seen.push(id);
        if tok.is_end(id) {
            finish = FinishReason::EndToken;
            break;
        }
        let piece = decoder.push(tok, id)?;
        text.push_str(&piece);
        if let Some(cut) = stop_cut(&text, &params.stop_strings) {
            let shown = text.len() - piece.len();
            if cut > shown {
                on_text(&text[shown..cut]);
            }
            text.truncate(cut);
            finish = FinishReason::StopString;
            break;
        }
        if !piece.is_empty() && on_text(&piece) == Flow::Stop {
            finish = FinishReason::Cancelled;
            break;
        }
        if steps.len() >= params.max_new_tokens {
            break;
        }
        logits = model.decode_step(id, cache)?;
    }
    if let Some(d) = decode_start {
        timings.decode_ms = ms(d.elapsed());
        timings.decode_tokens = steps.len().saturating_sub(1);
        if timings.decode_ms > 0.0 {
            timings.decode_tokens_per_s = timings.decode_tokens as f64 / (timings.decode_ms / 1000.0);
        }
    }
    Ok(Generation { steps, first_logits, text, finish, timings })
}

/// Where the text must be cut if it contains a stop string (the earliest one).
fn stop_cut(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min()
}

/// Raw logits of a tensor as a host vector.
pub fn to_vec(logits: &Tensor) -> Result<Vec<f32>> {
    Ok(logits.to_dtype(candle_core::DType::F32)?.to_vec1()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, 1.0]), 1);
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.pick(&[0.0, 3.0, 2.0], &[]).unwrap(), 1);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut s = Sampler::new(SamplingParams { repetition_penalty: 2.0, ..Default::default() });
        // token 0 (3.0 -> 1.5) loses to token 1 (2.0)
        assert_eq!(s.pick(&[3.0, 2.0, -1.0], &[0, 0]).unwrap(), 1);
    }

    #[test]
    fn same_seed_same_samples_and_top_k_one_is_greedy() {
        let p = SamplingParams { temperature: 1.0, seed: 7, ..Default::default() };
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let a: Vec<u32> = { let mut s = Sampler::new(p.clone()); (0..20).map(|_| s.pick(&logits, &[]).unwrap()).collect() };
        let b: Vec<u32> = { let mut s = Sampler::new(p.clone()); (0..20).map(|_| s.pick(&logits, &[]).unwrap()).collect() };
        assert_eq!(a, b);
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 1, "sampling never varied");
        let mut s = Sampler::new(SamplingParams { temperature: 5.0, top_k: 1, ..Default::default() });
        assert_eq!(s.pick(&logits, &[]).unwrap(), argmax(&logits));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        let mut s = Sampler::new(SamplingParams { temperature: 1.0, top_p: 0.5, seed: 3, ..Default::default() });
        // token 2 holds ~94% of the mass: with top_p 0.5 it is the only candidate.
        for _ in 0..50 {
            assert_eq!(s.pick(&[0.0, 0.0, 4.0, 0.0], &[]).unwrap(), 2);
        }
    }

    #[test]
    fn top_k_sorts_descending() {
        assert_eq!(top_k(&[1.0, 5.0, 3.0, 4.0], 3), vec![(1, 5.0), (3, 4.0), (2, 3.0)]);
    }

    #[test]
    fn stop_strings_cut_at_the_earliest() {
        assert_eq!(stop_cut("abc END x STOP", &["STOP".into(), "END".into()]), Some(4));
        assert_eq!(stop_cut("abc", &["".into()]), None);
    }
}
