//! Attention: the text decoder's causal attention (grouped-query, prefill and one-token decode)
//! and the vision tower's attention within each image. Our flash-attention kernels where they
//! apply, else candle's matmuls with the softmax in f32 like the reference.

use candle_core::{DType, Tensor, D};

use super::Ops;
use crate::error::{ModelError, Result};
use crate::profile::scope;

/// Softmax over the last axis in f32 (the reference upcasts), cast back to the input dtype.
pub(crate) fn softmax_f32(xs: &Tensor) -> candle_core::Result<Tensor> {
    let dtype = xs.dtype();
    candle_nn::ops::softmax_last_dim(&xs.to_dtype(DType::F32)?)?.to_dtype(dtype)
}

impl Ops {
    /// Causal attention of `q` (b, heads, s, d) over all keys so far `k`, `v` (b, kv_heads, len, d)
    /// (query i sees keys 0..=len - s + i), scaled by `scale`; returns (b, s, heads * d). A prefill
    /// runs the flash kernel, a one-token step the decode kernel; the fallback groups the `rep`
    /// query heads that share a key head into the rows of one matmul (no key copies) and adds
    /// `mask()`'s additive mask (asked for only there, None for one token).
    pub(crate) fn causal_attention<'m>(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
        mask: impl FnOnce() -> Result<Option<&'m Tensor>>,
    ) -> Result<Tensor> {
        let (b, heads, s, d) = q.dims4()?;
        let kv_heads = k.dim(1)?;
        let dev = q.device();
        // The flash kernel counts as attention ([`super::FusedKernels::FlashOnly`] keeps it), the
        // decode kernel with the others.
        let fused = match s {
            1 if self.fused(false) => scope("text.decode_attn", dev, || self.kernels.decode_attention(q, k, v, scale as f32))?,
            2.. if self.fused(true) => scope("text.flash_attn", dev, || self.kernels.attention(q, k, v, scale as f32, true))?,
            _ => None,
        };
        if let Some(out) = fused {
            return Ok(out.reshape((b, s, heads * d))?);
        }
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(ModelError::Input(format!("{heads} query heads cannot share {kv_heads} key heads")));
        }
        let rep = heads / kv_heads;
        let q = q.reshape((b, kv_heads, rep * s, d))?;
        let mut w = scope("text.scores", dev, || q.matmul(&k.t()?)? * scale)?;
        if let Some(mask) = mask()? {
            w = scope("text.mask", dev, || {
                let kv = w.dim(D::Minus1)?;
                w.reshape((b, kv_heads, rep, s, kv))?.broadcast_add(mask)?.reshape((b, kv_heads, rep * s, kv))
            })?;
        }
        let p = scope("text.softmax", dev, || softmax_f32(&w))?;
        let out = scope("text.attn_v", dev, || p.matmul(v))?;
        Ok(out.reshape((b, heads, s, d))?.transpose(1, 2)?.reshape((b, s, heads * d))?)
    }

    /// The vision tower's attention: `q`, `k`, `v` (heads, seq, d) (`v` may be a strided view),
    /// each range of `chunks` (one frame of one image) attending only within itself; the scores
    /// are multiplied by `scale` (1.0: q was scaled already). Returns (seq, heads * d).
    pub(crate) fn windowed_attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, chunks: &[(usize, usize)], scale: f64) -> Result<Tensor> {
        let dev = q.device();
        if self.fused(true) {
            if let Some(out) = self.windowed_flash(q, k, v, chunks, scale)? {
                return Ok(out);
            }
        }
        let seq = q.dim(1)?;
        let v = scope("vision.transpose", dev, || v.contiguous())?;
        let mut outs = Vec::with_capacity(chunks.len());
        for &(start, len) in chunks {
            let q = q.narrow(1, start, len)?;
            let k = k.narrow(1, start, len)?;
            let v = v.narrow(1, start, len)?;
            let w = scope("vision.scores", dev, || match scale {
                1.0 => q.matmul(&k.t()?),
                s => q.matmul(&k.t()?)? * s,
            })?;
            let w = scope("vision.softmax", dev, || softmax_f32(&w))?;
            outs.push(scope("vision.attn_v", dev, || w.matmul(&v))?);
        }
        Ok(scope("vision.attn_out", dev, || Tensor::cat(&outs, 1)?.transpose(0, 1)?.reshape((seq, ())))?)
    }

    /// [`Self::windowed_attention`] by the flash kernel, one launch per chunk; `None` where the
    /// kernel does not apply.
    fn windowed_flash(&self, q: &Tensor, k: &Tensor, v: &Tensor, chunks: &[(usize, usize)], scale: f64) -> Result<Option<Tensor>> {
        let dev = q.device();
        let mut outs = Vec::with_capacity(chunks.len());
        for &(start, len) in chunks {
            let part = |t: &Tensor| t.narrow(1, start, len)?.unsqueeze(0);
            let out = scope("vision.flash_attn", dev, || self.kernels.attention(&part(q)?, &part(k)?, &part(v)?, scale as f32, false))?;
            let Some(out) = out else { return Ok(None) };
            outs.push(out.reshape((len, ()))?);
        }
        Ok(Some(match outs.len() {
            1 => outs.remove(0),
            _ => Tensor::cat(&outs, 0)?,
        }))
    }
}
