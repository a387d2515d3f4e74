//! The model's operations, each choosing in one place between our CUDA kernel
//! ([`crate::kernels`]) and candle's ops: the layer files (`text/`, `vision/`) call these and
//! read like the model, with no kernel plumbing.
//!
//! Every op computes what the reference computes. A kernel runs where it applies (CUDA, bf16,
//! supported shapes, allowed by the model's [`KernelConfig`]); otherwise the op runs the plain
//! candle arithmetic, which is what the CPU exactness tests check against transformers. The
//! kernels round at most once where candle rounds several times (documented per op); the
//! full-size GPU comparison (`tools/compare_with_hf.py`) covers them.
//!
//! - [`norm`]: RMSNorm and LayerNorm, with the residual add before them fused in.
//! - [`linear`]: matmul + bias (+ GELU) through cuBLASLt's epilogue, the bias + activation kernel.
//! - [`attention`]: causal attention of the text decoder (prefill, one-token decode) and the
//!   vision tower's attention within each image.
//! - [`rope`]: the text decoder's QK-norm + MRoPE (optionally writing the KV cache in the same
//!   pass) and the vision tower's 2-D rope.
//! - [`quant`]: the language model's projections as quantized weights (`--quant`).
//! - [`cpu_math`]: the tanh GELU in f32 on the CPU, over a vectorisable exp.
//! - [`elementwise`]: SwiGLU, DeepStack's row adds, KV cache writes, the vision input rows.

pub mod config;
pub(crate) mod attention;
pub(crate) mod cpu_math;
pub(crate) mod elementwise;
pub(crate) mod linear;
pub(crate) mod norm;
pub mod quant;
pub(crate) mod rope;

use std::sync::Arc;

use candle_core::Device;

pub use config::{CublasLt, FusedKernels, KernelConfig};
pub use quant::{QuantSummary, QuantType};
pub(crate) use crate::kernels::Act;
use crate::kernels::DeviceKernels;
pub(crate) use norm::{LayerNorm, RmsNorm};

/// The ops of one loaded model: its [`KernelConfig`] and the kernels' state on its device
/// ([`DeviceKernels`]: what loaded there, the cuBLASLt handles), made once per model. Cheap to
/// clone (the state is shared); every layer that runs an op holds one.
#[derive(Debug, Clone)]
pub(crate) struct Ops {
    config: KernelConfig,
    kernels: Arc<DeviceKernels>,
}

impl Ops {
    /// The ops of a model on `device` with the kernel choice `config`. Where the config allows a
    /// kernel and `device` is a CUDA GPU, our PTX modules are loaded on it here.
    pub(crate) fn new(device: &Device, config: KernelConfig) -> Self {
        let wanted = config.allows(true) || config.allows(false);
        Self { config, kernels: Arc::new(DeviceKernels::new(device, wanted)) }
    }

    pub(crate) fn config(&self) -> &KernelConfig {
        &self.config
    }

    /// The kernels' state on this model's device (the kernels themselves are its methods).
    // Read by graph.rs's device decoder and the GPU parity tests, both CUDA only.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn kernels(&self) -> &DeviceKernels {
        &self.kernels
    }

    /// Whether the fused kernels (`flash`: the attention kernels) may run.
    fn fused(&self, flash: bool) -> bool {
        self.config.allows(flash)
    }
}

#[cfg(all(test, feature = "cuda"))]
mod parity;
