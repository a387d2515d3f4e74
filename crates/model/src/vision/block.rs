//! One vision block: LayerNorm, attention with the 2-D rope within each image, LayerNorm, GELU
//! MLP. The residual adds are fused into the norms after them, so a block returns its output as
//! two parts for the next block's first norm to add.

use candle_core::Tensor;
use candle_nn::{linear, Linear, VarBuilder};

use crate::config::VisionConfig;
use crate::error::Result;
use crate::ops::{Act, LayerNorm, Ops};
use crate::profile::scope;

/// Per-patch rotary tables and the block-diagonal layout of one forward call.
pub(super) struct VisionCtx<'a> {
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    /// Patch ranges that attend only within themselves (one per frame of each image).
    pub chunks: &'a [(usize, usize)],
}

struct VisionAttention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
    head_dim: usize,
    ops: Ops,
}

/// The attention scale when multiplying it into q is exact (a power of two, as for head dim 64).
fn exact_q_scale(scale: f64) -> Option<f64> {
    let l = scale.log2();
    (l.fract() == 0.0).then_some(scale)
}

impl VisionAttention {
    fn new(cfg: &VisionConfig, vb: VarBuilder, ops: &Ops) -> Result<Self> {
        let dim = cfg.hidden_size;
        Ok(Self {
            qkv: linear(dim, dim * 3, vb.pp("qkv"))?,
            proj: linear(dim, dim, vb.pp("proj"))?,
            num_heads: cfg.num_heads,
            head_dim: cfg.head_dim(),
            ops: ops.clone(),
        })
    }

    fn forward(&self, xs: &Tensor, ctx: &VisionCtx) -> Result<Tensor> {
        let seq = xs.dim(0)?;
        let dev = xs.device();
        let qkv = scope("vision.qkv", dev, || self.ops.linear(&self.qkv, xs, Act::None))?;
        let scale = (self.head_dim as f64).powf(-0.5);
        // With an exact scale, q is scaled by the rope and the scores are not.
        let q_scale = exact_q_scale(scale);
        let (q, k) = scope("vision.rope", dev, || self.ops.vision_rope(&qkv, self.num_heads, ctx.cos, ctx.sin, q_scale))?;
        // (heads, seq, head_dim), read in place from the projection.
        let v = qkv.reshape((seq, 3, self.num_heads, self.head_dim))?.narrow(1, 2, 1)?.squeeze(1)?.transpose(0, 1)?;
        let out = self.ops.windowed_attention(&q, &k, &v, ctx.chunks, q_scale.map_or(scale, |_| 1.0))?;
        scope("vision.proj", dev, || self.ops.linear(&self.proj, &out, Act::None))
    }
}

pub(super) struct VisionBlock {
    norm1: LayerNorm,
    norm2: LayerNorm,
    attn: VisionAttention,
    fc1: Linear,
    fc2: Linear,
    tanh_gelu: bool,
    ops: Ops,
}

impl VisionBlock {
    pub(super) fn new(cfg: &VisionConfig, vb: VarBuilder, ops: &Ops) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::new(cfg.hidden_size, vb.pp("norm1"))?,
            norm2: LayerNorm::new(cfg.hidden_size, vb.pp("norm2"))?,
            attn: VisionAttention::new(cfg, vb.pp("attn"), ops)?,
            fc1: linear(cfg.hidden_size, cfg.intermediate_size, vb.pp("mlp").pp("linear_fc1"))?,
            fc2: linear(cfg.intermediate_size, cfg.hidden_size, vb.pp("mlp").pp("linear_fc2"))?,
            tanh_gelu: cfg.hidden_act == "gelu_pytorch_tanh",
            ops: ops.clone(),
        })
    }

    /// The block on the residual stream `xs + pending` (`pending`: the previous block's MLP
    /// output, not yet added, so that the add runs inside this block's first norm). Returns the
    /// stream before this block's MLP output and that output: the block's result is their sum.
    pub(super) fn forward(&self, xs: &Tensor, pending: Option<&Tensor>, ctx: &VisionCtx) -> Result<(Tensor, Tensor)> {
        let dev = xs.device();
        let (xs, n1) = scope("vision.norm", dev, || self.ops.add_layer_norm(xs, pending, &self.norm1))?;
        let attn = self.attn.forward(&n1, ctx)?;
        let (xs, n2) = scope("vision.norm", dev, || self.ops.add_layer_norm(&xs, Some(&attn), &self.norm2))?;
        let act = if self.tanh_gelu { Act::GeluTanh } else { Act::GeluErf };
        let h = scope("vision.fc1_gelu", dev, || self.ops.linear(&self.fc1, &n2, act))?;
        let out = scope("vision.fc2", dev, || self.ops.linear(&self.fc2, &h, Act::None))?;
        Ok((xs, out))
    }
}
