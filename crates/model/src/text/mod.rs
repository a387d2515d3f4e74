//! The text decoder of Qwen3-VL: token embeddings, decoder layers (RMSNorm, QK-norm GQA
//! attention with interleaved MRoPE, SwiGLU MLP), DeepStack injection after the first layers,
//! the final norm and the LM head. The KV cache ([`KvCache`]) belongs to the caller.
//!
//! - [`kv_cache`]: the cache and its copy-on-write rule.
//! - [`rope`]: MRoPE tables and what a pass hands every layer.
//! - [`attention`], [`layer`]: one decoder layer.
//! - [`batch`]: one new token for each of several sequences in one pass.

use std::sync::Mutex;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{embedding, linear_no_bias, Embedding, Linear, VarBuilder};

use crate::config::TextParams;
use crate::error::{ModelError, Result};
use crate::ops::quant::{Proj, QuantSummary};
use crate::ops::{Ops, RmsNorm};
use crate::profile::scope;
use crate::rope::Positions;

mod attention;
mod batch;
mod kv_cache;
mod layer;
mod rope;

pub use kv_cache::KvCache;
use layer::DecoderLayer;
pub(crate) use rope::PassInputs;
use rope::MRope;

/// Visual features to inject during a forward pass: rows of `deepstack[k]` are added to the
/// output of layer k at the token indices `rows` (relative to the tokens of this pass).
pub struct DeepstackInput<'a> {
    pub rows: &'a Tensor,
    pub features: &'a [Tensor],
}

/// The language model of Qwen3-VL.
pub struct TextModel {
    embed: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Proj,
    /// Whether `lm_head` is the embedding matrix (a tied checkpoint has no `lm_head.weight`).
    tied_head: bool,
    rope: MRope,
    /// [`Self::position_table`], kept between passes.
    position_table: Mutex<Option<Tensor>>,
    params: TextParams,
    ops: Ops,
}

impl TextModel {
    /// `vb` points at `model.language_model`; `head_vb` at the root (for an untied `lm_head`).
    pub(crate) fn new(p: &TextParams, tied: bool, vb: VarBuilder, head_vb: VarBuilder, ops: &Ops) -> Result<Self> {
        let embed = embedding(p.vocab_size, p.hidden_size, vb.pp("embed_tokens"))?;
        let layers = (0..p.num_layers)
            .map(|i| DecoderLayer::new(p, vb.pp("layers").pp(i), ops))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(p.hidden_size, p.rms_norm_eps, vb.pp("norm"))?;
        let tied_head = tied && !head_vb.contains_tensor("lm_head.weight");
        let lm_head = if tied_head {
            Linear::new(embed.embeddings().clone(), None)
        } else {
            linear_no_bias(p.hidden_size, p.vocab_size, head_vb.pp("lm_head"))?
        };
        // Quantized, a tied head is a second (smaller) copy of the embeddings: the lookups
        // keep the exact rows, the head's matmul (a large share of a decode step) runs quantized.
        let lm_head = Proj::new(lm_head, ops.config().quant)?;
        Ok(Self {
            embed,
            layers,
            norm,
            lm_head,
            tied_head,
            rope: MRope::new(p),
            position_table: Mutex::new(None),
            params: p.clone(),
            ops: ops.clone(),
        })
    }

    pub fn params(&self) -> &TextParams {
        &self.params
    }

    /// How the projections (every layer's and the LM head) are stored.
    pub fn quant_summary(&self) -> QuantSummary {
        let mut s = QuantSummary::default();
        self.layers.iter().for_each(|l| l.summarize(&mut s));
        if !self.tied_head {
            s.add(&self.lm_head);
        } else if self.lm_head.format().is_some() {
            // A quantized copy of the (kept) embeddings.
            s.add_copy(&self.lm_head);
        }
        s
    }

    /// Embeddings of token ids: (1, seq, hidden).
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let dev = self.embed.embeddings().device();
        let t = Tensor::new(ids, dev)?.unsqueeze(0)?;
        Ok(self.embed.forward(&t)?)
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// (n, head_dim) = [cos | sin] of text positions 0..n (all three MRoPE axes equal: what a
    /// decoded token gets), n >= `upto`, computed like the per-pass tables; kept and grown in
    /// steps of 4096 positions (1 MiB in bf16 at head dim 128).
    pub(crate) fn position_table(&self, upto: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut slot = self.position_table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref().filter(|t| t.dim(0).is_ok_and(|n| n >= upto) && t.dtype() == dtype) {
            return Ok(t.clone());
        }
        let n = upto.max(1).next_multiple_of(4096);
        let t = self.rope.tables(&Positions::text(0, n), dtype, dev)?;
        let table = Tensor::cat(&[&t.cos, &t.sin], D::Minus1)?.contiguous()?;
        *slot = Some(table.clone());
        Ok(table)
    }

    /// What every layer of a pass over `pos` shares ([`MRope::tables`] of `pos`). On CUDA a long pass gathers them from [`Self::position_table`]
    /// instead of computing them on the host: frequency i of token j is the table's entry at the
    /// position of i's axis, the same value (the table is computed by the same arithmetic).
    fn pass_inputs(&self, pos: &Positions, dtype: DType, dev: &Device) -> Result<PassInputs> {
        let n = pos.len();
        let max = pos.axes.iter().flatten().copied().max().unwrap_or(0);
        let min = pos.axes.iter().flatten().copied().min().unwrap_or(0);
        if !dev.is_cuda() || n < 64 || min < 0 || max >= u32::MAX as i64 {
            return self.rope.tables(pos, dtype, dev);
        }
        let table = self.position_table(max as usize + 1, dtype, dev)?;
        let width = table.dim(1)?;
        let idx: Vec<u32> = pos.axes.iter().flatten().map(|&p| p as u32).collect();
        let rows = table.index_select(&Tensor::from_vec(idx, 3 * n, dev)?, 0)?.reshape((3, n, width))?;
        // One-hot over the three axes for each column (cos and sin halves alike): x * 1 + 0 + 0
        // is x exactly.
        let half = width / 2;
        let mut onehot = vec![0f32; 3 * width];
        for (i, &a) in self.rope.axis_of.iter().enumerate() {
            onehot[a * width + i] = 1.0;
            onehot[a * width + half + i] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (3, 1, width), dev)?.to_dtype(dtype)?;
        let cos_sin = rows.broadcast_mul(&onehot)?.sum(0)?;
        let (cos, sin) = (cos_sin.narrow(1, 0, half)?.contiguous()?, cos_sin.narrow(1, half, half)?.contiguous()?);
        Ok(PassInputs { cos, sin, cos_sin: (dtype == DType::BF16).then_some(cos_sin), causal: None, mask: Default::default(), step: None })
    }

    /// Runs the decoder over `embeds` (1, seq, hidden) at the given MRoPE positions, appending to
    /// `cache`; returns the final-normed hidden states (1, seq, hidden).
    pub fn forward(
        &self,
        embeds: &Tensor,
        pos: &Positions,
        deepstack: Option<DeepstackInput>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (_, seq, _) = embeds.dims3()?;
        if pos.len() != seq {
            return Err(ModelError::Input(format!("{} positions for {seq} tokens", pos.len())));
        }
        let mut pass = scope("text.rope_tables", embeds.device(), || self.pass_inputs(pos, embeds.dtype(), embeds.device()))?;
        if seq > 1 {
            pass.causal = Some((seq, cache.len()));
        }
        match self.run_layers(embeds, deepstack.as_ref(), |i, layer, xs, n1| layer.forward(xs, n1, &pass, cache, i)) {
            Ok(hidden) => {
                cache.len += seq;
                Ok(hidden)
            }
            Err(e) => {
                // Layers that took this pass's tokens before the failure drop them again.
                cache.rollback();
                Err(e)
            }
        }
    }

    /// The decoder layers over `embeds`, `layer_fn(i, layer, xs, ln1(xs))` giving each layer's
    /// output as a sum of two parts; adds them and applies the next norm (the next layer's input
    /// norm, after the last layer the final norm) in one step, injecting DeepStack features after
    /// the first layers. Returns the final-normed hidden states.
    fn run_layers(
        &self,
        embeds: &Tensor,
        deepstack: Option<&DeepstackInput>,
        mut layer_fn: impl FnMut(usize, &DecoderLayer, &Tensor, &Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let dev = embeds.device();
        let first = self.layers.first().map_or(&self.norm, |l| &l.ln1);
        let mut xs = embeds.clone();
        let mut n1 = scope("text.norm", dev, || self.ops.rms_norm(&xs, first))?;
        for (i, layer) in self.layers.iter().enumerate() {
            let (a, b) = layer_fn(i, layer, &xs, &n1)?;
            let next = self.layers.get(i + 1).map_or(&self.norm, |l| &l.ln1);
            match deepstack.and_then(|d| d.features.get(i).map(|f| (d.rows, f))) {
                Some((rows, feat)) => {
                    let sum = (a + b)?;
                    xs = scope("text.deepstack", dev, || {
                        let (flat, feat) = (sum.squeeze(0)?, feat.to_dtype(sum.dtype())?);
                        Ok::<_, ModelError>(self.ops.rows_add(&flat, rows, &feat)?.unsqueeze(0)?)
                    })?;
                    n1 = scope("text.norm", dev, || self.ops.rms_norm(&xs, next))?;
                }
                None => (xs, n1) = scope("text.add_norm", dev, || self.ops.add_rms_norm(&a, &b, next))?,
            }
        }
        Ok(n1)
    }

    /// Logits (f32) for hidden states (.., hidden).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(scope("text.lm_head", hidden.device(), || self.lm_head.forward(hidden)?.to_dtype(DType::F32))?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn position_table_rows_are_the_decode_tables_of_those_positions() {
        let p = crate::config::named_shape("2b").unwrap().text_params().unwrap();
        let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
        // Only the rope matters here: a model of one layer, small everything else.
        let mut small = p.clone();
        (small.num_layers, small.vocab_size, small.hidden_size, small.intermediate_size) = (1, 8, 64, 8);
        let m = TextModel::new(&small, true, vb.pp("model.language_model"), vb.clone(), &Ops::new(&Device::Cpu, Default::default())).unwrap();
        let t = m.position_table(5000, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [8192, p.head_dim], "grown to a multiple of 4096");
        // Asking for less keeps the same table.
        assert_eq!(m.position_table(10, DType::F32, &Device::Cpu).unwrap().id(), t.id());
        for pos in [0i64, 1, 1546, 4999] {
            let one = m.rope.tables(&Positions::text(pos, 1), DType::F32, &Device::Cpu).unwrap();
            let want = Tensor::cat(&[&one.cos, &one.sin], D::Minus1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let got = t.get(pos as usize).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got, want, "position {pos}");
        }
    }
}
