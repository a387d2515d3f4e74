//! Batched decode: one new token for each of several sequences in a single pass. The rows of
//! all sequences are stacked, so the projections, norms, MLP, rope and lm_head run once for the
//! batch; only attention runs per sequence, over that sequence's own KV cache (caches differ in
//! length, so their keys cannot share a matmul without padding). Each sequence keeps its own
//! MRoPE position (`len + rope_delta`). The arithmetic per row is decode_step's; only the
//! matmul kernels may differ in the last bits (more rows).

use candle_core::{DType, Device, Module, Tensor};

use super::attention::{Attention, QkvHeads};
use super::layer::DecoderLayer;
use super::rope::{MRope, PassInputs};
use super::{KvCache, TextModel};
use crate::error::{ModelError, Result};
use crate::kernels::DecodeStep;
use crate::profile::scope;
use crate::rope::Positions;

impl MRope {
    /// Tables for one text token per sequence at positions `starts` (the same on all three
    /// axes): (batch, 1, head_dim / 2), which the rope kernel applies per batch row.
    fn decode_tables(&self, starts: &[i64], dtype: DType, dev: &Device) -> Result<PassInputs> {
        let v = starts.to_vec();
        let t = self.tables(&Positions { axes: [v.clone(), v.clone(), v] }, dtype, dev)?;
        let shape = (starts.len(), 1, t.cos.dim(1)?);
        PassInputs::new(t.cos.reshape(shape)?, t.sin.reshape(shape)?)
    }
}

impl Attention {
    /// `xs` (batch, 1, hidden): row i is the new token of `caches[i]`, appended to it here.
    fn forward_decode_batch(
        &self,
        xs: &Tensor,
        pass: &PassInputs,
        caches: &mut [&mut KvCache],
        layer: usize,
    ) -> Result<Tensor> {
        let b = xs.dim(0)?;
        let dev = xs.device();
        if let (Some(step), Some(table)) = (&pass.step, &pass.cos_sin) {
            // Device inputs: QK-norm, rope, the KV writes and attention in one kernel.
            let qkv = scope("text.qkv_proj", dev, || self.qkv.forward(xs))?;
            let kv_table = step.kv_tables.get(layer)?;
            let inputs = DecodeStep { pos: &step.pos, lens: &step.lens, kv_table: &kv_table, splits: step.splits, scale: self.scale() as f32 };
            let fused = scope("text.decode_attention", dev, || {
                self.ops.decode_step_attention(&qkv, self.heads, self.qk_norm.stacked(), table, self.qk_norm.q.eps as f32, &inputs)
            })?;
            if let Some(out) = fused {
                caches.iter_mut().for_each(|c| c.commit_one(layer));
                return Ok(scope("text.o_proj", dev, || self.o_proj.forward(&out))?);
            }
        }
        let QkvHeads { q, k, v } = self.qkv_parts(xs, pass)?;
        let out = scope("text.decode_attention", dev, || {
            let mut outs = Vec::with_capacity(b);
            for (i, cache) in caches.iter_mut().enumerate() {
                let (k, v) = cache.append(layer, &k.narrow(0, i, 1)?, &v.narrow(0, i, 1)?, &self.ops)?;
                // One token sees everything before it: no mask.
                outs.push(self.ops.causal_attention(&q.narrow(0, i, 1)?, &k, &v, self.scale(), || Ok(None))?);
            }
            Ok::<_, ModelError>(Tensor::cat(&outs, 0)?)
        })?;
        Ok(scope("text.o_proj", dev, || self.o_proj.forward(&out))?)
    }
}

impl DecoderLayer {
    /// [`DecoderLayer::forward`] for a batch of single new tokens.
    fn forward_decode_batch(
        &self,
        xs: &Tensor,
        n1: &Tensor,
        pass: &PassInputs,
        caches: &mut [&mut KvCache],
        layer: usize,
    ) -> Result<(Tensor, Tensor)> {
        let attn = self.attn.forward_decode_batch(n1, pass, caches, layer)?;
        self.mlp_residual(xs, &attn)
    }
}

impl TextModel {
    /// One new token for each sequence: `embeds` (batch, 1, hidden), row i the token of
    /// `caches[i]`, at MRoPE position `caches[i].len() + caches[i].rope_delta`. Appends to every
    /// cache and returns the final-normed hidden states (batch, 1, hidden). On an error no cache
    /// changes (keys appended before the failure are dropped again).
    pub fn forward_decode_batch(&self, embeds: &Tensor, caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let starts: Vec<i64> = caches.iter().map(|c| c.len() as i64 + c.rope_delta).collect();
        let pass = scope("text.rope_tables", embeds.device(), || {
            self.rope.decode_tables(&starts, embeds.dtype(), embeds.device())
        })?;
        self.decode_pass(embeds, &pass, caches)
    }

    /// [`Self::forward_decode_batch`] with every input in device memory (CUDA, bf16, our
    /// kernels): `ids` (b,) u32 token ids, `step` (2, b) u32 = [tokens each cache holds; the rope
    /// position of its new token], `kv_tables` (layers, KV_TABLE_WORDS) u32 = every layer's
    /// [`crate::kernels::kv_table`] of the caches (which made room for the token), `table` from
    /// [`Self::position_table`] covering the positions. No host data enters the pass, so a CUDA
    /// graph can capture it and replay it for any caches of the same batch size.
    #[cfg(feature = "cuda")]
    pub(crate) fn forward_decode_device(
        &self,
        ids: &Tensor,
        step: &Tensor,
        kv_tables: &Tensor,
        splits: usize,
        table: &Tensor,
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor> {
        let embeds = self.embed.forward(ids)?.unsqueeze(1)?;
        let pass = PassInputs::on_device(table, step, kv_tables, splits)?;
        self.decode_pass(&embeds, &pass, caches)
    }

    /// The layers over one new token per cache, `embeds` (batch, 1, hidden); counts the token
    /// in every cache, or on an error drops what was appended.
    fn decode_pass(&self, embeds: &Tensor, pass: &PassInputs, caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let (b, seq, _) = embeds.dims3()?;
        if seq != 1 || b != caches.len() || b == 0 {
            return Err(ModelError::Input(format!(
                "a batched decode takes one token per sequence: got {b}x{seq} tokens for {} caches",
                caches.len()
            )));
        }
        let pass = |caches: &mut [&mut KvCache]| -> Result<Tensor> {
            self.run_layers(embeds, None, |i, layer, xs, n1| layer.forward_decode_batch(xs, n1, pass, caches, i))
        };
        match pass(caches) {
            Ok(hidden) => {
                caches.iter_mut().for_each(|c| c.len += 1);
                Ok(hidden)
            }
            Err(e) => {
                caches.iter_mut().for_each(|c| c.rollback());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decode_tables_give_each_sequence_its_own_position() {
        let p = crate::config::named_shape("2b").unwrap().text_params().unwrap();
        let r = MRope::new(&p);
        let t = r.decode_tables(&[5, 0, 17], DType::F32, &Device::Cpu).unwrap();
        assert_eq!(t.cos.dims(), [3, 1, p.head_dim / 2]);
        for (row, pos) in [(0, 5), (1, 0), (2, 17)] {
            let one = r.tables(&Positions::text(pos, 1), DType::F32, &Device::Cpu).unwrap();
            let got: Vec<f32> = t.sin.get(row).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(got, one.sin.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }
}
