//! The text decoder: RMSNorm, QK-norm GQA attention with interleaved MRoPE, SwiGLU MLP,
//! DeepStack injection after the first layers, and the KV cache the engine owns.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{embedding, linear_b, linear_no_bias, Embedding, Linear, VarBuilder};

use crate::config::TextParams;
use crate::error::{ModelError, Result};
use crate::profile::scope;
use crate::rope::Positions;
use crate::vision::softmax_f32;

mod batch;

/// RMSNorm in one fused kernel: statistics in f32 like the reference. In f32 it is the reference's
/// arithmetic; in bf16/f16 the reference rounds the normalised value to the storage type before
/// multiplying by the weight, where this kernel rounds once at the end (at most one unit in the last
/// place apart, and closer to the exact value).
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub(crate) fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?, eps })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(&xs.contiguous()?, &self.weight, self.eps as f32)?)
    }
}

/// One matmul for several projections of the same input: the weights `names` (each
/// (out_i, in)) stacked along the output dimension, with biases when `bias`.
fn fused_linear(vb: &VarBuilder, parts: &[(&str, usize)], in_dim: usize, bias: bool) -> Result<Linear> {
    let mut ws = Vec::with_capacity(parts.len());
    let mut bs = Vec::with_capacity(parts.len());
    for (name, out) in parts {
        ws.push(vb.pp(*name).get((*out, in_dim), "weight")?);
        if bias {
            bs.push(vb.pp(*name).get(*out, "bias")?);
        }
    }
    let b = if bias { Some(Tensor::cat(&bs, 0)?) } else { None };
    Ok(Linear::new(Tensor::cat(&ws, 0)?, b))
}

/// Keys and values of one sequence, per layer, plus what decoding needs to continue it.
/// Owned by the caller (the engine) and passed as `&mut`; the weights stay shared.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    /// MRoPE offset of the next token: its position is `len + rope_delta` on all three axes.
    pub rope_delta: i64,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers], len: 0, rope_delta: 0 }
    }

    /// Number of tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything (a new conversation).
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
        self.rope_delta = 0;
    }

    /// Keeps the first `len` tokens (for reusing a shared prefix).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        for l in self.layers.iter_mut().flatten() {
            *l = (l.0.narrow(2, 0, len)?, l.1.narrow(2, 0, len)?);
        }
        self.len = len;
        Ok(())
    }

    /// Bytes held on the device.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| ModelError::Input(format!("KV cache has no layer {layer}")))?;
        let kv = match slot.take() {
            None => (k.clone(), v.clone()),
            Some((pk, pv)) => (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?),
        };
        *slot = Some(kv.clone());
        Ok(kv)
    }
}

/// What every layer of one forward pass shares: the MRoPE tables of the new tokens (first half
/// of each row, (seq, head_dim / 2); the second half repeats it) and the causal mask of a
/// multi-token pass, built once.
pub(crate) struct RopeTables {
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
}

/// Interleaved multi-axis rotary embedding: frequency i follows the h axis when i % 3 == 1 and
/// the w axis when i % 3 == 2 (within their sections), the t axis otherwise.
pub(crate) struct MRope {
    inv_freq: Vec<f32>,
    axis_of: Vec<usize>,
}

impl MRope {
    pub(crate) fn new(p: &TextParams) -> Self {
        let dim = p.head_dim;
        let inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| {
                let e = i as f32 / dim as f32;
                1.0f32 / (p.rope_theta.powf(e as f64) as f32)
            })
            .collect();
        let axis_of = (0..inv_freq.len())
            .map(|i| {
                if i % 3 == 1 && i < 3 * p.mrope_section[1] {
                    1
                } else if i % 3 == 2 && i < 3 * p.mrope_section[2] {
                    2
                } else {
                    0
                }
            })
            .collect();
        Self { inv_freq, axis_of }
    }

    pub(crate) fn tables(&self, pos: &Positions, dtype: DType, dev: &Device) -> Result<RopeTables> {
        let n = pos.len();
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(n * half * 2);
        let mut sin = Vec::with_capacity(n * half * 2);
        let mut c = vec![0f32; half];
        let mut s = vec![0f32; half];
        for j in 0..n {
            for (i, f) in self.inv_freq.iter().enumerate() {
                let a = pos.axes[self.axis_of[i]][j] as f32 * f;
                c[i] = a.cos();
                s[i] = a.sin();
            }
            cos.extend_from_slice(&c);
            sin.extend_from_slice(&s);
        }
        Ok(RopeTables {
            cos: Tensor::from_vec(cos, (n, half), dev)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, (n, half), dev)?.to_dtype(dtype)?,
            mask: None,
        })
    }
}

/// `x * cos + rotate_half(x) * sin` on (b, heads, seq, head_dim), one fused kernel, in the
/// model's dtype like the reference.
fn rotate(xs: &Tensor, t: &RopeTables) -> Result<Tensor> {
    Ok(candle_nn::rotary_emb::rope(&xs.contiguous()?, &t.cos, &t.sin)?)
}

struct Attention {
    /// q_proj, k_proj and v_proj stacked: one matmul.
    qkv: Linear,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(p: &TextParams, vb: VarBuilder) -> Result<Self> {
        let (h, hd, kv) = (p.hidden_size, p.head_dim, p.num_kv_heads);
        let b = p.attention_bias;
        Ok(Self {
            qkv: fused_linear(&vb, &[("q_proj", p.num_heads * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)], h, b)?,
            o_proj: linear_b(p.num_heads * hd, h, b, vb.pp("o_proj"))?,
            q_norm: RmsNorm::new(hd, p.rms_norm_eps, vb.pp("q_norm"))?,
            k_norm: RmsNorm::new(hd, p.rms_norm_eps, vb.pp("k_norm"))?,
            heads: p.num_heads,
            kv_heads: kv,
            head_dim: hd,
        })
    }

    /// The projections of `xs` (b, s, hidden) as heads: q (b, heads, s, head_dim) and k
    /// (b, kv_heads, s, head_dim) QK-normed and rotated, v (b, kv_heads, s, head_dim).
    fn qkv_heads(&self, xs: &Tensor, rope: &RopeTables) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, s, _) = xs.dims3()?;
        let dev = xs.device();
        let qkv = scope("text.qkv_proj", dev, || self.qkv.forward(xs))?;
        let (nq, nkv) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        let q = qkv.narrow(D::Minus1, 0, nq)?;
        let k = qkv.narrow(D::Minus1, nq, nkv)?;
        let v = qkv.narrow(D::Minus1, nq + nkv, nkv)?;
        let (q, k) = scope("text.qk_norm", dev, || {
            Ok::<_, ModelError>((
                self.q_norm.forward(&q.reshape((b, s, self.heads, self.head_dim))?)?,
                self.k_norm.forward(&k.reshape((b, s, self.kv_heads, self.head_dim))?)?,
            ))
        })?;
        let v = v.reshape((b, s, self.kv_heads, self.head_dim))?;
        scope("text.rope", dev, || {
            Ok::<_, ModelError>((
                rotate(&q.transpose(1, 2)?.contiguous()?, rope)?,
                rotate(&k.transpose(1, 2)?.contiguous()?, rope)?,
                v.transpose(1, 2)?.contiguous()?,
            ))
        })
    }

    fn forward(&self, xs: &Tensor, rope: &RopeTables, cache: &mut KvCache, layer: usize) -> Result<Tensor> {
        let (b, s, _) = xs.dims3()?;
        let dev = xs.device();
        let (q, k, v) = self.qkv_heads(xs, rope)?;
        let (k, v) = scope("text.kv_append", dev, || cache.append(layer, &k, &v))?;
        let scale = (self.head_dim as f64).powf(-0.5);
        if s > 1 {
            let fused = scope("text.flash_attn", dev, || crate::flash::attention(&q, &k, &v, scale as f32, true))?;
            if let Some(out) = fused {
                let out = out.reshape((b, s, self.heads * self.head_dim))?;
                return Ok(scope("text.o_proj", dev, || self.o_proj.forward(&out))?);
            }
        }
        // Grouped-query attention without copying keys: the `rep` query heads that share a key
        // head become `rep * s` rows of one matmul against it (head h uses key head h / rep).
        let rep = self.heads / self.kv_heads;
        let q = q.reshape((b, self.kv_heads, rep * s, self.head_dim))?;
        let mut w = scope("text.scores", dev, || q.matmul(&k.t()?)? * scale)?;
        if let Some(mask) = &rope.mask {
            w = scope("text.mask", dev, || {
                let kv = w.dim(D::Minus1)?;
                w.reshape((b, self.kv_heads, rep, s, kv))?.broadcast_add(mask)?.reshape((b, self.kv_heads, rep * s, kv))
            })?;
        }
        let p = scope("text.softmax", dev, || softmax_f32(&w))?;
        let out = scope("text.attn_v", dev, || p.matmul(&v))?;
        let out = out.reshape((b, self.heads, s, self.head_dim))?.transpose(1, 2)?.reshape((b, s, self.heads * self.head_dim))?;
        Ok(scope("text.o_proj", dev, || self.o_proj.forward(&out))?)
    }
}

/// Additive mask (q, past + q) for `q` new tokens after `past` cached ones: token i sees keys
/// 0..=past+i. Built on the device.
fn causal_mask(q: usize, past: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let kv = past + q;
    let rows = Tensor::arange(past as u32, kv as u32, dev)?.reshape((q, 1))?;
    let cols = Tensor::arange(0u32, kv as u32, dev)?.reshape((1, kv))?;
    let future = cols.broadcast_gt(&rows)?;
    let zeros = Tensor::zeros((q, kv), dtype, dev)?;
    let neg = Tensor::full(f32::NEG_INFINITY, (q, kv), dev)?.to_dtype(dtype)?;
    Ok(future.where_cond(&neg, &zeros)?)
}

struct DecoderLayer {
    attn: Attention,
    /// gate_proj and up_proj stacked: one matmul.
    gate_up: Linear,
    intermediate: usize,
    down: Linear,
    ln1: RmsNorm,
    ln2: RmsNorm,
}

impl DecoderLayer {
    fn new(p: &TextParams, vb: VarBuilder) -> Result<Self> {
        let mlp = vb.pp("mlp");
        Ok(Self {
            attn: Attention::new(p, vb.pp("self_attn"))?,
            gate_up: fused_linear(&mlp, &[("gate_proj", p.intermediate_size), ("up_proj", p.intermediate_size)], p.hidden_size, false)?,
            intermediate: p.intermediate_size,
            down: linear_no_bias(p.intermediate_size, p.hidden_size, mlp.pp("down_proj"))?,
            ln1: RmsNorm::new(p.hidden_size, p.rms_norm_eps, vb.pp("input_layernorm"))?,
            ln2: RmsNorm::new(p.hidden_size, p.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
        })
    }

    fn forward(&self, xs: &Tensor, rope: &RopeTables, cache: &mut KvCache, layer: usize) -> Result<Tensor> {
        let n1 = scope("text.norm", xs.device(), || self.ln1.forward(xs))?;
        let xs = (xs + self.attn.forward(&n1, rope, cache, layer)?)?;
        self.mlp_residual(&xs)
    }

    /// The second half of the layer: `xs + down(silu(gate) * up)` of the normed `xs`.
    fn mlp_residual(&self, xs: &Tensor) -> Result<Tensor> {
        let dev = xs.device();
        let h = scope("text.norm", dev, || self.ln2.forward(xs))?;
        let h = scope("text.gate_up", dev, || {
            let gu = self.gate_up.forward(&h)?;
            let n = self.intermediate;
            gu.narrow(D::Minus1, 0, n)?.silu()? * gu.narrow(D::Minus1, n, n)?
        })?;
        Ok((xs + scope("text.down", dev, || self.down.forward(&h))?)?)
    }
}

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
    lm_head: Linear,
    rope: MRope,
    params: TextParams,
}

impl TextModel {
    /// `vb` points at `model.language_model`; `head_vb` at the root (for an untied `lm_head`).
    pub fn new(p: &TextParams, tied: bool, vb: VarBuilder, head_vb: VarBuilder) -> Result<Self> {
        let embed = embedding(p.vocab_size, p.hidden_size, vb.pp("embed_tokens"))?;
        let layers = (0..p.num_layers)
            .map(|i| DecoderLayer::new(p, vb.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(p.hidden_size, p.rms_norm_eps, vb.pp("norm"))?;
        let lm_head = if tied && !head_vb.contains_tensor("lm_head.weight") {
            Linear::new(embed.embeddings().clone(), None)
        } else {
            linear_no_bias(p.hidden_size, p.vocab_size, head_vb.pp("lm_head"))?
        };
        Ok(Self { embed, layers, norm, lm_head, rope: MRope::new(p), params: p.clone() })
    }

    pub fn params(&self) -> &TextParams {
        &self.params
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
        let mut rope = scope("text.rope_tables", embeds.device(), || self.rope.tables(pos, embeds.dtype(), embeds.device()))?;
        if seq > 1 {
            rope.mask = Some(scope("text.mask", embeds.device(), || {
                causal_mask(seq, cache.len(), embeds.dtype(), embeds.device())
            })?);
        }
        let mut xs = embeds.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs, &rope, cache, i)?;
            if let Some(ds) = deepstack.as_ref().and_then(|d| d.features.get(i).map(|f| (d.rows, f))) {
                let (rows, feat) = ds;
                xs = scope("text.deepstack", xs.device(), || {
                    xs.squeeze(0)?.index_add(rows, &feat.to_dtype(xs.dtype())?, 0)?.unsqueeze(0)
                })?;
            }
        }
        cache.len += seq;
        scope("text.norm", xs.device(), || self.norm.forward(&xs))
    }

    /// Logits (f32) for hidden states (.., hidden).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(scope("text.lm_head", hidden.device(), || self.lm_head.forward(hidden)?.to_dtype(DType::F32))?)
    }
}

#[cfg(test)]
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

    #[test]
    fn mrope_axes_interleave_and_tail_is_temporal() {
        let p = crate::config::named_shape("2b").unwrap().text_params().unwrap();
        let r = MRope::new(&p);
        assert_eq!(&r.axis_of[..6], &[0, 1, 2, 0, 1, 2]);
        assert_eq!(&r.axis_of[60..], &[0, 0, 0, 0]);
        assert_eq!(r.axis_of.iter().filter(|&&a| a == 1).count(), 20);
        assert_eq!(r.axis_of.iter().filter(|&&a| a == 0).count(), 24);
    }
}
