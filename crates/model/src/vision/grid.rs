//! What the vision tower computes from the image grids alone (rotary tables and interpolated
//! position embeddings, in merge-window order), remembered for the last grids seen.

use candle_core::{Device, Tensor};

use super::VisionModel;
use crate::error::Result;
use crate::patch_layout::merge_order;
use crate::preprocess::GridThw;

/// What the tower adds per patch for a set of image grids.
#[derive(Clone)]
pub(super) struct GridTables {
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
    /// (patches, hidden) interpolated learned position embeddings.
    pub(super) pos: Tensor,
}

impl VisionModel {
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
    pub(super) fn grid_tables(&self, grids: &[GridThw], dev: &Device) -> Result<GridTables> {
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
