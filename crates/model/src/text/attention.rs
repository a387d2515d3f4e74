//! The decoder's self-attention: one qkv projection, QK-norm, interleaved MRoPE, the new keys
//! and values appended to the KV cache, grouped-query causal attention, the output projection.

use candle_core::{DType, Device, Tensor};
use candle_nn::{linear_b, VarBuilder};

use super::kv_cache::KvCache;
use super::rope::PassInputs;
use crate::config::TextParams;
use crate::error::{ModelError, Result};
use crate::ops::linear::stacked_linear;
use crate::ops::quant::Proj;
use crate::ops::rope::QkNorm;
use crate::ops::{Ops, RmsNorm};
use crate::profile::scope;

/// The heads of one qkv projection: q, k normed and rotated, and v.
pub(crate) struct QkvHeads {
    pub(super) q: Tensor,
    pub(super) k: Tensor,
    pub(super) v: Tensor,
}

pub(super) struct Attention {
    /// q_proj, k_proj and v_proj stacked: one matmul.
    pub(super) qkv: Proj,
    pub(super) o_proj: Proj,
    pub(super) qk_norm: QkNorm,
    pub(super) heads: usize,
    pub(super) kv_heads: usize,
    pub(super) head_dim: usize,
    pub(super) ops: Ops,
}

impl Attention {
    pub(super) fn new(p: &TextParams, vb: VarBuilder, ops: &Ops) -> Result<Self> {
        let (h, hd, kv) = (p.hidden_size, p.head_dim, p.num_kv_heads);
        let b = p.attention_bias;
        let q_norm = RmsNorm::new(hd, p.rms_norm_eps, vb.pp("q_norm"))?;
        let k_norm = RmsNorm::new(hd, p.rms_norm_eps, vb.pp("k_norm"))?;
        let quant = ops.config().quant;
        Ok(Self {
            qkv: Proj::new(stacked_linear(&vb, &[("q_proj", p.num_heads * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)], h, b)?, quant)?,
            o_proj: Proj::new(linear_b(p.num_heads * hd, h, b, vb.pp("o_proj"))?, quant)?,
            qk_norm: QkNorm::new(q_norm, k_norm)?,
            heads: p.num_heads,
            kv_heads: kv,
            head_dim: hd,
            ops: ops.clone(),
        })
    }

    pub(super) fn scale(&self) -> f64 {
        (self.head_dim as f64).powf(-0.5)
    }

    /// The qkv projection of `xs` (b, s, hidden) as (b, s, heads + 2 kv_heads, head_dim).
    fn project_heads(&self, xs: &Tensor, pass: &PassInputs) -> Result<Tensor> {
        let (b, s, _) = xs.dims3()?;
        // A decode pass with device inputs has no per-pass tables: only its fused kernel
        // (batch.rs) can run it.
        if pass.step.is_some() {
            return Err(ModelError::Input("a decode pass with device inputs needs the fused CUDA kernels".into()));
        }
        let qkv = scope("text.qkv_proj", xs.device(), || self.ops.project(&self.qkv, xs))?;
        Ok(qkv.reshape((b, s, self.heads + 2 * self.kv_heads, self.head_dim))?)
    }

    /// The projections of `xs` (b, s, hidden) as heads: q (b, heads, s, head_dim) and k
    /// (b, kv_heads, s, head_dim) QK-normed and rotated, v (b, kv_heads, s, head_dim) (a strided
    /// view into the projection, copied once into the KV cache).
    pub(super) fn qkv_parts(&self, xs: &Tensor, pass: &PassInputs) -> Result<QkvHeads> {
        let qkv = self.project_heads(xs, pass)?;
        let qk = qkv.narrow(2, 0, self.heads + self.kv_heads)?;
        let (q, k) = self.ops.qk_norm_rope(&qk, self.heads, &self.qk_norm, &pass.rope())?;
        let v = qkv.narrow(2, self.heads + self.kv_heads, self.kv_heads)?.transpose(1, 2)?;
        Ok(QkvHeads { q, k, v })
    }

    /// [`Self::qkv_parts`] with the new keys and values appended to `layer` of `cache`: q, and
    /// all of the layer's keys and values so far (b, kv_heads, len, head_dim). Where it can, one
    /// kernel norms and rotates q and k and writes the keys and values into the cache.
    fn qkv_cached(&self, xs: &Tensor, pass: &PassInputs, cache: &mut KvCache, layer: usize) -> Result<QkvHeads> {
        let dev = xs.device();
        let qkv = self.project_heads(xs, pass)?;
        let v = qkv.narrow(2, self.heads + self.kv_heads, self.kv_heads)?.transpose(1, 2)?;
        if self.ops.norm_rope_table(&pass.rope()).is_some() {
            let fused = scope("text.norm_rope", dev, || {
                cache.append_with(layer, &v, |target| self.ops.qk_norm_rope_into(&qkv, self.heads, &self.qk_norm, &pass.rope(), target))
            })?;
            if let Some((q, k, v)) = fused {
                return Ok(QkvHeads { q, k, v });
            }
        }
        let qk = qkv.narrow(2, 0, self.heads + self.kv_heads)?;
        let (q, k) = self.ops.qk_norm_rope(&qk, self.heads, &self.qk_norm, &pass.rope())?;
        let (k, v) = scope("text.kv_append", dev, || cache.append(layer, &k, &v, &self.ops))?;
        Ok(QkvHeads { q, k, v })
    }

    pub(super) fn forward(&self, xs: &Tensor, pass: &PassInputs, cache: &mut KvCache, layer: usize) -> Result<Tensor> {
        let dev = xs.device();
        let QkvHeads { q, k, v } = self.qkv_cached(xs, pass, cache, layer)?;
        let out = self.ops.causal_attention(&q, &k, &v, self.scale(), || pass.mask(q.dtype(), dev))?;
        scope("text.o_proj", dev, || self.ops.project(&self.o_proj, &out))
    }
}

/// Additive mask (q, past + q) for `q` new tokens after `past` cached ones: token i sees keys
/// 0..=past+i. Built on the device.
pub(super) fn causal_mask(q: usize, past: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let kv = past + q;
    let rows = Tensor::arange(past as u32, kv as u32, dev)?.reshape((q, 1))?;
    let cols = Tensor::arange(0u32, kv as u32, dev)?.reshape((1, kv))?;
    let future = cols.broadcast_gt(&rows)?;
    let zeros = Tensor::zeros((q, kv), dtype, dev)?;
    let neg = Tensor::full(f32::NEG_INFINITY, (q, kv), dev)?.to_dtype(dtype)?;
    Ok(future.where_cond(&neg, &zeros)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_lets_each_token_see_the_past_and_itself() {
        let m = causal_mask(2, 3, DType::F32, &Device::Cpu).unwrap();
        let v: Vec<Vec<f32>> = m.to_vec2().unwrap();
        assert_eq!(v[0][..4], [0.0, 0.0, 0.0, 0.0]);
        assert!(v[0][4].is_infinite());
        assert!(v[1].iter().all(|x| *x == 0.0));
    }
}
