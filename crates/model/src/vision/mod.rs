//! The vision tower: patch embedding, interpolated learned position embeddings, 2-D rotary
//! attention blocks, the final 2x2 merger and the DeepStack mergers. It returns the merged
//! embeddings and the DeepStack features as separate values so the engine can cache them.
//!
//! - [`input`]: the model input rows of a preprocessed image, on the device.
//! - [`grid`]: rotary tables and position embeddings of the image grids.
//! - [`block`]: one transformer block; [`merger`]: the patch mergers.

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::VisionConfig;
use crate::error::{ModelError, Result};
use crate::ops::{Act, Ops};
use crate::preprocess::GridThw;
use crate::profile::scope;

mod block;
mod grid;
pub mod input;
mod merger;

use block::{VisionBlock, VisionCtx};
pub use crate::patch_layout::merge_order;
use grid::GridTables;
use merger::PatchMerger;

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
    ops: Ops,
}

impl VisionModel {
    pub(crate) fn new(cfg: &VisionConfig, vb: VarBuilder, ops: &Ops) -> Result<Self> {
        let pe = vb.pp("patch_embed").pp("proj");
        let (c, t, p) = (cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size);
        let w = pe.get((cfg.hidden_size, c, t, p, p), "weight")?;
        let patch_embed_w = w.reshape((cfg.hidden_size, cfg.patch_dim()))?.t()?.contiguous()?;
        let patch_embed_b = pe.get(cfg.hidden_size, "bias")?;
        let pos_embed = vb.pp("pos_embed").get((cfg.num_position_embeddings, cfg.hidden_size), "weight")?;
        let blocks = (0..cfg.depth)
            .map(|i| VisionBlock::new(cfg, vb.pp("blocks").pp(i), ops))
            .collect::<Result<Vec<_>>>()?;
        let merger = PatchMerger::new(cfg, false, vb.pp("merger"), ops)?;
        let deepstack_mergers = (0..cfg.deepstack_visual_indexes.len())
            .map(|i| PatchMerger::new(cfg, true, vb.pp("deepstack_merger_list").pp(i), ops))
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
            ops: ops.clone(),
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
            self.ops.bias_act(&pixels.to_dtype(dtype)?.matmul(&self.patch_embed_w)?, &self.patch_embed_b, Act::None)
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
}
