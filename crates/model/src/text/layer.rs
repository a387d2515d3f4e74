//! One decoder layer: input RMSNorm, self-attention, residual add + post-attention RMSNorm,
//! SwiGLU MLP. The adds are fused into the norms after them, so a layer returns its output as
//! two parts for the caller to add together with the next norm.

use candle_core::Tensor;
use candle_nn::{linear_no_bias, VarBuilder};

use super::attention::Attention;
use super::kv_cache::KvCache;
use super::rope::PassInputs;
use crate::config::TextParams;
use crate::error::Result;
use crate::ops::linear::stacked_linear;
use crate::ops::quant::{Proj, QuantSummary};
use crate::ops::{Ops, RmsNorm};
use crate::profile::scope;

pub(super) struct DecoderLayer {
    pub(super) attn: Attention,
    /// gate_proj and up_proj stacked: one matmul.
    gate_up: Proj,
    down: Proj,
    pub(super) ln1: RmsNorm,
    ln2: RmsNorm,
    ops: Ops,
}

impl DecoderLayer {
    pub(super) fn new(p: &TextParams, vb: VarBuilder, ops: &Ops) -> Result<Self> {
        let mlp = vb.pp("mlp");
        let quant = ops.config().quant;
        Ok(Self {
            attn: Attention::new(p, vb.pp("self_attn"), ops)?,
            gate_up: Proj::new(stacked_linear(&mlp, &[("gate_proj", p.intermediate_size), ("up_proj", p.intermediate_size)], p.hidden_size, false)?, quant)?,
            down: Proj::new(linear_no_bias(p.intermediate_size, p.hidden_size, mlp.pp("down_proj"))?, quant)?,
            ln1: RmsNorm::new(p.hidden_size, p.rms_norm_eps, vb.pp("input_layernorm"))?,
            ln2: RmsNorm::new(p.hidden_size, p.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
            ops: ops.clone(),
        })
    }

    /// Adds this layer's projections to `summary`.
    pub(super) fn summarize(&self, summary: &mut QuantSummary) {
        for p in [&self.attn.qkv, &self.attn.o_proj, &self.gate_up, &self.down] {
            summary.add(p);
        }
    }

    /// The layer on `xs` whose input norm `n1` the caller computed (fused with the previous
    /// layer's last add); returns the output as `(a, b)` with output = a + b, for the caller to
    /// add together with the next norm.
    pub(super) fn forward(&self, xs: &Tensor, n1: &Tensor, pass: &PassInputs, cache: &mut KvCache, layer: usize) -> Result<(Tensor, Tensor)> {
        let attn = self.attn.forward(n1, pass, cache, layer)?;
        self.mlp_residual(xs, &attn)
    }

    /// The second half of the layer: with `xs = residual + attn`, (`xs`, `down(silu(gate) * up)`
    /// of the normed `xs`), whose sum is the layer's output.
    pub(super) fn mlp_residual(&self, residual: &Tensor, attn: &Tensor) -> Result<(Tensor, Tensor)> {
        let dev = residual.device();
        let (xs, h) = scope("text.add_norm", dev, || self.ops.add_rms_norm(residual, attn, &self.ln2))?;
        let gu = scope("text.gate_up", dev, || self.ops.project(&self.gate_up, &h))?;
        let h = scope("text.swiglu", dev, || self.ops.swiglu(&gu))?;
        let down = scope("text.down", dev, || self.ops.project(&self.down, &h))?;
        Ok((xs, down))
    }
}
