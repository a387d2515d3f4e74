//! One answer being generated: its KV cache and the keys of the tokens it holds, the logits of
//! the next position, the sampler, the text released so far (with a stop string that may be
//! forming held back) and its timings.

use std::sync::Arc;
use std::time::Instant;

use screenpilot_model::generate::Sampler;
use screenpilot_model::tokenizer::StreamDecoder;
use screenpilot_model::{KvCache, Tensor};

use crate::events::{FinishReason, RequestTimings, StepLogits, TokenEvent};
use crate::reasoning::ReasoningParser;
use crate::request::GenerationOptions;

pub struct Sequence {
    pub(crate) kv: KvCache,
    /// The KV right after prefill (what goes to the prefix cache unless answers are reused).
    pub(crate) prompt_kv: Option<KvCache>,
    /// Token keys of what `kv` holds (one per cached token), for the prefix cache.
    pub(crate) keys: Vec<u64>,
    /// Logits of the next position (vocab,).
    pub(crate) logits: Tensor,
    /// The greedy choice from `logits`, when a batched step already took it for the whole batch
    /// (one argmax and one copy to the host instead of one per sequence).
    pub(crate) greedy_next: Option<u32>,
    pub(crate) sampler: Sampler,
    pub(crate) decoder: StreamDecoder,
    pub(crate) options: GenerationOptions,
    /// Everything generated (reasoning included), stop strings cut.
    pub(crate) text: String,
    /// Divides released text into reasoning and answer.
    pub(crate) reasoning: ReasoningParser,
    /// Bytes of `text` already released.
    pub(crate) released: usize,
    pub(crate) ids: Vec<u32>,
    /// Prompt and generated ids, for the repetition penalty (empty when it is off).
    pub(crate) seen: Vec<u32>,
    pub(crate) timings: RequestTimings,
    pub(crate) submitted: Instant,
    pub(crate) decode_start: Option<Instant>,
    pub(crate) finish: Option<FinishReason>,
    /// Raw logits of every step (only when the engine records them).
    pub(crate) step_logits: Vec<Vec<f32>>,
    /// The prompt's token ids until the first step reports them (only when the engine traces
    /// logits).
    pub(crate) trace_prompt: Option<Vec<u32>>,
}

impl Sequence {
    pub fn finished(&self) -> Option<FinishReason> {
        self.finish
    }

    pub fn timings(&self) -> &RequestTimings {
        &self.timings
    }

    /// Generated token ids so far.
    pub fn token_ids(&self) -> &[u32] {
        &self.ids
    }

    /// Text so far, reasoning included (stop strings cut).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Marks the sequence cancelled (the next step does nothing).
    pub fn cancel(&mut self) {
        if self.finish.is_none() {
            self.finish = Some(FinishReason::Cancelled);
        }
    }

    /// Appends a decoded piece; returns the text now safe to release, and whether a stop string
    /// ended the answer (the text is then cut before it).
    pub(crate) fn push_text(&mut self, piece: &str) -> (String, bool) {
        let before = self.text.len();
        self.text.push_str(piece);
        let search_from = before.saturating_sub(self.options.stop.iter().map(|s| s.len()).max().unwrap_or(0));
        if let Some(cut) = stop_cut(&self.text, search_from, &self.options.stop) {
            self.text.truncate(cut);
            let out = self.text.get(self.released..).unwrap_or("").to_string();
            self.released = self.text.len().max(self.released);
            return (out, true);
        }
        let safe = self.text.len() - held_back(&self.text[self.released..], &self.options.stop);
        let out = self.text[self.released..safe].to_string();
        self.released = safe;
        (out, false)
    }

    /// Text held back at the end (a possible stop-string start) that never became a stop.
    pub(crate) fn flush_text(&mut self) -> String {
        let out = self.text.get(self.released..).unwrap_or("").to_string();
        self.released = self.text.len();
        out
    }

    /// The event of token `id` that released `text` (reasoning and answer divided); `last`:
    /// the answer ends with it, so text held back by the reasoning parser comes out too.
    pub(crate) fn token_event(&mut self, id: u32, text: &str, logits: Option<Arc<StepLogits>>, last: bool) -> TokenEvent {
        let mut split = self.reasoning.push(text);
        if last {
            let end = self.reasoning.finish();
            split.reasoning.push_str(&end.reasoning);
            split.answer.push_str(&end.answer);
        }
        TokenEvent { id, text: split.answer, reasoning: split.reasoning, logits }
    }

    pub(crate) fn finish_timings(&mut self) {
        let t = &mut self.timings;
        t.completion_tokens = self.ids.len();
        if let Some(d) = self.decode_start {
            t.decode_ms = d.elapsed().as_secs_f64() * 1000.0;
            t.decode_tokens = self.ids.len().saturating_sub(1);
            if t.decode_ms > 0.0 {
                t.decode_tokens_per_s = t.decode_tokens as f64 / (t.decode_ms / 1000.0);
            }
        }
    }
}

/// Byte offset of the earliest stop string in `text` that ends after `from`.
fn stop_cut(text: &str, from: usize, stops: &[String]) -> Option<usize> {
    let mut start = from.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text[start..].find(s.as_str()).map(|i| i + start)).min()
}

/// Length of the longest suffix of `text` that is a proper prefix of a stop string.
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for s in stops {
        for (i, _) in text.char_indices() {
            let tail = &text[i..];
            if tail.len() < s.len() && s.starts_with(tail) {
                best = best.max(tail.len());
                break;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_possible_stop_string_is_held_back_until_it_is_decided() {
        assert_eq!(held_back("abc EN", &["END".into()]), 2);
        assert_eq!(held_back("abc", &["END".into()]), 0);
        assert_eq!(held_back("xé", &["éa".into()]), "é".len());
    }

    #[test]
    fn stop_cut_finds_the_earliest_stop_after_the_search_start() {
        assert_eq!(stop_cut("a STOP b END", 0, &["END".into(), "STOP".into()]), Some(2));
        assert_eq!(stop_cut("héllo", 2, &["llo".into()]), Some(3));
        assert_eq!(stop_cut("abc", 0, &[]), None);
    }
}
