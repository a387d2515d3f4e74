//! Loading a model folder onto the chosen device, shared by the subcommands.

use std::time::Instant;

use anyhow::{bail, Context};
use screenpilot_model::{DType, Device, ModelFolder, PreprocessConfig, Qwen3Vl, SamplingParams, Tokenizer};

use crate::args::{DeviceArg, DtypeArg, ModelArgs, SamplingArgs};

pub struct Loaded {
    pub folder: ModelFolder,
    pub model: Qwen3Vl,
    pub tok: Tokenizer,
    pub preprocess: PreprocessConfig,
    pub load_ms: f64,
}

pub fn device(arg: Option<DeviceArg>) -> anyhow::Result<Device> {
    let gpu_built = candle_core::utils::cuda_is_available() || candle_core::utils::metal_is_available();
    match arg {
        Some(DeviceArg::Cpu) => Ok(Device::Cpu),
        Some(DeviceArg::Cuda) if !candle_core::utils::cuda_is_available() => {
            bail!("this build has no CUDA support: rebuild with `--features cuda` (see README)")
        }
        Some(DeviceArg::Cuda) => screenpilot_model::cuda_device(0).context("cannot open CUDA device 0"),
        Some(DeviceArg::Metal) if !candle_core::utils::metal_is_available() => {
            bail!("this build has no Metal support: rebuild with `--features metal`")
        }
        Some(DeviceArg::Metal) => Device::new_metal(0).context("cannot open Metal device 0"),
        None if candle_core::utils::cuda_is_available() => Ok(screenpilot_model::cuda_device(0).unwrap_or(Device::Cpu)),
        None if gpu_built => Ok(Device::new_metal(0).unwrap_or(Device::Cpu)),
        None => Ok(Device::Cpu),
    }
}

pub fn dtype(arg: Option<DtypeArg>, dev: &Device) -> DType {
    match arg {
        Some(DtypeArg::F32) => DType::F32,
        Some(DtypeArg::Bf16) => DType::BF16,
        Some(DtypeArg::F16) => DType::F16,
        None if dev.is_cpu() => DType::F32,
        None => DType::BF16,
    }
}

pub fn load(args: &ModelArgs) -> anyhow::Result<Loaded> {
    let start = Instant::now();
    let folder = ModelFolder::open(&args.model)?;
    let rt = &args.runtime;
    let dev = device(rt.device)?;
    let dtype = dtype(rt.dtype, &dev);
    let mut model = Qwen3Vl::load(&folder, dtype, &dev)?;
    if let Some(c) = rt.context {
        model.max_context = c.min(model.max_context);
    }
    let mut tok = Tokenizer::from_file(&folder.tokenizer)?;
    tok.add_end_ids(&folder.generation.eos_ids());
    let mut preprocess = folder.preprocess.clone();
    if let Some(n) = rt.max_image_tokens {
        if n == 0 {
            bail!("--max-image-tokens must be at least 1");
        }
        preprocess.max_image_tokens = Some(n);
    }
    Ok(Loaded { folder, model, tok, preprocess, load_ms: start.elapsed().as_secs_f64() * 1000.0 })
}

/// Resolves the sampling flags against the model's generation_config.json.
pub fn sampling(args: &SamplingArgs, folder: &ModelFolder) -> SamplingParams {
    let g = &folder.generation;
    let explicit = args.temperature.is_some() || args.top_p.is_some() || args.top_k.is_some();
    let sample = !args.greedy && (explicit || g.do_sample == Some(true));
    SamplingParams {
        temperature: if sample { args.temperature.or(g.temperature).unwrap_or(1.0) } else { 0.0 },
        top_p: args.top_p.or(g.top_p).unwrap_or(1.0),
        top_k: args.top_k.or(g.top_k).unwrap_or(0),
        repetition_penalty: args.repetition_penalty.or(g.repetition_penalty).unwrap_or(1.0),
        seed: args.seed,
        max_new_tokens: args.max_tokens,
        stop_strings: args.stop.clone(),
    }
}
