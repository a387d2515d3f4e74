//! The patch merger: each merge window of patches (2x2) becomes one visual token in the text
//! model's width. The final merger norms per patch before merging; the DeepStack mergers
//! ("postshuffle") merge first and norm the merged row.

use candle_core::Tensor;
use candle_nn::{linear, Linear, VarBuilder};

use crate::config::VisionConfig;
use crate::error::Result;
use crate::ops::{Act, LayerNorm, Ops};

pub(super) struct PatchMerger {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    merged_dim: usize,
    postshuffle: bool,
    ops: Ops,
}

impl PatchMerger {
    pub(super) fn new(cfg: &VisionConfig, postshuffle: bool, vb: VarBuilder, ops: &Ops) -> Result<Self> {
        let merged_dim = cfg.hidden_size * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let norm_dim = if postshuffle { merged_dim } else { cfg.hidden_size };
        Ok(Self {
            norm: LayerNorm::new(norm_dim, vb.pp("norm"))?,
            fc1: linear(merged_dim, merged_dim, vb.pp("linear_fc1"))?,
            fc2: linear(merged_dim, cfg.out_hidden_size, vb.pp("linear_fc2"))?,
            merged_dim,
            postshuffle,
            ops: ops.clone(),
        })
    }

    pub(super) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = if self.postshuffle {
            self.ops.layer_norm(&xs.reshape(((), self.merged_dim))?, &self.norm)?
        } else {
            self.ops.layer_norm(xs, &self.norm)?.reshape(((), self.merged_dim))?
        };
        // nn.GELU() in the reference: the exact erf form, not the tanh approximation.
        let h = self.ops.linear(&self.fc1, &xs, Act::GeluErf)?;
        self.ops.linear(&self.fc2, &h, Act::None)
    }
}
