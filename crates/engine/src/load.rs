//! The one loader of every front end (the CLI's commands, the server, the app): [`open`] reads a
//! Hugging Face Qwen3-VL folder onto a device and returns the model, its tokenizer (with the end
//! tokens of generation_config.json, writing prompts in the chat format of the folder's template:
//! Instruct or Thinking), its image preprocessing and its generation defaults.
//! [`GenerationDefaults::options`] turns a front end's sampling choices into the engine's
//! [`GenerationOptions`], falling back on generation_config.json where the user chose nothing.

use std::path::Path;
use std::time::Instant;

use screenpilot_model::loader::GenerationConfig;
use screenpilot_model::{DType, Device, KernelConfig, ModelError, ModelFolder, PreprocessConfig, Qwen3Vl, Tokenizer};

use crate::engine::{Engine, EngineConfig};
use crate::error::{EngineError, Result};
use crate::request::GenerationOptions;

/// Which device to load onto.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA when this build has it and a GPU opens, else Metal likewise, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
    Metal,
}

/// How a model runs: device, precision and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub device: DeviceChoice,
    /// None: bf16 on a GPU, f32 on the CPU.
    pub dtype: Option<DType>,
    /// Longest prompt + answer in tokens (None or larger: the model's max_position_embeddings).
    pub context: Option<usize>,
    /// Cap on the visual tokens of each image (None: the folder's pixel bounds alone).
    pub max_image_tokens: Option<usize>,
    /// Which of the model's CUDA kernels run (every one that applies by default).
    pub kernels: KernelConfig,
}

/// The sampling generation_config.json asks for (every field optional there).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationDefaults {
    pub do_sample: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f64>,
}

/// What a front end's user chose; None falls back on the model's [`GenerationDefaults`].
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingChoice {
    /// Always take the most likely token, whatever generation_config.json says.
    pub greedy: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f64>,
    pub seed: u64,
    pub max_tokens: usize,
    pub stop: Vec<String>,
}

impl Default for SamplingChoice {
    fn default() -> Self {
        let o = GenerationOptions::default();
        Self {
            greedy: false,
            temperature: None,
            top_p: None,
            top_k: None,
            repetition_penalty: None,
            seed: o.seed,
            max_tokens: o.max_tokens,
            stop: Vec::new(),
        }
    }
}

impl GenerationDefaults {
    pub fn from_config(g: &GenerationConfig) -> Self {
        Self {
            do_sample: g.do_sample == Some(true),
            temperature: g.temperature,
            top_p: g.top_p,
            top_k: g.top_k,
            repetition_penalty: g.repetition_penalty,
        }
    }

    /// The request options for `choice`: sampling when the user set a temperature, top-p or
    /// top-k, or when the model asks for it and the user did not ask for greedy; temperature 1
    /// when sampling with none given. The repetition penalty applies either way.
    pub fn options(&self, choice: &SamplingChoice) -> GenerationOptions {
        let explicit = choice.temperature.is_some() || choice.top_p.is_some() || choice.top_k.is_some();
        let sample = !choice.greedy && (explicit || self.do_sample);
        GenerationOptions {
            max_tokens: choice.max_tokens,
            temperature: if sample { choice.temperature.or(self.temperature).unwrap_or(1.0) } else { 0.0 },
            top_p: choice.top_p.or(self.top_p).unwrap_or(1.0),
            top_k: choice.top_k.or(self.top_k).unwrap_or(0),
            seed: choice.seed,
            stop: choice.stop.clone(),
            ignore_eos: false,
            repetition_penalty: choice.repetition_penalty.or(self.repetition_penalty).unwrap_or(1.0),
        }
    }
}

/// A loaded model folder, ready for [`Loaded::into_engine`].
pub struct Loaded {
    pub folder: ModelFolder,
    pub model: Qwen3Vl,
    /// With the end tokens of generation_config.json added.
    pub tok: Tokenizer,
    /// The folder's preprocessing with [`RuntimeConfig::max_image_tokens`] applied.
    pub preprocess: PreprocessConfig,
    pub defaults: GenerationDefaults,
    /// Wall time of [`open`].
    pub load_ms: f64,
}

impl Loaded {
    pub fn dir(&self) -> &Path {
        &self.folder.dir
    }

    /// "cuda", "metal" or "cpu".
    pub fn device_name(&self) -> &'static str {
        device_name(self.model.device())
    }

    /// An engine over this model (the folder's metadata and defaults are dropped; keep what
    /// you need first).
    pub fn into_engine(self, cfg: EngineConfig) -> Engine {
        Engine::new(self.model, self.tok, self.preprocess, cfg).with_video(self.folder.video)
    }
}

/// "cuda", "metal" or "cpu".
pub fn device_name(d: &Device) -> &'static str {
    if d.is_cuda() {
        "cuda"
    } else if d.is_metal() {
        "metal"
    } else {
        "cpu"
    }
}

/// Opens the chosen device. Asking for CUDA or Metal in a build without it is an error that
/// says how to rebuild; [`DeviceChoice::Auto`] falls back on the CPU.
pub fn device(choice: DeviceChoice) -> Result<Device> {
    let cuda = candle_core::utils::cuda_is_available();
    let metal = candle_core::utils::metal_is_available();
    let io = |what: &str, e: candle_core::Error| {
        EngineError::Io(format!("cannot open {what}: {}", screenpilot_model::error::candle_message(&e)))
    };
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda if !cuda => {
            Err(EngineError::Io("this build has no CUDA support: rebuild with `--features cuda` (see README)".into()))
        }
        DeviceChoice::Cuda => screenpilot_model::cuda_device(0).map_err(|e| io("CUDA device 0", e)),
        DeviceChoice::Metal if !metal => {
            Err(EngineError::Io("this build has no Metal support: rebuild with `--features metal`".into()))
        }
        DeviceChoice::Metal => Device::new_metal(0).map_err(|e| io("Metal device 0", e)),
        DeviceChoice::Auto if cuda => Ok(screenpilot_model::cuda_device(0).unwrap_or(Device::Cpu)),
        DeviceChoice::Auto if metal => Ok(Device::new_metal(0).unwrap_or(Device::Cpu)),
        DeviceChoice::Auto => Ok(Device::Cpu),
    }
}

/// The threads of candle's CPU pool (quantized matmuls, large elementwise ops; dense matmuls
/// use rayon's pool, which this leaves alone), set through candle's `CANDLE_NUM_THREADS` before
/// any model code runs: call it first thing in `main`, before other threads exist. `threads`
/// `None` keeps candle's default, one a physical core: the best on an idle computer (2B at q4_k
/// on two cores: 18.4 tokens/s with two, 11.4 with one). On a busy one the pool's spinning
/// workers wait for each other's time slices (3.9 tokens/s while another build ran), and fewer
/// threads can be faster (BENCHMARKS.md, "CPU"). A `CANDLE_NUM_THREADS` the user set wins.
/// Returns the count it set, if any.
pub fn configure_cpu_threads(threads: Option<usize>) -> Option<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = cpu_threads(threads, cores, std::env::var_os("CANDLE_NUM_THREADS").is_some())?;
    // Before any other thread runs (see above): nothing reads the environment concurrently.
    std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    Some(n)
}

/// [`configure_cpu_threads`]'s choice: the count to set, if any.
fn cpu_threads(requested: Option<usize>, cores: usize, user_set: bool) -> Option<usize> {
    if user_set {
        return None;
    }
    requested.filter(|&n| n > 0 && n <= cores.max(1) * 4)
}

/// bf16 on a GPU, f32 on the CPU.
pub fn default_dtype(dev: &Device) -> DType {
    if dev.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

/// Loads `dir` onto the device `rt` chooses. Every failure is one message naming the folder or
/// file (no backtrace, whatever `RUST_BACKTRACE` says).
pub fn open(dir: &Path, rt: &RuntimeConfig) -> Result<Loaded> {
    let start = Instant::now();
    // The folder is checked before a device is opened: a typo fails fast, without a GPU.
    let folder = ModelFolder::open(dir).map_err(load_error)?;
    let dev = device(rt.device)?;
    load_folder(folder, &dev, rt, start)
}

/// [`open`] onto a device already opened (`rt.device` is ignored).
pub fn open_on(dir: &Path, dev: &Device, rt: &RuntimeConfig) -> Result<Loaded> {
    let start = Instant::now();
    let folder = ModelFolder::open(dir).map_err(load_error)?;
    load_folder(folder, dev, rt, start)
}

fn load_folder(folder: ModelFolder, dev: &Device, rt: &RuntimeConfig, start: Instant) -> Result<Loaded> {
    if rt.max_image_tokens == Some(0) {
        return Err(EngineError::InvalidRequest("max_image_tokens must be at least 1".into()));
    }
    if rt.context == Some(0) {
        return Err(EngineError::InvalidRequest("the context must hold at least 1 token".into()));
    }
    let dtype = rt.dtype.unwrap_or_else(|| default_dtype(dev));
    let mut model = Qwen3Vl::load_with(&folder, dtype, dev, rt.kernels).map_err(load_error)?;
    if let Some(c) = rt.context {
        model.max_context = c.min(model.max_context);
    }
    let mut tok = Tokenizer::from_file(&folder.tokenizer).map_err(load_error)?;
    tok.add_end_ids(&folder.generation.eos_ids());
    tok.set_chat_format(folder.chat_format);
    let mut preprocess = folder.preprocess.clone();
    if rt.max_image_tokens.is_some() {
        preprocess.max_image_tokens = rt.max_image_tokens;
    }
    let defaults = GenerationDefaults::from_config(&folder.generation);
    Ok(Loaded { folder, model, tok, preprocess, defaults, load_ms: start.elapsed().as_secs_f64() * 1000.0 })
}

/// A loading failure as it reads: the model crate's message names the folder or the file.
fn load_error(e: ModelError) -> EngineError {
    EngineError::Io(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice() -> SamplingChoice {
        SamplingChoice { max_tokens: 7, seed: 3, stop: vec!["x".into()], ..Default::default() }
    }

    #[test]
    fn the_model_asks_for_sampling_unless_the_user_asks_for_greedy() {
        let d = GenerationDefaults { do_sample: true, temperature: Some(0.7), top_p: Some(0.8), top_k: Some(20), repetition_penalty: Some(1.05) };
        let o = d.options(&choice());
        assert_eq!((o.temperature, o.top_p, o.top_k, o.repetition_penalty), (0.7, 0.8, 20, 1.05));
        assert_eq!((o.max_tokens, o.seed, o.stop.clone()), (7, 3, vec!["x".to_string()]));
        let o = d.options(&SamplingChoice { greedy: true, ..choice() });
        assert_eq!((o.temperature, o.repetition_penalty), (0.0, 1.05));
    }

    #[test]
    fn explicit_choices_sample_and_win_over_the_defaults() {
        let d = GenerationDefaults::default();
        assert_eq!(d.options(&choice()).temperature, 0.0, "greedy without do_sample");
        let o = d.options(&SamplingChoice { top_k: Some(5), repetition_penalty: Some(1.3), ..choice() });
        assert_eq!((o.temperature, o.top_k, o.top_p, o.repetition_penalty), (1.0, 5, 1.0, 1.3));
    }

    #[test]
    fn candle_keeps_its_default_unless_the_user_chose() {
        assert_eq!(cpu_threads(None, 2, false), None, "candle's own default");
        assert_eq!(cpu_threads(Some(1), 2, false), Some(1));
        assert_eq!(cpu_threads(Some(4), 2, false), Some(4));
        assert_eq!(cpu_threads(Some(0), 8, false), None);
        assert_eq!(cpu_threads(Some(1000), 8, false), None, "more than 4 a core is a typo");
        assert_eq!(cpu_threads(Some(4), 2, true), None, "CANDLE_NUM_THREADS wins");
    }

    #[test]
    fn a_missing_folder_is_one_message_naming_it() {
        let err = open(Path::new("/no/such/model"), &RuntimeConfig::default()).err();
        assert!(matches!(&err, Some(EngineError::Io(m)) if m.contains("/no/such/model")), "{err:?}");
    }
}
