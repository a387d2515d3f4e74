//! Elementwise and memory ops: SwiGLU, DeepStack's row adds, KV cache writes, the batched decode
//! step's fused attention and the vision tower's input rows.

use candle_core::{Tensor, D};

use super::Ops;
use crate::error::Result;
use crate::kernels::DecodeStep;

impl Ops {
    /// `silu(gate) * up` for `gate_up` (.., 2n) = [gate | up]: (.., n). One kernel on CUDA bf16.
    pub(crate) fn swiglu(&self, gate_up: &Tensor) -> Result<Tensor> {
        if self.fused(false) {
            if let Some(h) = self.kernels.swiglu(gate_up)? {
                return Ok(h);
            }
        }
        let n = gate_up.dim(D::Minus1)? / 2;
        Ok((gate_up.narrow(D::Minus1, 0, n)?.silu()? * gate_up.narrow(D::Minus1, n, n)?)?)
    }

    /// `x` (rows, n) with `feat[k]` added to row `rows[k]` (`rows` (r,) u32, `feat` (r, n)), each
    /// sum rounded like a bf16 add: DeepStack's injection of visual features.
    pub(crate) fn rows_add(&self, x: &Tensor, rows: &Tensor, feat: &Tensor) -> Result<Tensor> {
        if self.fused(false) {
            if let Some(t) = self.kernels.rows_add(x, rows, feat)? {
                return Ok(t);
            }
        }
        Ok(x.index_add(rows, feat, 0)?)
    }

    /// Writes `src` (b, heads, s, d) into rows `offset..offset + s` of the KV buffer `dst`
    /// (b, heads, capacity, d), in place: one kernel on CUDA, else candle's `slice_set`.
    pub(crate) fn kv_write(&self, dst: &Tensor, src: &Tensor, offset: usize) -> Result<()> {
        if self.fused(false) && self.kernels.kv_write(dst, src, offset)? {
            return Ok(());
        }
        Ok(dst.slice_set(&src.contiguous()?, 2, offset)?)
    }

    /// One decode step of a batch whose inputs are in device memory ([`DecodeStep`]): QK-norm and
    /// rope of the new tokens, their keys and values written into each sequence's cache, and the
    /// attention, in one kernel ([`crate::kernels::DeviceKernels::decode_attention_norm`]). Only
    /// the kernel computes such a step; `None` where it cannot run (the caller takes the
    /// host-table path instead).
    pub(crate) fn decode_step_attention(&self, qkv: &Tensor, heads: usize, qk_weights: &Tensor, table: &Tensor, eps: f32, step: &DecodeStep) -> Result<Option<Tensor>> {
        if !self.fused(false) {
            return Ok(None);
        }
        self.kernels.decode_attention_norm(qkv, heads, qk_weights, table, eps, step)
    }

    /// The vision tower's bf16 input rows from an uploaded 8-bit image
    /// ([`crate::kernels::DeviceKernels::patch_rows`]); `None` where the kernel does not apply
    /// (the caller builds them with tensor ops).
    pub(crate) fn patch_rows(&self, rgb: &Tensor, lut: &Tensor, grid: (usize, usize), p: usize, m: usize, t: usize) -> Result<Option<Tensor>> {
        if !self.fused(false) {
            return Ok(None);
        }
        self.kernels.patch_rows(rgb, lut, grid, p, m, t)
    }
}
