//! The text decoder: RMSNorm, QK-norm GQA attention with interleaved MRoPE, SwiGLU MLP,
//! DeepStack injection after the first layers, and the KV cache the engine owns.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{embedding, linear_b, linear_no_bias, Embedding, Linear, VarBuilder};

use crate::config::TextParams;
use crate::error::{ModelError, Result};
use crate::kernels;
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

    /// `(x + y, norm(x + y))`: one kernel on CUDA.
    pub(crate) fn add_forward(&self, x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
        if let Some(both) = kernels::add_rms_norm(x, y, &self.weight, self.eps as f32)? {
            return Ok((both.get(0)?, both.get(1)?));
        }
        let sum = (x + y)?;
        let normed = self.forward(&sum)?;
        Ok((sum, normed))
    }
}

/// `lin(x)`: prefills (64 rows or more) through cuBLASLt on CUDA bf16 ([`kernels::linear`]),
/// decode steps and other devices through candle's matmul.
fn project(lin: &Linear, x: &Tensor) -> Result<Tensor> {
    let k = x.dim(D::Minus1)?;
    if k > 0 && x.elem_count() / k >= 64 {
        if let Some(y) = kernels::linear(x, lin.weight(), lin.bias(), kernels::Act::None)? {
            return Ok(y);
        }
    }
    Ok(lin.forward(x)?)
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
///
/// Each layer's keys and values live in buffers with room to spare, (b, kv_heads, capacity,
/// head_dim), written in place as tokens arrive (no concatenation per step); the buffers grow by
/// half when full. Clones share the buffers (the engine's prefix cache keeps clones): a cache
/// about to write into a buffer that another clone still holds copies it first (copy on write),
/// so no clone ever sees another's tokens.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    len: usize,
    /// MRoPE offset of the next token: its position is `len + rope_delta` on all three axes.
    pub rope_delta: i64,
}

/// One layer: its buffers (maybe shared with clones) and how many of their tokens are ours.
#[derive(Debug, Clone)]
struct LayerKv {
    buf: Arc<KvBuffers>,
    filled: usize,
}

/// (b, kv_heads, capacity, head_dim) keys and values.
#[derive(Debug)]
struct KvBuffers {
    k: Tensor,
    v: Tensor,
}

impl KvBuffers {
    fn capacity(&self) -> usize {
        self.k.dim(2).unwrap_or(0)
    }

    /// Zeroed buffers shaped like `like` (b, kv_heads, _, head_dim) with room for `cap` tokens,
    /// holding a copy of the first `keep` tokens of `from`.
    fn with_capacity(like: &Tensor, cap: usize, from: Option<&KvBuffers>, keep: usize) -> Result<Self> {
        let (b, h, _, d) = like.dims4()?;
        let (k, v) = if like.device().is_cuda() {
            // SAFETY: rows past a layer's `filled` are never read (attention gets `narrow`ed views,
            // the decode kernels each sequence's length), and every row is written before it
            // counts as filled; skipping the fill saves a memset of the whole capacity per layer.
            unsafe {
                (Tensor::empty((b, h, cap, d), like.dtype(), like.device())?, Tensor::empty((b, h, cap, d), like.dtype(), like.device())?)
            }
        } else {
            (Tensor::zeros((b, h, cap, d), like.dtype(), like.device())?, Tensor::zeros((b, h, cap, d), like.dtype(), like.device())?)
        };
        if let (Some(old), true) = (from, keep > 0) {
            k.slice_set(&old.k.narrow(2, 0, keep)?.contiguous()?, 2, 0)?;
            v.slice_set(&old.v.narrow(2, 0, keep)?.contiguous()?, 2, 0)?;
        }
        Ok(Self { k, v })
    }
}

/// Room for `needed` tokens and then some: half again, at least 256 more, in steps of 256.
fn grown_capacity(needed: usize, current: usize) -> usize {
    needed.max(current + current / 2).saturating_add(256).next_multiple_of(256)
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

    /// Keeps the first `len` tokens (for reusing a shared prefix). Buffers stay; later tokens
    /// are overwritten (after a copy, if a clone shares the buffers).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        self.forget_after(len);
        self.len = len;
        Ok(())
    }

    /// Drops keys and values past `len` in every layer: what a pass that failed midway wrote
    /// before `len` was advanced.
    fn rollback(&mut self) {
        self.forget_after(self.len);
    }

    /// Marks every layer as holding at most `len` tokens (the data stays until overwritten).
    fn forget_after(&mut self, len: usize) {
        for slot in self.layers.iter_mut() {
            if len == 0 {
                *slot = None;
            } else if let Some(l) = slot {
                l.filled = l.filled.min(len);
            }
        }
    }

    /// Bytes held on the device (the buffers' capacity, shared ones counted in full).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|l| (l.buf.k.elem_count() + l.buf.v.elem_count()) * l.buf.k.dtype().size_in_bytes())
            .sum()
    }

    /// Makes room for one more token in every layer that holds some (like [`Self::append`]
    /// would: buffers a clone shares are copied, full ones grow), for a kernel to write row
    /// `filled` itself; [`Self::commit_one`] then counts the token.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn make_room_for_one(&mut self) -> Result<()> {
        if self.fits_one_in_place() {
            return Ok(());
        }
        for layer in 0..self.layers.len() {
            let Some(Some(l)) = self.layers.get(layer) else { continue };
            let (filled, like) = (l.filled, l.buf.k.narrow(2, 0, 1)?);
            self.writable(layer, &like, filled + 1)?;
        }
        Ok(())
    }

    /// Counts the token a kernel wrote at row `filled` of `layer` (after [`Self::make_room_for_one`]).
    pub(crate) fn commit_one(&mut self, layer: usize) {
        if let Some(Some(l)) = self.layers.get_mut(layer) {
            l.filled += 1;
        }
    }

    /// Whether one more token fits every layer where it is: each layer holds `len` tokens in
    /// buffers no clone shares, with room for another (what a decode kernel writing the new row
    /// itself relies on).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn fits_one_in_place(&self) -> bool {
        self.len > 0
            && self.layers.iter().all(|l| {
                l.as_ref().is_some_and(|l| {
                    l.filled == self.len && Arc::strong_count(&l.buf) == 1 && l.buf.capacity() > l.filled
                })
            })
    }

    /// The key and value buffers of `layer` (whole capacity), if it holds any.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn layer_buffers(&self, layer: usize) -> Option<(&Tensor, &Tensor)> {
        self.layers.get(layer)?.as_ref().map(|l| (&l.buf.k, &l.buf.v))
    }

    /// Counts one token that a replayed pass wrote into every layer (after
    /// [`Self::fits_one_in_place`] held).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn commit_all(&mut self) {
        self.layers.iter_mut().flatten().for_each(|l| l.filled += 1);
        self.len += 1;
    }

    /// `layer` with buffers of its own (shaped like `like`: (b, kv_heads, _, head_dim)) and room
    /// for `needed` tokens. Buffers a clone still holds are copied first, keeping their capacity;
    /// full ones grow. Never writes into a buffer another cache can see.
    fn writable(&mut self, layer: usize, like: &Tensor, needed: usize) -> Result<&mut LayerKv> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| ModelError::Input(format!("KV cache has no layer {layer}")))?;
        let filled = slot.as_ref().map_or(0, |l| l.filled);
        let fits = slot.as_ref().is_some_and(|l| l.buf.capacity() >= needed && l.buf.k.dims()[..2] == like.dims()[..2]);
        let unique = slot.as_mut().is_some_and(|l| Arc::get_mut(&mut l.buf).is_some());
        if fits && unique {
            return slot.as_mut().ok_or_else(|| ModelError::Input(format!("KV cache layer {layer} is empty")));
        }
        let old = slot.as_ref().map(|l| l.buf.as_ref());
        let current = old.map_or(0, KvBuffers::capacity);
        let cap = if fits { current } else { grown_capacity(needed, current) };
        let buf = Arc::new(KvBuffers::with_capacity(like, cap, old, filled)?);
        Ok(slot.insert(LayerKv { buf, filled }))
    }

    /// Writes `k`, `v` (b, kv_heads, s, head_dim) after the layer's tokens; returns views of all
    /// of its keys and values so far.
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let filled = self.layers.get(layer).and_then(Option::as_ref).map_or(0, |l| l.filled);
        let needed = filled + k.dim(2)?;
        let l = self.writable(layer, k, needed)?;
        if !kernels::kv_write(&l.buf.k, k, filled)? {
            l.buf.k.slice_set(&k.contiguous()?, 2, filled)?;
        }
        if !kernels::kv_write(&l.buf.v, v, filled)? {
            l.buf.v.slice_set(&v.contiguous()?, 2, filled)?;
        }
        l.filled = needed;
        Ok((l.buf.k.narrow(2, 0, needed)?, l.buf.v.narrow(2, 0, needed)?))
    }

    /// [`Self::append`] done by `write`, which gets the layer's buffers and the row to write
    /// from, writes `like`'s tokens (b, kv_heads, s, head_dim) there and returns what it computed
    /// with them; `None` from it means it wrote nothing (nothing is counted). Returns that result
    /// and views of all of the layer's keys and values.
    pub(crate) fn append_with(
        &mut self,
        layer: usize,
        like: &Tensor,
        write: impl FnOnce(kernels::KvTarget) -> Result<Option<Tensor>>,
    ) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        let filled = self.layers.get(layer).and_then(Option::as_ref).map_or(0, |l| l.filled);
        let needed = filled + like.dim(2)?;
        let l = self.writable(layer, like, needed)?;
        let Some(out) = write(kernels::KvTarget { k: &l.buf.k, v: &l.buf.v, offset: filled })? else { return Ok(None) };
        l.filled = needed;
        Ok(Some((out, l.buf.k.narrow(2, 0, needed)?, l.buf.v.narrow(2, 0, needed)?)))
    }
}

/// What every layer of one forward pass shares: the MRoPE tables of the new tokens (first half
/// of each row, (seq, head_dim / 2); the second half repeats it) and the causal mask of a
/// multi-token pass, built once, when a layer first needs it.
pub(crate) struct RopeTables {
    cos: Tensor,
    sin: Tensor,
    /// (seq, head_dim) = [cos | sin], for the fused QK-norm + rope kernel (CUDA bf16 only).
    cos_sin: Option<Tensor>,
    /// A multi-token pass: (new tokens, tokens cached before them). Its additive mask is built on
    /// first use: the fused attention kernels mask by position and never need it.
    causal: Option<(usize, usize)>,
    mask: std::cell::OnceCell<Tensor>,
    /// A decode pass whose inputs are in device memory: then `cos_sin` is the table of positions
    /// 0.. and the kernels read each sequence's position and length from here.
    step: Option<StepInputs>,
}

/// What the kernels of a decode pass read from device memory instead of host-built tables, so
/// that a captured CUDA graph of the pass serves every step of every batch of its size: per
/// sequence, the tokens its cache holds and the rope position of its new token ((b,) u32 each);
/// per layer, the KV table (addresses of every sequence's buffers); and how many blocks split
/// each sequence's keys (fixed for a graph).
pub(crate) struct StepInputs {
    lens: Tensor,
    pos: Tensor,
    /// (layers, KV_TABLE_WORDS) u32.
    kv_tables: Tensor,
    splits: usize,
}

impl RopeTables {
    fn new(cos: Tensor, sin: Tensor) -> Result<Self> {
        let cos_sin = match (cos.device(), cos.dtype()) {
            (Device::Cuda(_), DType::BF16) => Some(Tensor::cat(&[&cos, &sin], D::Minus1)?),
            _ => None,
        };
        Ok(Self { cos, sin, cos_sin, causal: None, mask: Default::default(), step: None })
    }

    /// Tables for a decode pass with device inputs: `table` from [`TextModel::position_table`],
    /// `step` (2, b) u32 = [tokens held; rope positions], `kv_tables` and `splits` as in
    /// [`StepInputs`]. Only the fused kernels read these (`cos`/`sin` are placeholders: the
    /// unfused path refuses such a pass).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn on_device(table: &Tensor, step: &Tensor, kv_tables: &Tensor, splits: usize) -> Result<Self> {
        let step = StepInputs { lens: step.get(0)?, pos: step.get(1)?, kv_tables: kv_tables.clone(), splits };
        Ok(Self { cos: table.clone(), sin: table.clone(), cos_sin: Some(table.clone()), causal: None, mask: Default::default(), step: Some(step) })
    }

    /// The causal mask of a multi-token pass (None for one token), built once.
    fn mask(&self, dtype: DType, dev: &Device) -> Result<Option<&Tensor>> {
        let Some((q, past)) = self.causal else { return Ok(None) };
        if let Some(m) = self.mask.get() {
            return Ok(Some(m));
        }
        let m = scope("text.mask", dev, || causal_mask(q, past, dtype, dev))?;
        Ok(Some(self.mask.get_or_init(|| m)))
    }
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
        RopeTables::new(
            Tensor::from_vec(cos, (n, half), dev)?.to_dtype(dtype)?,
            Tensor::from_vec(sin, (n, half), dev)?.to_dtype(dtype)?,
        )
    }
}

/// `x * cos + rotate_half(x) * sin` on (b, heads, seq, head_dim), one fused kernel, in the
/// model's dtype like the reference.
fn rotate(xs: &Tensor, t: &RopeTables) -> Result<Tensor> {
    Ok(candle_nn::rotary_emb::rope(&xs.contiguous()?, &t.cos, &t.sin)?)
}

/// The heads of one qkv projection: q, k rotated and normed, and v.
pub(crate) struct QkvHeads {
    q: Tensor,
    k: Tensor,
    v: Tensor,
}

struct Attention {
    /// q_proj, k_proj and v_proj stacked: one matmul.
    qkv: Linear,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    /// q_norm's and k_norm's weights stacked (2, head_dim), for the fused kernel.
    qk_norm_weights: Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(p: &TextParams, vb: VarBuilder) -> Result<Self> {
        let (h, hd, kv) = (p.hidden_size, p.head_dim, p.num_kv_heads);
        let b = p.attention_bias;
        let q_norm = RmsNorm::new(hd, p.rms_norm_eps, vb.pp("q_norm"))?;
        let k_norm = RmsNorm::new(hd, p.rms_norm_eps, vb.pp("k_norm"))?;
        Ok(Self {
            qkv: fused_linear(&vb, &[("q_proj", p.num_heads * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)], h, b)?,
            o_proj: linear_b(p.num_heads * hd, h, b, vb.pp("o_proj"))?,
            qk_norm_weights: Tensor::stack(&[&q_norm.weight, &k_norm.weight], 0)?,
            q_norm,
            k_norm,
            heads: p.num_heads,
            kv_heads: kv,
            head_dim: hd,
        })
    }

    /// The qkv projection of `xs` (b, s, hidden) as (b, s, heads + 2 kv_heads, head_dim).
    fn project_heads(&self, xs: &Tensor, rope: &RopeTables) -> Result<Tensor> {
        let (b, s, _) = xs.dims3()?;
        // A decode pass with device inputs has no per-pass tables: only its fused kernel
        // (batch.rs) can run it.
        if rope.step.is_some() {
            return Err(ModelError::Input("a decode pass with device inputs needs the fused CUDA kernels".into()));
        }
        let qkv = scope("text.qkv_proj", xs.device(), || project(&self.qkv, xs))?;
        Ok(qkv.reshape((b, s, self.heads + 2 * self.kv_heads, self.head_dim))?)
    }

    /// The projections of `xs` (b, s, hidden) as heads: q (b, heads, s, head_dim) and k
    /// (b, kv_heads, s, head_dim) QK-normed and rotated, v (b, kv_heads, s, head_dim) (on the
    /// fused path a strided view into the projection, copied once into the KV cache).
    fn qkv_parts(&self, xs: &Tensor, rope: &RopeTables) -> Result<QkvHeads> {
        let qkv = self.project_heads(xs, rope)?;
        self.heads_of(&qkv, rope)
    }

    /// [`Self::qkv_parts`] of the projection `qkv` (b, s, heads + 2 kv_heads, head_dim).
    fn heads_of(&self, qkv: &Tensor, rope: &RopeTables) -> Result<QkvHeads> {
        let dev = qkv.device();
        let q = qkv.narrow(2, 0, self.heads)?;
        let k = qkv.narrow(2, self.heads, self.kv_heads)?;
        let v = qkv.narrow(2, self.heads + self.kv_heads, self.kv_heads)?;
        if let Some(table) = &rope.cos_sin {
            // q and k heads in one launch (both norms use the same eps).
            let qk = qkv.narrow(2, 0, self.heads + self.kv_heads)?;
            let fused = scope("text.norm_rope", dev, || {
                kernels::norm_rope(&qk, &self.qk_norm_weights, self.heads, table, self.q_norm.eps as f32, None)
            })?;
            if let Some(qk) = fused {
                let (q, k) = (qk.narrow(1, 0, self.heads)?, qk.narrow(1, self.heads, self.kv_heads)?);
                return Ok(QkvHeads { q, k, v: v.transpose(1, 2)? });
            }
        }
        let (q, k) = scope("text.qk_norm", dev, || {
            Ok::<_, ModelError>((self.q_norm.forward(&q)?, self.k_norm.forward(&k)?))
        })?;
        let (q, k, v) = scope("text.rope", dev, || {
            Ok::<_, ModelError>((
                rotate(&q.transpose(1, 2)?.contiguous()?, rope)?,
                rotate(&k.transpose(1, 2)?.contiguous()?, rope)?,
                v.transpose(1, 2)?.contiguous()?,
            ))
        })?;
        Ok(QkvHeads { q, k, v })
    }

    /// [`Self::qkv_parts`] with the new keys and values appended to `layer` of `cache`: q, and
    /// all of the layer's keys and values so far (b, kv_heads, len, head_dim). On the fused path
    /// one kernel norms and rotates q and k and writes the keys and values into the cache.
    fn qkv_cached(&self, xs: &Tensor, rope: &RopeTables, cache: &mut KvCache, layer: usize) -> Result<QkvHeads> {
        let dev = xs.device();
        let qkv = self.project_heads(xs, rope)?;
        if let Some(table) = &rope.cos_sin {
            let v = qkv.narrow(2, self.heads + self.kv_heads, self.kv_heads)?.transpose(1, 2)?;
            let eps = self.q_norm.eps as f32;
            let fused = scope("text.norm_rope", dev, || {
                cache.append_with(layer, &v, |target| {
                    kernels::norm_rope(&qkv, &self.qk_norm_weights, self.heads, table, eps, Some(target))
                })
            })?;
            if let Some((q, k, v)) = fused {
                return Ok(QkvHeads { q, k, v });
            }
        }
        let QkvHeads { q, k, v } = self.heads_of(&qkv, rope)?;
        let (k, v) = scope("text.kv_append", dev, || cache.append(layer, &k, &v))?;
        Ok(QkvHeads { q, k, v })
    }

    fn forward(&self, xs: &Tensor, rope: &RopeTables, cache: &mut KvCache, layer: usize) -> Result<Tensor> {
        let (b, s, _) = xs.dims3()?;
        let dev = xs.device();
        let QkvHeads { q, k, v } = self.qkv_cached(xs, rope, cache, layer)?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let fused = if s > 1 {
            scope("text.flash_attn", dev, || kernels::attention(&q, &k, &v, scale as f32, true))?
        } else {
            scope("text.decode_attn", dev, || kernels::decode_attention(&q, &k, &v, scale as f32))?
        };
        if let Some(out) = fused {
            let out = out.reshape((b, s, self.heads * self.head_dim))?;
            return Ok(scope("text.o_proj", dev, || project(&self.o_proj, &out))?);
        }
        // Grouped-query attention without copying keys: the `rep` query heads that share a key
        // head become `rep * s` rows of one matmul against it (head h uses key head h / rep).
        let rep = self.heads / self.kv_heads;
        let q = q.reshape((b, self.kv_heads, rep * s, self.head_dim))?;
        let mut w = scope("text.scores", dev, || q.matmul(&k.t()?)? * scale)?;
        if let Some(mask) = rope.mask(w.dtype(), dev)? {
            w = scope("text.mask", dev, || {
                let kv = w.dim(D::Minus1)?;
                w.reshape((b, self.kv_heads, rep, s, kv))?.broadcast_add(mask)?.reshape((b, self.kv_heads, rep * s, kv))
            })?;
        }
        let p = scope("text.softmax", dev, || softmax_f32(&w))?;
        let out = scope("text.attn_v", dev, || p.matmul(&v))?;
        let out = out.reshape((b, self.heads, s, self.head_dim))?.transpose(1, 2)?.reshape((b, s, self.heads * self.head_dim))?;
        Ok(scope("text.o_proj", dev, || project(&self.o_proj, &out))?)
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

    /// The layer on `xs` whose input norm `n1` the caller computed (fused with the previous
    /// layer's last add); returns the output as `(a, b)` with output = a + b, for the caller to
    /// add together with the next norm.
    fn forward(&self, xs: &Tensor, n1: &Tensor, rope: &RopeTables, cache: &mut KvCache, layer: usize) -> Result<(Tensor, Tensor)> {
        let attn = self.attn.forward(n1, rope, cache, layer)?;
        self.mlp_residual(xs, &attn)
    }

    /// The second half of the layer: with `xs = residual + attn`, (`xs`, `down(silu(gate) * up)`
    /// of the normed `xs`), whose sum is the layer's output.
    fn mlp_residual(&self, residual: &Tensor, attn: &Tensor) -> Result<(Tensor, Tensor)> {
        let dev = residual.device();
        let (xs, h) = scope("text.add_norm", dev, || self.ln2.add_forward(residual, attn))?;
        let gu = scope("text.gate_up", dev, || project(&self.gate_up, &h))?;
        let h = scope("text.swiglu", dev, || match kernels::swiglu(&gu)? {
            Some(h) => Ok(h),
            None => {
                let n = self.intermediate;
                Ok::<_, ModelError>((gu.narrow(D::Minus1, 0, n)?.silu()? * gu.narrow(D::Minus1, n, n)?)?)
            }
        })?;
        let down = scope("text.down", dev, || project(&self.down, &h))?;
        Ok((xs, down))
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
    /// [`Self::position_table`], kept between passes.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    position_table: Mutex<Option<Tensor>>,
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
        Ok(Self { embed, layers, norm, lm_head, rope: MRope::new(p), position_table: Mutex::new(None), params: p.clone() })
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

    /// (n, head_dim) = [cos | sin] of text positions 0..n (all three MRoPE axes equal: what a
    /// decoded token gets), n >= `upto`, computed like the per-pass tables; kept and grown in
    /// steps of 4096 positions (1 MiB in bf16 at head dim 128).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
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

    /// [`MRope::tables`] of `pos`. On CUDA a long pass gathers them from [`Self::position_table`]
    /// instead of computing them on the host: frequency i of token j is the table's entry at the
    /// position of i's axis, the same value (the table is computed by the same arithmetic).
    fn rope_tables(&self, pos: &Positions, dtype: DType, dev: &Device) -> Result<RopeTables> {
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
        Ok(RopeTables { cos, sin, cos_sin: (dtype == DType::BF16).then_some(cos_sin), causal: None, mask: Default::default(), step: None })
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
        let mut rope = scope("text.rope_tables", embeds.device(), || self.rope_tables(pos, embeds.dtype(), embeds.device()))?;
        if seq > 1 {
            rope.causal = Some((seq, cache.len()));
        }
        match self.run_layers(embeds, deepstack.as_ref(), |i, layer, xs, n1| layer.forward(xs, n1, &rope, cache, i)) {
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
        let mut n1 = scope("text.norm", dev, || first.forward(&xs))?;
        for (i, layer) in self.layers.iter().enumerate() {
            let (a, b) = layer_fn(i, layer, &xs, &n1)?;
            let next = self.layers.get(i + 1).map_or(&self.norm, |l| &l.ln1);
            match deepstack.and_then(|d| d.features.get(i).map(|f| (d.rows, f))) {
                Some((rows, feat)) => {
                    let sum = (a + b)?;
                    xs = scope("text.deepstack", dev, || {
                        let (flat, feat) = (sum.squeeze(0)?, feat.to_dtype(sum.dtype())?);
                        let added = match kernels::rows_add(&flat, rows, &feat)? {
                            Some(t) => t,
                            None => flat.index_add(rows, &feat, 0)?,
                        };
                        Ok::<_, ModelError>(added.unsqueeze(0)?)
                    })?;
                    n1 = scope("text.norm", dev, || next.forward(&xs))?;
                }
                None => (xs, n1) = scope("text.add_norm", dev, || next.add_forward(&a, &b))?,
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
mod tests {
    use super::*;
    use candle_core::IndexOp;

    fn tokens(from: usize, n: usize) -> (Tensor, Tensor) {
        let k = Tensor::arange(from as f32, (from + n) as f32, &Device::Cpu).unwrap().reshape((1, 1, n, 1)).unwrap();
        let k = k.broadcast_as((1, 2, n, 4)).unwrap().contiguous().unwrap();
        (k.clone(), (k * -1.0).unwrap())
    }

    fn keys(c: &mut KvCache, layer: usize) -> Vec<f32> {
        let l = c.layers[layer].as_ref().unwrap();
        let (k, v) = (l.buf.k.narrow(2, 0, l.filled).unwrap(), l.buf.v.narrow(2, 0, l.filled).unwrap());
        let ks: Vec<f32> = k.i((0, 1, .., 0)).unwrap().to_vec1().unwrap();
        let vs: Vec<f32> = v.i((0, 0, .., 3)).unwrap().to_vec1().unwrap();
        assert_eq!(ks.iter().map(|x| -x).collect::<Vec<_>>(), vs);
        ks
    }

    #[test]
    fn kv_cache_grows_in_place_and_keeps_every_token() {
        let mut c = KvCache::new(1);
        let mut expect = Vec::new();
        for (from, n) in [(0, 5), (5, 1), (6, 300), (306, 1), (307, 500)] {
            let (k, v) = tokens(from, n);
            let (ak, _) = c.append(0, &k, &v).unwrap();
            expect.extend((from..from + n).map(|x| x as f32));
            assert_eq!(ak.dim(2).unwrap(), expect.len());
        }
        assert_eq!(keys(&mut c, 0), expect);
        let cap = c.layers[0].as_ref().unwrap().buf.capacity();
        assert!(cap >= 807 && cap % 256 == 0, "capacity {cap}");
        assert_eq!(c.bytes(), 2 * 2 * cap * 4 * 4);
    }

    #[test]
    fn kv_cache_clones_never_see_each_others_tokens() {
        let mut a = KvCache::new(1);
        let (k, v) = tokens(0, 10);
        a.append(0, &k, &v).unwrap();
        a.len = 10;
        // A prefix-cache style clone, truncated and continued with other tokens.
        let mut b = a.clone();
        b.truncate(4).unwrap();
        let (k, v) = tokens(100, 3);
        b.append(0, &k, &v).unwrap();
        assert_eq!(keys(&mut b, 0), [0., 1., 2., 3., 100., 101., 102.]);
        assert_eq!(keys(&mut a, 0), (0..10).map(|x| x as f32).collect::<Vec<_>>());
        // The original continues too, and the clone is unaffected.
        let (k, v) = tokens(50, 1);
        a.append(0, &k, &v).unwrap();
        assert_eq!(keys(&mut b, 0), [0., 1., 2., 3., 100., 101., 102.]);
        // Truncating to nothing drops the buffers; bytes follow.
        let before = a.bytes();
        a.truncate(0).unwrap();
        assert!(before > 0);
        assert_eq!(a.bytes(), 0);
    }

    #[test]
    fn in_place_decode_needs_own_buffers_with_room_in_every_layer() {
        let mut c = KvCache::new(2);
        assert!(!c.fits_one_in_place(), "an empty cache has no buffers to write into");
        let (k, v) = tokens(0, 255);
        c.append(0, &k, &v).unwrap();
        assert!(!c.fits_one_in_place(), "layer 1 is empty");
        c.append(1, &k, &v).unwrap();
        c.len = 255;
        assert!(c.fits_one_in_place());
        let ids = |c: &KvCache| (0..2).map(|l| c.layer_buffers(l).map(|(k, v)| (k.id(), v.id()))).collect::<Vec<_>>();
        let before = ids(&c);
        // A clone shares the buffers: writing would need a copy first.
        let shared = c.clone();
        assert!(!c.fits_one_in_place());
        drop(shared);
        assert!(c.fits_one_in_place());
        // A replayed pass wrote the next row everywhere: counting it advances every layer.
        c.commit_all();
        assert_eq!(c.len(), 256);
        assert!(c.layers.iter().flatten().all(|l| l.filled == 256));
        assert!(c.fits_one_in_place());
        // ... until the buffers are full.
        let cap = c.layers[0].as_ref().unwrap().buf.capacity();
        c.layers.iter_mut().flatten().for_each(|l| l.filled = cap - 1);
        c.len = cap - 1;
        assert!(c.fits_one_in_place());
        c.commit_all();
        assert!(!c.fits_one_in_place(), "no room left for another token");
        // The buffers did not move (what a recorded graph relies on).
        assert_eq!(before, ids(&c));
        // A layer that lags behind the cache's length (a failed pass) is not in place either.
        c.truncate(100).unwrap();
        assert!(c.fits_one_in_place());
        c.layers[1].as_mut().unwrap().filled = 99;
        assert!(!c.fits_one_in_place());
    }

    #[test]
    fn position_table_rows_are_the_decode_tables_of_those_positions() {
        let p = crate::config::named_shape("2b").unwrap().text_params().unwrap();
        let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
        // Only the rope matters here: a model of one layer, small everything else.
        let mut small = p.clone();
        (small.num_layers, small.vocab_size, small.hidden_size, small.intermediate_size) = (1, 8, 64, 8);
        let m = TextModel::new(&small, true, vb.pp("model.language_model"), vb.clone()).unwrap();
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

    #[test]
    fn reserving_a_row_copies_shared_buffers_and_commit_counts_it() {
        let mut a = KvCache::new(1);
        let (k, v) = tokens(0, 3);
        a.append(0, &k, &v).unwrap();
        a.len = 3;
        let b = a.clone();
        assert!(!a.fits_one_in_place());
        a.make_room_for_one().unwrap();
        assert!(a.fits_one_in_place());
        // `a` now has its own buffers: writing row 3 there leaves `b` alone.
        let (ka, va) = a.layer_buffers(0).unwrap();
        ka.slice_set(&Tensor::full(9f32, (1, 2, 1, 4), &Device::Cpu).unwrap(), 2, 3).unwrap();
        va.slice_set(&Tensor::full(-9f32, (1, 2, 1, 4), &Device::Cpu).unwrap(), 2, 3).unwrap();
        a.commit_one(0);
        assert_eq!(keys(&mut a, 0), [0., 1., 2., 9.]);
        assert_eq!(keys(&mut b.clone(), 0), [0., 1., 2.]);
        let row3 = b.layers[0].as_ref().unwrap().buf.k.narrow(2, 3, 1).unwrap();
        assert_eq!(row3.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [0f32; 8], "the clone's buffer was written");
        // A full buffer grows, keeping its tokens; an empty layer stays empty.
        let mut full = KvCache::new(2);
        let (k, v) = tokens(0, 256);
        full.append(0, &k, &v).unwrap();
        let cap = full.layers[0].as_ref().unwrap().buf.capacity();
        let (k, v) = tokens(256, cap - 256);
        full.append(0, &k, &v).unwrap();
        full.make_room_for_one().unwrap();
        assert!(full.layer_buffers(0).unwrap().0.dim(2).unwrap() > cap);
        assert_eq!(keys(&mut full, 0), (0..cap).map(|x| x as f32).collect::<Vec<_>>());
        assert!(full.layer_buffers(1).is_none());
    }

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
