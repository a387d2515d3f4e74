//! Normalisation ops: RMSNorm (text decoder) and LayerNorm (vision tower), each optionally with
//! the residual add before it fused into the same kernel.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNormConfig, VarBuilder};

use super::Ops;
use crate::error::{ModelError, Result};

/// RMSNorm weights. Statistics in f32 like the reference. In f32 it is the reference's
/// arithmetic; in bf16/f16 the reference rounds the normalised value to the storage type before
/// multiplying by the weight, where the fused kernel rounds once at the end (at most one unit in
/// the last place apart, and closer to the exact value).
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    pub(crate) weight: Tensor,
    pub(crate) eps: f64,
}

impl RmsNorm {
    pub(crate) fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?, eps })
    }
}

/// LayerNorm weights (eps 1e-6, with a bias: the vision tower's).
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    ln: candle_nn::LayerNorm,
    /// (2, dim) = [weight; bias] for the kernel.
    wb: Tensor,
}

impl LayerNorm {
    pub(crate) const EPS: f64 = 1e-6;

    pub(crate) fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let ln = candle_nn::layer_norm(dim, LayerNormConfig { eps: Self::EPS, ..Default::default() }, vb)?;
        let bias = ln.bias().ok_or_else(|| ModelError::Input("vision LayerNorm without a bias".into()))?;
        let wb = Tensor::stack(&[ln.weight(), bias], 0)?;
        Ok(Self { ln, wb })
    }
}

impl Ops {
    /// RMSNorm of `x` over its last axis (candle's fused op, on every device).
    pub(crate) fn rms_norm(&self, x: &Tensor, n: &RmsNorm) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, &n.weight, n.eps as f32)?)
    }

    /// `(x + y, rms_norm(x + y))`: one kernel on CUDA.
    pub(crate) fn add_rms_norm(&self, x: &Tensor, y: &Tensor, n: &RmsNorm) -> Result<(Tensor, Tensor)> {
        if self.fused(false) {
            if let Some(both) = self.kernels.add_rms_norm(x, y, &n.weight, n.eps as f32)? {
                return Ok((both.get(0)?, both.get(1)?));
            }
        }
        let sum = (x + y)?;
        let normed = self.rms_norm(&sum, n)?;
        Ok((sum, normed))
    }

    /// LayerNorm of `x` (rows, dim): one kernel on CUDA bf16.
    pub(crate) fn layer_norm(&self, x: &Tensor, n: &LayerNorm) -> Result<Tensor> {
        if self.fused(false) {
            if let Some(y) = self.kernels.layer_norm(x, None, &n.wb, LayerNorm::EPS as f32)? {
                return Ok(y);
            }
        }
        Ok(n.ln.forward(x)?)
    }

    /// `(x + y, layer_norm(x + y))`, or `(x, layer_norm(x))` without `y`: one kernel on CUDA bf16.
    pub(crate) fn add_layer_norm(&self, x: &Tensor, y: Option<&Tensor>, n: &LayerNorm) -> Result<(Tensor, Tensor)> {
        let Some(y) = y else { return Ok((x.clone(), self.layer_norm(x, n)?)) };
        if self.fused(false) {
            if let Some(both) = self.kernels.layer_norm(x, Some(y), &n.wb, LayerNorm::EPS as f32)? {
                return Ok((both.get(0)?, both.get(1)?));
            }
        }
        let sum = (x + y)?;
        let normed = n.ln.forward(&sum)?;
        Ok((sum, normed))
    }
}
