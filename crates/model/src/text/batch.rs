//! Batched decode: one new token for each of several sequences in a single pass. The rows of
//! all sequences are stacked, so the projections, norms, MLP, rope and lm_head run once for the
//! batch; only attention runs per sequence, over that sequence's own KV cache (caches differ in
//! length, so their keys cannot share a matmul without padding). Each sequence keeps its own
//! MRoPE position (`len + rope_delta`). The arithmetic per row is decode_step's; only the
//! matmul kernels may differ in the last bits (more rows).

use candle_core::{DType, Device, Module, Tensor};

use super::{Attention, DecoderLayer, KvCache, MRope, QkvHeads, RopeTables, TextModel};
use crate::error::{ModelError, Result};
use crate::profile::scope;
use crate::rope::Positions;
use crate::vision::softmax_f32;

impl MRope {
    /// Tables for one text token per sequence at positions `starts` (the same on all three
    /// axes): (batch, 1, head_dim / 2), which the rope kernel applies per batch row.
    fn decode_tables(&self, starts: &[i64], dtype: DType, dev: &Device) -> Result<RopeTables> {
        let v = starts.to_vec();
        let t = self.tables(&Positions { axes: [v.clone(), v.clone(), v] }, dtype, dev)?;
        let shape = (starts.len(), 1, t.cos.dim(1)?);
        RopeTables::new(t.cos.reshape(shape)?, t.sin.reshape(shape)?)
    }
}

impl Attention {
    /// Attention of one sequence's single new token: q (1, heads, 1, head_dim) against its cached
    /// k, v (1, kv_heads, len, head_dim). The `rep` query heads sharing a key head are the rows of
    /// one matmul (no key copies); no mask, the token sees everything before it.
    fn attend_one(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let scale = (self.head_dim as f64).powf(-0.5);
        if let Some(out) = crate::kernels::decode_attention(q, k, v, scale as f32)? {
            return Ok(out.reshape((1, self.heads, 1, self.head_dim))?);
        }
        let rep = self.heads / self.kv_heads;
        let q = q.reshape((1, self.kv_heads, rep, self.head_dim))?;
        let w = (q.matmul(&k.t()?)? * scale)?;
        let out = softmax_f32(&w)?.matmul(v)?;
        Ok(out.reshape((1, self.heads, 1, self.head_dim))?)
    }

    /// `xs` (batch, 1, hidden): row i is the new token of `caches[i]`, appended to it here.
    fn forward_decode_batch(
        &self,
        xs: &Tensor,
        rope: &RopeTables,
        caches: &mut [&mut KvCache],
        layer: usize,
    ) -> Result<Tensor> {
        let b = xs.dim(0)?;
        let dev = xs.device();
        if let (Some(step), Some(table)) = (&rope.step, &rope.cos_sin) {
            // Device inputs: QK-norm, rope, the KV writes and attention in one kernel.
            let qkv = scope("text.qkv_proj", dev, || self.qkv.forward(xs))?;
            let kv_table = step.kv_tables.get(layer)?;
            let scale = (self.head_dim as f64).powf(-0.5) as f32;
            let inputs = crate::kernels::DecodeStep { pos: &step.pos, lens: &step.lens, kv_table: &kv_table, splits: step.splits, scale };
            let fused = scope("text.decode_attention", dev, || {
                crate::kernels::decode_attention_norm(&qkv, self.heads, &self.qk_norm_weights, table, self.q_norm.eps as f32, &inputs)
            })?;
            if let Some(out) = fused {
                caches.iter_mut().for_each(|c| c.commit_one(layer));
                return Ok(scope("text.o_proj", dev, || self.o_proj.forward(&out))?);
            }
        }
        let QkvHeads { q, k, v } = self.qkv_parts(xs, rope)?;
        let out = scope("text.decode_attention", dev, || {
            let mut outs = Vec::with_capacity(b);
            for (i, cache) in caches.iter_mut().enumerate() {
                let (k, v) = cache.append(layer, &k.narrow(0, i, 1)?, &v.narrow(0, i, 1)?)?;
                outs.push(self.attend_one(&q.narrow(0, i, 1)?, &k, &v)?);
            }
            Ok::<_, ModelError>(Tensor::cat(&outs, 0)?)
        })?;
        // (b, heads, 1, head_dim) is already (b, 1, heads * head_dim) in memory.
        let out = out.reshape((b, 1, self.heads * self.head_dim))?;
        Ok(scope("text.o_proj", dev, || self.o_proj.forward(&out))?)
    }
}

impl DecoderLayer {
    /// [`DecoderLayer::forward`] for a batch of single new tokens.
    fn forward_decode_batch(
        &self,
        xs: &Tensor,
        n1: &Tensor,
        rope: &RopeTables,
        caches: &mut [&mut KvCache],
        layer: usize,
    ) -> Result<(Tensor, Tensor)> {
        let attn = self.attn.forward_decode_batch(n1, rope, caches, layer)?;
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
        let rope = scope("text.rope_tables", embeds.device(), || {
            self.rope.decode_tables(&starts, embeds.dtype(), embeds.device())
        })?;
        self.decode_pass(embeds, &rope, caches)
    }

    /// [`Self::forward_decode_batch`] with every input in device memory (CUDA, bf16, our
    /// kernels): `ids` (b,) u32 token ids, `step` (2, b) u32 = [tokens each cache holds; the rope
    /// position of its new token], `kv_tables` (layers, KV_TABLE_WORDS) u32 = every layer's
    /// [`crate::kernels::kv_table`] of the caches (which made room for the token), `table` from
    /// [`Self::position_table`] covering the positions. No host data enters the pass, so a CUDA
    /// graph can capture it and replay it for any caches of the same batch size.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
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
        let rope = RopeTables::on_device(table, step, kv_tables, splits)?;
        self.decode_pass(&embeds, &rope, caches)
    }

    /// The layers over one new token per cache, `embeds` (batch, 1, hidden); counts the token
    /// in every cache, or on an error drops what was appended.
    fn decode_pass(&self, embeds: &Tensor, rope: &RopeTables, caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let (b, seq, _) = embeds.dims3()?;
        if seq != 1 || b != caches.len() || b == 0 {
            return Err(ModelError::Input(format!(
                "a batched decode takes one token per sequence: got {b}x{seq} tokens for {} caches",
                caches.len()
            )));
        }
        let pass = |caches: &mut [&mut KvCache]| -> Result<Tensor> {
            self.run_layers(embeds, None, |i, layer, xs, n1| layer.forward_decode_batch(xs, n1, rope, caches, i))
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
    fn rollback_drops_keys_past_the_committed_length() {
        let dev = Device::Cpu;
        let mut c = KvCache::new(2);
        let kv = |n: usize| Tensor::zeros((1, 2, n, 4), DType::F32, &dev).unwrap();
        c.append(0, &kv(3), &kv(3)).unwrap();
        c.append(1, &kv(3), &kv(3)).unwrap();
        c.len = 3;
        c.append(0, &kv(1), &kv(1)).unwrap();
        c.rollback();
        let lens: Vec<usize> = c.layers.iter().flatten().map(|l| l.filled).collect();
        assert_eq!(lens, [3, 3]);
        let mut empty = KvCache::new(1);
        empty.append(0, &kv(1), &kv(1)).unwrap();
        empty.rollback();
        assert!(empty.layers[0].is_none());
    }

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
