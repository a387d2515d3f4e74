//! The vision tower: patch embedding, interpolated learned position embeddings, 2-D rotary
//! attention blocks, the final 2x2 merger and the DeepStack mergers. It returns the merged
//! embeddings and the DeepStack features as separate values so the engine can cache them.

use std::sync::Mutex;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{layer_norm, linear, LayerNorm, LayerNormConfig, Linear, VarBuilder};

use crate::config::VisionConfig;
use crate::error::{ModelError, Result};
use crate::kernels::{self, Act};
use crate::preprocess::GridThw;
use crate::profile::scope;

pub mod input;

/// What the vision tower produces for a batch of images: one row per merged visual token,
/// images in order.
#[derive(Debug, Clone)]
pub struct VisionOutput {
    /// (tokens, out_hidden) merged embeddings that replace the `<|image_pad|>` embeddings.
    pub embeds: Tensor,
    /// One (tokens, out_hidden) tensor per DeepStack tap, added after text layers 0, 1, ...
    pub deepstack: Vec<Tensor>,
}

impl VisionOutput {
    /// Number of visual tokens.
    pub fn tokens(&self) -> usize {
        self.embeds.dim(0).unwrap_or(0)
    }

    /// Rows `start..start+len` of every tensor (one image out of a batch).
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            embeds: self.embeds.narrow(0, start, len)?,
            deepstack: self.deepstack.iter().map(|t| t.narrow(0, start, len)).collect::<candle_core::Result<_>>()?,
        })
    }

    /// Concatenates outputs of several images in order.
    pub fn cat(parts: &[&VisionOutput]) -> Result<Self> {
        let first = parts.first().ok_or_else(|| ModelError::Input("no vision outputs to join".into()))?;
        let embeds = Tensor::cat(&parts.iter().map(|p| &p.embeds).collect::<Vec<_>>(), 0)?;
        let mut deepstack = Vec::with_capacity(first.deepstack.len());
        for k in 0..first.deepstack.len() {
            deepstack.push(Tensor::cat(&parts.iter().map(|p| &p.deepstack[k]).collect::<Vec<_>>(), 0)?);
        }
        Ok(Self { embeds, deepstack })
    }
}

/// LayerNorm (eps 1e-6); on CUDA bf16 one kernel, which also takes the residual add before it.
struct Norm {
    ln: LayerNorm,
    /// (2, dim) = [weight; bias] for the kernel.
    wb: Tensor,
}

impl Norm {
    const EPS: f64 = 1e-6;

    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let ln = layer_norm(dim, LayerNormConfig { eps: Self::EPS, ..Default::default() }, vb)?;
        let bias = ln.bias().ok_or_else(|| ModelError::Input("vision LayerNorm without a bias".into()))?;
        let wb = Tensor::stack(&[ln.weight(), bias], 0)?;
        Ok(Self { ln, wb })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = kernels::layer_norm(x, None, &self.wb, Self::EPS as f32)? {
            return Ok(y);
        }
        Ok(self.ln.forward(x)?)
    }

    /// `(x + y, norm(x + y))`, or `(x, norm(x))` without `y`.
    fn add_forward(&self, x: &Tensor, y: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let Some(y) = y else { return Ok((x.clone(), self.forward(x)?)) };
        if let Some(both) = kernels::layer_norm(x, Some(y), &self.wb, Self::EPS as f32)? {
            return Ok((both.get(0)?, both.get(1)?));
        }
        let sum = (x + y)?;
        let normed = self.ln.forward(&sum)?;
        Ok((sum, normed))
    }
}

/// `act(lin(x))` for a 2-D `x`: on CUDA bf16 one cuBLASLt matmul with the bias (and the tanh
/// GELU) in its epilogue, or the matmul then one kernel for bias and activation (candle's
/// broadcast add is slow on wide rows); else candle's ops (`Linear::forward`, the activation).
fn linear_act(lin: &Linear, x: &Tensor, act: Act) -> Result<Tensor> {
    if let Some(out) = kernels::linear(x, lin.weight(), lin.bias(), act)? {
        return Ok(out);
    }
    // An activation the epilogue does not take (the erf GELU; the tanh GELU with
    // SCREENPILOT_LT=bias): the matmul with its bias, then the activation on the rounded result
    // (the reference's order).
    if act != Act::None {
        if let Some(out) = kernels::linear(x, lin.weight(), lin.bias(), Act::None)? {
            return Ok(apply_act(out, act)?);
        }
    }
    let Some(bias) = lin.bias() else { return Ok(apply_act(lin.forward(x)?, act)?) };
    bias_act(&x.matmul(&lin.weight().t()?)?, bias, act)
}

/// `act(mm + bias)` after a matmul: one kernel on CUDA bf16, else candle's broadcast add and
/// activation.
fn bias_act(mm: &Tensor, bias: &Tensor, act: Act) -> Result<Tensor> {
    if let Some(out) = kernels::bias_act(mm, bias, act)? {
        return Ok(out);
    }
    Ok(apply_act(mm.broadcast_add(bias)?, act)?)
}

fn apply_act(x: Tensor, act: Act) -> candle_core::Result<Tensor> {
    match act {
        Act::None => Ok(x),
        Act::GeluTanh => x.gelu(),
        Act::GeluErf => x.gelu_erf(),
    }
}

struct PatchMerger {
    norm: Norm,
    fc1: Linear,
    fc2: Linear,
    merged_dim: usize,
    postshuffle: bool,
}

impl PatchMerger {
    fn new(cfg: &VisionConfig, postshuffle: bool, vb: VarBuilder) -> Result<Self> {
        let merged_dim = cfg.hidden_size * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let norm_dim = if postshuffle { merged_dim } else { cfg.hidden_size };
        Ok(Self {
            norm: Norm::new(norm_dim, vb.pp("norm"))?,
            fc1: linear(merged_dim, merged_dim, vb.pp("linear_fc1"))?,
            fc2: linear(merged_dim, cfg.out_hidden_size, vb.pp("linear_fc2"))?,
            merged_dim,
            postshuffle,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = if self.postshuffle {
            self.norm.forward(&xs.reshape(((), self.merged_dim))?)?
        } else {
            self.norm.forward(xs)?.reshape(((), self.merged_dim))?
        };
        // nn.GELU() in the reference: the exact erf form, not the tanh approximation.
        linear_act(&self.fc2, &linear_act(&self.fc1, &xs, Act::GeluErf)?, Act::None)
    }
}

struct VisionAttention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

/// Per-patch rotary tables and the block-diagonal layout of one forward call.
struct VisionCtx<'a> {
    cos: &'a Tensor,
    sin: &'a Tensor,
    /// Patch ranges that attend only within themselves (one per frame of each image).
    chunks: &'a [(usize, usize)],
}

/// `x * cos + rotate_half(x) * sin` on (heads, seq, head_dim) with half tables (seq, head_dim/2),
/// computed in f32 like the reference (one fused kernel), then multiplied by `scale` (exact: a
/// power of two) and cast back.
pub(crate) fn apply_rope(xs: &Tensor, cos: &Tensor, sin: &Tensor, scale: Option<f64>) -> candle_core::Result<Tensor> {
    let dtype = xs.dtype();
    let x = xs.to_dtype(DType::F32)?.contiguous()?.unsqueeze(0)?;
    let mut out = candle_nn::rotary_emb::rope(&x, cos, sin)?.squeeze(0)?;
    if let Some(s) = scale {
        out = (out * s)?;
    }
    out.to_dtype(dtype)
}

/// The attention scale when multiplying it into q is exact (a power of two, as for head dim 64).
fn exact_q_scale(scale: f64) -> Option<f64> {
    let l = scale.log2();
    (l.fract() == 0.0).then_some(scale)
}

impl VisionAttention {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.hidden_size;
        Ok(Self {
            qkv: linear(dim, dim * 3, vb.pp("qkv"))?,
            proj: linear(dim, dim, vb.pp("proj"))?,
            num_heads: cfg.num_heads,
            head_dim: cfg.head_dim(),
        })
    }

    fn forward(&self, xs: &Tensor, ctx: &VisionCtx) -> Result<Tensor> {
        let seq = xs.dim(0)?;
        let dev = xs.device();
        let qkv2 = scope("vision.qkv", dev, || linear_act(&self.qkv, xs, Act::None))?;
        let qkv = qkv2.reshape((seq, 3, self.num_heads, self.head_dim))?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let q_scale = exact_q_scale(scale);
        // (heads, seq, head_dim) views; rope makes q and k contiguous.
        let part = |i| qkv.narrow(1, i, 1)?.squeeze(1)?.transpose(0, 1);
        let (q, k) = scope("vision.rope", dev, || {
            let fused = kernels::vision_rope(&qkv2, ctx.cos, ctx.sin, self.num_heads, q_scale.unwrap_or(1.0) as f32)?;
            if let Some(qk) = fused {
                return Ok::<_, ModelError>((qk.get(0)?, qk.get(1)?));
            }
            Ok((apply_rope(&part(0)?, ctx.cos, ctx.sin, q_scale)?, apply_rope(&part(1)?, ctx.cos, ctx.sin, None)?))
        })?;
        if let Some(out) = self.fused_attention(&q, &k, &part(2)?, ctx, q_scale.map_or(scale, |_| 1.0))? {
            return scope("vision.proj", dev, || linear_act(&self.proj, &out, Act::None));
        }
        let v = scope("vision.transpose", dev, || part(2)?.contiguous())?;
        let mut outs = Vec::with_capacity(ctx.chunks.len());
        for &(start, len) in ctx.chunks {
            let q = q.narrow(1, start, len)?;
            let k = k.narrow(1, start, len)?;
            let v = v.narrow(1, start, len)?;
            let w = scope("vision.scores", dev, || match q_scale {
                Some(_) => q.matmul(&k.t()?),
                None => q.matmul(&k.t()?)? * scale,
            })?;
            let w = scope("vision.softmax", dev, || softmax_f32(&w))?;
            outs.push(scope("vision.attn_v", dev, || w.matmul(&v))?);
        }
        let out = scope("vision.attn_out", dev, || Tensor::cat(&outs, 1)?.transpose(0, 1)?.reshape((seq, ())))?;
        scope("vision.proj", dev, || linear_act(&self.proj, &out, Act::None))
    }
}

impl VisionAttention {
    /// The fused kernel (CUDA, bf16) over each image's patches; `v` (heads, seq, head_dim) is
    /// read in place from the qkv projection. `None` where the kernel does not apply.
    fn fused_attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, ctx: &VisionCtx, scale: f64) -> Result<Option<Tensor>> {
        let dev = q.device();
        let mut outs = Vec::with_capacity(ctx.chunks.len());
        for &(start, len) in ctx.chunks {
            let part = |t: &Tensor| t.narrow(1, start, len)?.unsqueeze(0);
            let out = scope("vision.flash_attn", dev, || {
                kernels::attention(&part(q)?, &part(k)?, &part(v)?, scale as f32, false)
            })?;
            let Some(out) = out else { return Ok(None) };
            outs.push(out.reshape((len, ()))?);
        }
        Ok(Some(match outs.len() {
            1 => outs.remove(0),
            _ => Tensor::cat(&outs, 0)?,
        }))
    }
}

/// Softmax over the last axis in f32 (the reference upcasts), cast back to the input dtype.
pub(crate) fn softmax_f32(xs: &Tensor) -> candle_core::Result<Tensor> {
    let dtype = xs.dtype();
    candle_nn::ops::softmax_last_dim(&xs.to_dtype(DType::F32)?)?.to_dtype(dtype)
}

struct VisionBlock {
    norm1: Norm,
    norm2: Norm,
    attn: VisionAttention,
    fc1: Linear,
    fc2: Linear,
    tanh_gelu: bool,
}

impl VisionBlock {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: Norm::new(cfg.hidden_size, vb.pp("norm1"))?,
            norm2: Norm::new(cfg.hidden_size, vb.pp("norm2"))?,
            attn: VisionAttention::new(cfg, vb.pp("attn"))?,
            fc1: linear(cfg.hidden_size, cfg.intermediate_size, vb.pp("mlp").pp("linear_fc1"))?,
            fc2: linear(cfg.intermediate_size, cfg.hidden_size, vb.pp("mlp").pp("linear_fc2"))?,
            tanh_gelu: cfg.hidden_act == "gelu_pytorch_tanh",
        })
    }

    /// The block on the residual stream `xs + pending` (`pending`: the previous block's MLP
    /// output, not yet added, so that the add runs inside this block's first norm). Returns the
    /// stream before this block's MLP output and that output: the block's result is their sum.
    fn forward(&self, xs: &Tensor, pending: Option<&Tensor>, ctx: &VisionCtx) -> Result<(Tensor, Tensor)> {
        let dev = xs.device();
        let (xs, n1) = scope("vision.norm", dev, || self.norm1.add_forward(xs, pending))?;
        let attn = self.attn.forward(&n1, ctx)?;
        let (xs, n2) = scope("vision.norm", dev, || self.norm2.add_forward(&xs, Some(&attn)))?;
        let act = if self.tanh_gelu { Act::GeluTanh } else { Act::GeluErf };
        let h = scope("vision.fc1_gelu", dev, || linear_act(&self.fc1, &n2, act))?;
        let out = scope("vision.fc2", dev, || linear_act(&self.fc2, &h, Act::None))?;
        Ok((xs, out))
    }
}

/// What the tower adds per patch for a set of image grids.
#[derive(Clone)]
struct GridTables {
    cos: Tensor,
    sin: Tensor,
    /// (patches, hidden) interpolated learned position embeddings.
    pos: Tensor,
}

/// Qwen3-VL's vision encoder.
pub struct VisionModel {
    patch_embed_w: Tensor,
    patch_embed_b: Tensor,
    pos_embed: Tensor,
    blocks: Vec<VisionBlock>,
    merger: PatchMerger,
    deepstack_mergers: Vec<PatchMerger>,
    cfg: VisionConfig,
    rope_theta: f64,
    /// The tables of the last grids seen (screens repeat their size): rotary cos, sin and the
    /// interpolated position embeddings, all functions of the grids and the weights only.
    grid_memo: Mutex<Option<(Vec<GridThw>, GridTables)>>,
}

impl VisionModel {
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let pe = vb.pp("patch_embed").pp("proj");
        let (c, t, p) = (cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size);
        let w = pe.get((cfg.hidden_size, c, t, p, p), "weight")?;
        let patch_embed_w = w.reshape((cfg.hidden_size, cfg.patch_dim()))?.t()?.contiguous()?;
        let patch_embed_b = pe.get(cfg.hidden_size, "bias")?;
        let pos_embed = vb.pp("pos_embed").get((cfg.num_position_embeddings, cfg.hidden_size), "weight")?;
        let blocks = (0..cfg.depth)
            .map(|i| VisionBlock::new(cfg, vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let merger = PatchMerger::new(cfg, false, vb.pp("merger"))?;
        let deepstack_mergers = (0..cfg.deepstack_visual_indexes.len())
            .map(|i| PatchMerger::new(cfg, true, vb.pp("deepstack_merger_list").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embed_w,
            patch_embed_b,
            pos_embed,
            blocks,
            merger,
            deepstack_mergers,
            cfg: cfg.clone(),
            rope_theta: cfg.rope_theta(),
            grid_memo: Mutex::new(None),
        })
    }

    pub fn dtype(&self) -> DType {
        self.pos_embed.dtype()
    }

    pub fn device(&self) -> &Device {
        self.pos_embed.device()
    }

    /// Runs the tower on the patches of `grids.len()` images, concatenated in order
    /// (pixels: (sum of patches, patch_dim), any float dtype).
    pub fn forward(&self, pixels: &Tensor, grids: &[GridThw]) -> Result<VisionOutput> {
        let total: usize = grids.iter().map(|g| g.num_patches()).sum();
        let (rows, dim) = pixels.dims2()?;
        if rows != total || dim != self.cfg.patch_dim() {
            return Err(ModelError::Input(format!(
                "pixel values are {rows}x{dim}, the grids need {total}x{}",
                self.cfg.patch_dim()
            )));
        }
        let m = self.cfg.spatial_merge_size;
        if grids.iter().any(|g| g.h % m != 0 || g.w % m != 0) {
            return Err(ModelError::Input(format!("image grids must be multiples of {m} patches")));
        }
        let dev = self.device();
        let dtype = self.dtype();
        let xs = scope("vision.patch_embed", dev, || {
            bias_act(&pixels.to_dtype(dtype)?.matmul(&self.patch_embed_w)?, &self.patch_embed_b, Act::None)
        })?;
        let tables = scope("vision.grid_tables", dev, || self.grid_tables(grids, dev))?;
        let xs = (xs + &tables.pos)?;
        let (cos, sin) = (tables.cos, tables.sin);
        let mut chunks = Vec::new();
        let mut start = 0;
        for g in grids {
            for _ in 0..g.t {
                chunks.push((start, g.h * g.w));
                start += g.h * g.w;
            }
        }
        let ctx = VisionCtx { cos: &cos, sin: &sin, chunks: &chunks };
        let mut xs = xs;
        let mut pending: Option<Tensor> = None;
        let mut deepstack = Vec::with_capacity(self.deepstack_mergers.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let (stream, out) = block.forward(&xs, pending.as_ref(), &ctx)?;
            (xs, pending) = (stream, Some(out));
            if let Some(k) = self.cfg.deepstack_visual_indexes.iter().position(|&d| d == i) {
                if let Some(out) = pending.take() {
                    xs = (xs + out)?;
                }
                deepstack.push(scope("vision.mergers", dev, || self.deepstack_mergers[k].forward(&xs))?);
            }
        }
        if let Some(out) = pending.take() {
            xs = (xs + out)?;
        }
        let embeds = scope("vision.mergers", dev, || self.merger.forward(&xs))?;
        Ok(VisionOutput { embeds, deepstack })
    }

    /// Bilinear (align_corners) resampling of the learned position grid to each image's grid,
    /// patches in 2x2 merge-window order; the same f32 arithmetic as the reference.
    fn position_embeddings(&self, grids: &[GridThw]) -> Result<Tensor> {
        let side = self.cfg.grid_per_side();
        let m = self.cfg.spatial_merge_size;
        let mut idx: Vec<u32> = Vec::new();
        let mut wts: Vec<f32> = Vec::new();
        for g in grids {
            let taps_h: Vec<_> = (0..g.h).map(|i| axis_taps(i, g.h, side)).collect();
            let taps_w: Vec<_> = (0..g.w).map(|i| axis_taps(i, g.w, side)).collect();
            for _ in 0..g.t {
                for (row, col) in merge_order(g.h, g.w, m) {
                    let (hi, hw) = taps_h[row];
                    let (wi, ww) = taps_w[col];
                    for a in 0..2 {
                        for b in 0..2 {
                            idx.push((hi[a] * side + wi[b]) as u32);
                            wts.push(hw[a] * ww[b]);
                        }
                    }
                }
            }
        }
        let n = idx.len() / 4;
        let dev = self.device();
        let idx = Tensor::from_vec(idx, n * 4, dev)?;
        let wts = Tensor::from_vec(wts, (n, 4, 1), dev)?.to_dtype(self.dtype())?;
        let gathered = self.pos_embed.index_select(&idx, 0)?.reshape((n, 4, ()))?;
        Ok(gathered.broadcast_mul(&wts)?.sum(1)?)
    }

    /// [`Self::rotary`] and [`Self::position_embeddings`], reusing the previous call's tables
    /// for the same grids.
    fn grid_tables(&self, grids: &[GridThw], dev: &Device) -> Result<GridTables> {
        let mut memo = self.grid_memo.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, tables)) = memo.as_ref() {
            if g.as_slice() == grids {
                return Ok(tables.clone());
            }
        }
        let (cos, sin) = self.rotary(grids, dev)?;
        let tables = GridTables { cos, sin, pos: self.position_embeddings(grids)? };
        *memo = Some((grids.to_vec(), tables.clone()));
        Ok(tables)
    }

    /// cos/sin of the 2-D rotary embedding, first half of each row (the second repeats it):
    /// (patches, head_dim / 2), f32.
    fn rotary(&self, grids: &[GridThw], dev: &Device) -> Result<(Tensor, Tensor)> {
        let head_dim = self.cfg.head_dim();
        let spatial = head_dim / 2;
        let inv: Vec<f32> = (0..spatial)
            .step_by(2)
            .map(|i| (1.0 / self.rope_theta.powf(i as f64 / spatial as f64)) as f32)
            .collect();
        let nf = inv.len();
        let mut cos = Vec::new();
        let mut sin = Vec::new();
        for g in grids {
            for _ in 0..g.t {
                for (row, col) in merge_order(g.h, g.w, self.cfg.spatial_merge_size) {
                    let mut c = Vec::with_capacity(2 * nf);
                    let mut s = Vec::with_capacity(2 * nf);
                    for pos in [row, col] {
                        for f in &inv {
                            let a = pos as f32 * f;
                            c.push(a.cos());
                            s.push(a.sin());
                        }
                    }
                    cos.extend_from_slice(&c);
                    sin.extend_from_slice(&s);
                }
            }
        }
        let half = head_dim / 2;
        let n = cos.len() / half;
        Ok((Tensor::from_vec(cos, (n, half), dev)?, Tensor::from_vec(sin, (n, half), dev)?))
    }
}

/// (row, col) of every patch of an h x w grid in 2x2 merge-window order.
pub fn merge_order(h: usize, w: usize, m: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..h / m).flat_map(move |br| {
        (0..w / m).flat_map(move |bc| (0..m).flat_map(move |ir| (0..m).map(move |ic| (br * m + ir, bc * m + ic))))
    })
}

/// The two taps and weights of align_corners bilinear interpolation at index `i` of `size`
/// into a table of `side` entries, in the reference's f32 arithmetic.
fn axis_taps(i: usize, size: usize, side: usize) -> ([usize; 2], [f32; 2]) {
    let src = (i as f32 * (side - 1) as f32) / (size.saturating_sub(1).max(1)) as f32;
    let floor = src.floor();
    let f = floor as usize;
    let taps = [f.min(side - 1), (f + 1).min(side - 1)];
    let d0 = (src - floor - 0.0).abs();
    let d1 = (src - floor - 1.0).abs();
    (taps, [(1.0 - d0).max(0.0), (1.0 - d1).max(0.0)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_order_walks_2x2_windows_row_major() {
        let v: Vec<_> = merge_order(4, 4, 2).take(6).collect();
        assert_eq!(v, vec![(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3)]);
        assert_eq!(merge_order(6, 8, 2).count(), 48);
    }

    #[test]
    fn interpolation_hits_the_corners_exactly() {
        let (t, w) = axis_taps(0, 10, 48);
        assert_eq!((t, w), ([0, 1], [1.0, 0.0]));
        let (t, w) = axis_taps(9, 10, 48);
        assert_eq!(t, [47, 47]);
        assert!((w[0] + w[1] - 1.0).abs() < 1e-6);
        // A one-patch axis must not divide by zero.
        assert_eq!(axis_taps(0, 1, 48).0, [0, 1]);
    }
}
