//! Rotary embeddings: the text decoder's QK-norm + MRoPE (one kernel, which can also write the
//! new keys and values into the KV cache) and the vision tower's 2-D rope on the qkv projection.

use candle_core::{DType, Tensor, D};

use super::{Ops, RmsNorm};
use crate::error::{ModelError, Result};
use crate::kernels::KvTarget;
use crate::profile::scope;

/// `x * cos + rotate_half(x) * sin` on (b, heads, seq, head_dim), one fused candle kernel, in the
/// model's dtype like the reference (`cos`, `sin`: (seq, head_dim / 2) or (b, seq, head_dim / 2)).
pub(crate) fn rotate(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::rotary_emb::rope(&xs.contiguous()?, cos, sin)?)
}

/// `x * cos + rotate_half(x) * sin` on (heads, seq, head_dim) with half tables (seq, head_dim/2),
/// computed in f32 like the vision tower of the reference (one fused kernel), then multiplied by
/// `scale` (exact: a power of two) and cast back.
pub(crate) fn rotate_f32(xs: &Tensor, cos: &Tensor, sin: &Tensor, scale: Option<f64>) -> candle_core::Result<Tensor> {
    let dtype = xs.dtype();
    let x = xs.to_dtype(DType::F32)?.contiguous()?.unsqueeze(0)?;
    let mut out = candle_nn::rotary_emb::rope(&x, cos, sin)?.squeeze(0)?;
    if let Some(s) = scale {
        out = (out * s)?;
    }
    out.to_dtype(dtype)
}

/// The rotary tables of one text pass: `cos`, `sin` (first half of each row) and, for the fused
/// kernel, `cos_sin` = [cos | sin] (None where the kernel cannot run).
pub(crate) struct RopeRef<'a> {
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    pub cos_sin: Option<&'a Tensor>,
}

/// The text decoder's query and key norms: q_norm and k_norm, and their weights stacked
/// (2, head_dim) for the kernel, which norms q and k heads in one launch.
pub(crate) struct QkNorm {
    pub q: RmsNorm,
    pub k: RmsNorm,
    stacked: Tensor,
}

impl QkNorm {
    pub(crate) fn new(q: RmsNorm, k: RmsNorm) -> Result<Self> {
        Ok(Self { stacked: Tensor::stack(&[&q.weight, &k.weight], 0)?, q, k })
    }

    /// (2, head_dim) = [q_norm weight; k_norm weight].
    pub(crate) fn stacked(&self) -> &Tensor {
        &self.stacked
    }
}

impl Ops {
    /// QK-norm and rotary embedding of `qk` (b, s, heads + kv_heads, head_dim), the q and k heads
    /// of a projection: returns q (b, heads, s, head_dim) and k (b, kv_heads, s, head_dim). One
    /// kernel on CUDA bf16 (rounding like RmsNorm + rope do); else the norms, then the rope.
    pub(crate) fn qk_norm_rope(&self, qk: &Tensor, heads: usize, norm: &QkNorm, rope: &RopeRef) -> Result<(Tensor, Tensor)> {
        let dev = qk.device();
        let kv_heads = qk.dim(2)? - heads;
        if let Some(table) = self.norm_rope_table(rope) {
            // Both norms use the same eps.
            let fused = scope("text.norm_rope", dev, || self.kernels.norm_rope(qk, norm.stacked(), heads, table, norm.q.eps as f32, None))?;
            if let Some(qk) = fused {
                return Ok((qk.narrow(1, 0, heads)?, qk.narrow(1, heads, kv_heads)?));
            }
        }
        let (q, k) = (qk.narrow(2, 0, heads)?, qk.narrow(2, heads, kv_heads)?);
        let (q, k) = scope("text.qk_norm", dev, || Ok::<_, ModelError>((self.rms_norm(&q, &norm.q)?, self.rms_norm(&k, &norm.k)?)))?;
        Ok(scope("text.rope", dev, || {
            Ok::<_, ModelError>((
                rotate(&q.transpose(1, 2)?.contiguous()?, rope.cos, rope.sin)?,
                rotate(&k.transpose(1, 2)?.contiguous()?, rope.cos, rope.sin)?,
            ))
        })?)
    }

    /// [`Self::qk_norm_rope`] of the whole projection `qkv` (b, s, heads + 2 kv_heads, head_dim)
    /// that also writes the normed, rotated keys and the values into the KV cache rows `target`,
    /// in the same pass: returns q (b, heads, s, head_dim), or `None` where the kernel does not
    /// apply (the caller then norms, rotates and appends separately).
    pub(crate) fn qk_norm_rope_into(&self, qkv: &Tensor, heads: usize, norm: &QkNorm, rope: &RopeRef, target: KvTarget) -> Result<Option<Tensor>> {
        match self.norm_rope_table(rope) {
            Some(table) => self.kernels.norm_rope(qkv, norm.stacked(), heads, table, norm.q.eps as f32, Some(target)),
            None => Ok(None),
        }
    }

    /// The table the QK-norm + rope kernel reads, where it may run for this pass (CUDA bf16
    /// tables, kernels allowed): callers of [`Self::qk_norm_rope_into`] ask first, before making
    /// room in the cache for a write that would not happen.
    pub(crate) fn norm_rope_table<'a>(&self, rope: &RopeRef<'a>) -> Option<&'a Tensor> {
        rope.cos_sin.filter(|_| self.fused(false))
    }

    /// The vision tower's rope on the qkv projection `qkv` (seq, 3 heads head_dim): q and k
    /// (heads, seq, head_dim) rotated in f32, q multiplied by `q_scale` when given (an exact power
    /// of two). One kernel on CUDA bf16.
    pub(crate) fn vision_rope(&self, qkv: &Tensor, heads: usize, cos: &Tensor, sin: &Tensor, q_scale: Option<f64>) -> Result<(Tensor, Tensor)> {
        if self.fused(false) {
            if let Some(qk) = self.kernels.vision_rope(qkv, cos, sin, heads, q_scale.unwrap_or(1.0) as f32)? {
                return Ok((qk.get(0)?, qk.get(1)?));
            }
        }
        let seq = qkv.dim(0)?;
        let head_dim = qkv.dim(D::Minus1)? / (3 * heads);
        let qkv = qkv.reshape((seq, 3, heads, head_dim))?;
        let part = |i| qkv.narrow(1, i, 1)?.squeeze(1)?.transpose(0, 1);
        Ok((rotate_f32(&part(0)?, cos, sin, q_scale)?, rotate_f32(&part(1)?, cos, sin, None)?))
    }
}
