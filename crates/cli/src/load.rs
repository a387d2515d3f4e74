//! The command-line flags of a model and its sampling, as the engine's loader
//! ([`screenpilot_engine::load`]) and request options take them.

use anyhow::bail;
use screenpilot_engine::load::{self, DeviceChoice, GenerationDefaults, RuntimeConfig, SamplingChoice};
use screenpilot_engine::GenerationOptions;
use screenpilot_model::{CublasLt, DType, Device, FusedKernels, KernelConfig};

pub use screenpilot_engine::load::Loaded;

use crate::args::{CublasLtArg, DeviceArg, DtypeArg, FusedArg, ModelArgs, OnOff, RuntimeArgs, SamplingArgs};

fn device_choice(arg: Option<DeviceArg>) -> DeviceChoice {
    match arg {
        None => DeviceChoice::Auto,
        Some(DeviceArg::Cpu) => DeviceChoice::Cpu,
        Some(DeviceArg::Cuda) => DeviceChoice::Cuda,
        Some(DeviceArg::Metal) => DeviceChoice::Metal,
    }
}

fn dtype_choice(arg: Option<DtypeArg>) -> Option<DType> {
    arg.map(|d| match d {
        DtypeArg::F32 => DType::F32,
        DtypeArg::Bf16 => DType::BF16,
        DtypeArg::F16 => DType::F16,
    })
}

pub fn device(arg: Option<DeviceArg>) -> anyhow::Result<Device> {
    Ok(load::device(device_choice(arg))?)
}

pub fn dtype(arg: Option<DtypeArg>, dev: &Device) -> DType {
    dtype_choice(arg).unwrap_or_else(|| load::default_dtype(dev))
}

/// The runtime flags, checked before anything is loaded.
pub fn runtime(rt: &RuntimeArgs) -> anyhow::Result<RuntimeConfig> {
    if rt.max_image_tokens == Some(0) {
        bail!("--max-image-tokens must be at least 1");
    }
    if rt.context == Some(0) {
        bail!("--context must be at least 1");
    }
    Ok(RuntimeConfig {
        device: device_choice(rt.device),
        dtype: dtype_choice(rt.dtype),
        context: rt.context,
        max_image_tokens: rt.max_image_tokens,
        kernels: kernels(rt),
    })
}

/// The kernel flags over the `SCREENPILOT_FUSED` / `_LT` / `_CUDA_GRAPHS` variables (read here,
/// at the program's edge) over the defaults.
pub fn kernels(rt: &RuntimeArgs) -> KernelConfig {
    let mut k = KernelConfig::from_vars(|name| std::env::var(name).ok());
    if let Some(f) = rt.fused {
        k.fused = match f {
            FusedArg::All => FusedKernels::All,
            FusedArg::Flash => FusedKernels::FlashOnly,
            FusedArg::Off => FusedKernels::Off,
        };
    }
    if let Some(c) = rt.cublaslt {
        k.cublaslt = match c {
            CublasLtArg::On => CublasLt::On,
            CublasLtArg::Bias => CublasLt::BiasOnly,
            CublasLtArg::Off => CublasLt::Off,
        };
    }
    if let Some(g) = rt.cuda_graphs {
        k.cuda_graphs = g == OnOff::On;
    }
    k.quant = rt.quant;
    k
}

pub fn load(args: &ModelArgs) -> anyhow::Result<Loaded> {
    Ok(load::open(&args.model, &runtime(&args.runtime)?)?)
}

/// The sampling flags as the engine's choice (unset ones fall back on generation_config.json).
pub fn sampling_choice(args: &SamplingArgs) -> SamplingChoice {
    SamplingChoice {
        greedy: args.greedy,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
    }
}

/// Resolves the sampling flags against the model's generation defaults.
pub fn sampling(args: &SamplingArgs, defaults: &GenerationDefaults) -> GenerationOptions {
    defaults.options(&sampling_choice(args))
}
