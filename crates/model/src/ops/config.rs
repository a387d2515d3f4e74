//! Which of our CUDA kernels a loaded model uses: a value given when the model is loaded
//! ([`crate::Qwen3Vl::load_with`]), never looked up from the environment inside the library.
//! Front ends map their flags (and the `SCREENPILOT_*` variables kept for old scripts) onto it
//! with [`KernelConfig::from_vars`].

use super::quant::QuantType;

/// Our fused kernels (everything in `crates/model/kernels/`), to measure them against candle's ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FusedKernels {
    /// Every kernel where it applies (CUDA, bf16, compute capability 8.0 or newer).
    #[default]
    All,
    /// Only the flash-attention kernels; norms, rope, SwiGLU, ... run as candle ops.
    FlashOnly,
    /// None: the model runs candle's ops only (what the CPU exactness tests run).
    Off,
}

/// The cuBLASLt matmul with the bias (and tanh GELU) in its epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CublasLt {
    #[default]
    On,
    /// The bias in the epilogue, the GELU applied after the rounded matmul (the reference's order).
    BiasOnly,
    /// candle's matmul.
    Off,
}

/// The kernel choice of one loaded model. Two models loaded with different configs in one process
/// each keep their own (the state behind it is per model, see [`crate::ops::Ops`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelConfig {
    pub fused: FusedKernels,
    pub cublaslt: CublasLt,
    /// Decode steps replayed as CUDA graphs (else eager launches with the same device inputs).
    pub cuda_graphs: bool,
    /// The language model's projections quantized at load to this format and run by candle's
    /// quantized matmuls (`None`: the model's dtype, our kernels). See [`super::quant`].
    pub quant: Option<QuantType>,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self { fused: FusedKernels::All, cublaslt: CublasLt::On, cuda_graphs: true, quant: None }
    }
}

impl KernelConfig {
    /// Every kernel off: candle's ops only.
    pub fn candle_only() -> Self {
        Self { fused: FusedKernels::Off, cublaslt: CublasLt::Off, cuda_graphs: false, quant: None }
    }

    /// The config the variables `SCREENPILOT_FUSED` (`0` off, `flash` flash attention only),
    /// `SCREENPILOT_LT` (`0` off, `bias` no GELU in the epilogue) and `SCREENPILOT_CUDA_GRAPHS`
    /// (`0` off) describe, read through `var` (the caller's lookup, e.g. `std::env::var(..).ok()`
    /// at a program's edge); unset or other values keep the default.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let d = Self::default();
        let fused = match var("SCREENPILOT_FUSED").as_deref() {
            Some("0") => FusedKernels::Off,
            Some("flash") => FusedKernels::FlashOnly,
            _ => d.fused,
        };
        let cublaslt = match var("SCREENPILOT_LT").as_deref() {
            Some("0") => CublasLt::Off,
            Some("bias") => CublasLt::BiasOnly,
            _ => d.cublaslt,
        };
        let cuda_graphs = var("SCREENPILOT_CUDA_GRAPHS").as_deref() != Some("0");
        Self { fused, cublaslt, cuda_graphs, quant: None }
    }

    /// Whether the kernels of this family may run: flash attention (`is_flash`) or the others.
    pub(crate) fn allows(&self, is_flash: bool) -> bool {
        match self.fused {
            FusedKernels::All => true,
            FusedKernels::FlashOnly => is_flash,
            FusedKernels::Off => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn variables_map_onto_the_config_and_unknown_values_keep_the_default() {
        assert_eq!(KernelConfig::from_vars(vars(&[])), KernelConfig::default());
        let c = KernelConfig::from_vars(vars(&[("SCREENPILOT_FUSED", "flash"), ("SCREENPILOT_LT", "bias"), ("SCREENPILOT_CUDA_GRAPHS", "0")]));
        assert_eq!(c, KernelConfig { fused: FusedKernels::FlashOnly, cublaslt: CublasLt::BiasOnly, cuda_graphs: false, quant: None });
        let c = KernelConfig::from_vars(vars(&[("SCREENPILOT_FUSED", "0"), ("SCREENPILOT_LT", "0"), ("SCREENPILOT_CUDA_GRAPHS", "1")]));
        assert_eq!(c, KernelConfig { fused: FusedKernels::Off, cublaslt: CublasLt::Off, cuda_graphs: true, quant: None });
        assert_eq!(KernelConfig::from_vars(vars(&[("SCREENPILOT_FUSED", "yes")])).fused, FusedKernels::All);
    }

    #[test]
    fn flash_only_keeps_attention_and_off_keeps_nothing() {
        let flash = KernelConfig { fused: FusedKernels::FlashOnly, ..Default::default() };
        assert!(flash.allows(true) && !flash.allows(false));
        assert!(!KernelConfig::candle_only().allows(true));
        assert!(KernelConfig::default().allows(false));
    }
}
