//! Linear layers: on CUDA bf16 a cuBLASLt matmul with the bias (and the tanh GELU) in its
//! epilogue, or the matmul then one kernel for bias and activation (candle's broadcast add is
//! slow on wide rows); elsewhere candle's `Linear` and activations. The text decoder's
//! projections ([`Proj`]) may be quantized ([`super::quant`]).

use candle_core::{Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use super::quant::Proj;
use super::{Act, CublasLt, Ops};
use crate::error::Result;

/// One matmul for several projections of the same input: the weights `names` (each
/// (out_i, in)) stacked along the output dimension, with biases when `bias`.
pub(crate) fn stacked_linear(vb: &VarBuilder, parts: &[(&str, usize)], in_dim: usize, bias: bool) -> Result<Linear> {
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

fn apply_act(x: Tensor, act: Act) -> candle_core::Result<Tensor> {
    match act {
        Act::None => Ok(x),
        Act::GeluTanh => super::cpu_math::gelu(&x),
        Act::GeluErf => x.gelu_erf(),
    }
}

impl Ops {
    /// Whether the cuBLASLt matmul may run with `act` in its epilogue.
    fn lt_with(&self, act: Act) -> bool {
        self.fused(false)
            && match self.config().cublaslt {
                CublasLt::On => true,
                CublasLt::BiasOnly => act == Act::None,
                CublasLt::Off => false,
            }
    }

    /// `act(lin(x))` (the vision tower's layers): cuBLASLt with the bias and activation in the
    /// epilogue; for an activation the epilogue does not take (the erf GELU, or the tanh GELU with
    /// [`CublasLt::BiasOnly`]) the matmul with its bias, then the activation on the rounded result
    /// (the reference's order); else candle's matmul and [`Self::bias_act`].
    pub(crate) fn linear(&self, lin: &Linear, x: &Tensor, act: Act) -> Result<Tensor> {
        if self.lt_with(act) {
            if let Some(out) = self.kernels.linear(x, lin.weight(), lin.bias(), act)? {
                return Ok(out);
            }
        }
        if act != Act::None && self.lt_with(Act::None) {
            if let Some(out) = self.kernels.linear(x, lin.weight(), lin.bias(), Act::None)? {
                return Ok(apply_act(out, act)?);
            }
        }
        let Some(bias) = lin.bias() else { return Ok(apply_act(lin.forward(x)?, act)?) };
        self.bias_act(&x.matmul(&lin.weight().t()?)?, bias, act)
    }

    /// `proj(x)` (the text decoder's projections): prefills (64 rows or more) through cuBLASLt,
    /// decode steps and other devices through candle's matmul (cuBLAS on CUDA); a quantized
    /// projection through candle's quantized matmul.
    pub(crate) fn project(&self, proj: &Proj, x: &Tensor) -> Result<Tensor> {
        let Some(lin) = proj.dense() else { return Ok(proj.forward(x)?) };
        let k = x.dim(D::Minus1)?;
        if k > 0 && x.elem_count() / k >= 64 && self.lt_with(Act::None) {
            if let Some(y) = self.kernels.linear(x, lin.weight(), lin.bias(), Act::None)? {
                return Ok(y);
            }
        }
        Ok(lin.forward(x)?)
    }

    /// `act(mm + bias)` after a matmul: one kernel on CUDA bf16, else candle's broadcast add and
    /// activation.
    pub(crate) fn bias_act(&self, mm: &Tensor, bias: &Tensor, act: Act) -> Result<Tensor> {
        if self.fused(false) {
            if let Some(out) = self.kernels.bias_act(mm, bias, act)? {
                return Ok(out);
            }
        }
        Ok(apply_act(mm.broadcast_add(bias)?, act)?)
    }
}
