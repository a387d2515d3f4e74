//! Reading a Hugging Face Qwen3-VL folder: config.json, one or several memory-mapped
//! safetensors files (`model.safetensors` or `model.safetensors.index.json`), tokenizer.json and
//! the optional preprocessor_config.json, video_preprocessor_config.json and
//! generation_config.json, and the chat template's flavour ([`ChatFormat::from_folder`]). Every
//! failure names the file.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::chat_template::ChatFormat;
use crate::config::Qwen3VlConfig;
use crate::error::{ModelError, Result};
use crate::preprocess::{PreprocessConfig, VideoConfig};

/// The optional generation_config.json: only what changes decoding.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerationConfig {
    #[serde(default)]
    pub do_sample: Option<bool>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub repetition_penalty: Option<f64>,
}

impl GenerationConfig {
    /// The end-of-sequence ids it lists (a number or a list).
    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect(),
            _ => Vec::new(),
        }
    }
}

/// A checked model folder: every file it needs exists and the config parses.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub dir: PathBuf,
    pub config: Qwen3VlConfig,
    pub preprocess: PreprocessConfig,
    /// The video processor's settings (its class defaults without the file).
    pub video: VideoConfig,
    pub generation: GenerationConfig,
    /// The flavour of the folder's chat template (Instruct when it has none).
    pub chat_format: ChatFormat,
    pub weights: Vec<PathBuf>,
    pub tokenizer: PathBuf,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })
}

fn require(dir: &Path, file: &str) -> Result<PathBuf> {
    let p = dir.join(file);
    if p.is_file() {
        Ok(p)
    } else {
        Err(ModelError::MissingFile { dir: dir.to_path_buf(), file: file.to_string() })
    }
}

impl ModelFolder {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(ModelError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a folder"),
            });
        }
        let config = Qwen3VlConfig::from_json(&read(&require(dir, "config.json")?)?)?;
        let tokenizer = require(dir, "tokenizer.json")?;
        let weights = weight_files(dir)?;
        let preprocess = match dir.join("preprocessor_config.json") {
            p if p.is_file() => PreprocessConfig::from_json(&read(&p)?)?,
            _ => PreprocessConfig::default(),
        };
        let video = match dir.join("video_preprocessor_config.json") {
            p if p.is_file() => VideoConfig::from_json(&read(&p)?)
                .map_err(|e| ModelError::Config(format!("video_preprocessor_config.json: {e}")))?,
            _ => VideoConfig::default(),
        };
        let generation = match dir.join("generation_config.json") {
            p if p.is_file() => serde_json::from_str(&read(&p)?)
                .map_err(|e| ModelError::Config(format!("generation_config.json: {e}")))?,
            _ => GenerationConfig::default(),
        };
        let chat_format = ChatFormat::from_folder(dir)?;
        Ok(Self { dir: dir.to_path_buf(), config, preprocess, video, generation, chat_format, weights, tokenizer })
    }

    /// Number of parameters stored in the weight files (from their headers; no tensor is read).
    pub fn parameter_count(&self) -> Result<u64> {
        let mut n = 0u64;
        for w in &self.weights {
            for (name, t) in checked_header(w)? {
                if name == "__metadata__" {
                    continue;
                }
                // The header check bounded every shape by the file size, so these cannot overflow;
                // saturating all the same, as a count is not worth a panic.
                let shape = t.get("shape").and_then(|s| s.as_array());
                let elems = shape.map(|s| s.iter().filter_map(|d| d.as_u64()).fold(1u64, u64::saturating_mul));
                n = n.saturating_add(elems.unwrap_or(0));
            }
        }
        Ok(n)
    }

    /// Memory-maps the weights as a VarBuilder that converts to `dtype` on `device`.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        for w in &self.weights {
            checked_header(w)?;
        }
        // SAFETY: the files are memory-mapped read-only; like every mmap user we rely on nobody
        // truncating them while the model is loaded (the header and sizes were checked above).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&self.weights, dtype, device) }
            .map_err(|e| ModelError::Weights(crate::error::candle_message(&e)))?;
        Ok(vb)
    }
}

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(ModelError::MissingFile {
            dir: dir.to_path_buf(),
            file: "model.safetensors (or model.safetensors.index.json)".into(),
        });
    }
    #[derive(Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let idx: Index = serde_json::from_str(&read(&index)?)
        .map_err(|e| ModelError::Weights(format!("{}: {e}", index.display())))?;
    let mut files: Vec<String> = idx.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    files.iter().map(|f| require(dir, f)).collect()
}

/// Reads and checks a safetensors file's header: it parses, every tensor's bytes match its dtype
/// and shape, the tensors tile the data area without gaps or overlaps, and the data fits the
/// file. A truncated download or a hostile header is reported by name here, with checked
/// arithmetic, instead of failing (or overflowing) deep inside the loader.
fn checked_header(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    use std::io::Read;
    let bad = |m: String| ModelError::Weights(format!("{}: {m}", path.display()));
    let mut f = std::fs::File::open(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
    let size = f.metadata().map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| bad("file is too short to be safetensors".into()))?;
    let n = u64::from_le_bytes(len);
    if n > size.saturating_sub(8) || n > 100_000_000 {
        return Err(bad(format!("header claims {n} bytes but the file has {size}: truncated or not safetensors")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|_| bad("truncated header".into()))?;
    let meta: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let end = data_end(&meta).map_err(bad)?;
    // 8 + n <= size was checked above; `end` is any u64 the header claims.
    let need = (8 + n).checked_add(end);
    match need {
        Some(need) if need == size => Ok(meta),
        Some(need) if need < size => Err(bad(format!(
            "{} bytes follow the last tensor (which ends at byte {need}): not a safetensors file",
            size - need
        ))),
        _ => Err(bad(format!(
            "truncated: tensors need {} bytes but the file has {size} (re-download it)",
            need.map_or_else(|| format!("more than {}", u64::MAX), |v| v.to_string())
        ))),
    }
}

/// The end of the data area the header describes: checked like the safetensors crate does,
/// sorted by offset, each tensor starting where the previous one ended.
fn data_end(meta: &serde_json::Map<String, serde_json::Value>) -> std::result::Result<u64, String> {
    let mut spans = Vec::with_capacity(meta.len());
    for (name, v) in meta {
        if name != "__metadata__" {
            spans.push(tensor_span(name, v)?);
        }
    }
    spans.sort_by_key(|s| (s.begin, s.end));
    let mut end = 0u64;
    for s in &spans {
        if s.begin != end {
            let what = if s.begin < end { "overlaps the tensor before it" } else { "leaves a gap before it" };
            return Err(format!("tensor {}: data_offsets [{}, {}] {what}", s.name, s.begin, s.end));
        }
        end = s.end;
    }
    Ok(end)
}

/// Where one tensor's bytes lie in the data area.
struct Span<'a> {
    name: &'a str,
    begin: u64,
    end: u64,
}

/// Checks one header entry: a known dtype, a shape, and `data_offsets` `[begin, end]` holding
/// exactly dtype * shape bytes (products checked, so a huge shape cannot overflow).
fn tensor_span<'a>(name: &'a str, v: &serde_json::Value) -> std::result::Result<Span<'a>, String> {
    let info: safetensors::tensor::TensorInfo =
        serde_json::from_value(v.clone()).map_err(|e| format!("tensor {name}: bad header entry: {e}"))?;
    let (begin, end) = (info.data_offsets.0 as u64, info.data_offsets.1 as u64);
    if end < begin {
        return Err(format!("tensor {name}: data_offsets [{begin}, {end}] end before they begin"));
    }
    let elements = info
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| format!("tensor {name}: shape {:?} is too large", info.shape))?;
    // u128: a u64 element count times a bit width cannot overflow it.
    let bits = elements as u128 * info.dtype.bitsize() as u128;
    if bits % 8 != 0 {
        return Err(format!("tensor {name}: shape {:?} of {:?} is not a whole number of bytes", info.shape, info.dtype));
    }
    if (end - begin) as u128 != bits / 8 {
        return Err(format!(
            "tensor {name}: data_offsets [{begin}, {end}] hold {} bytes but {:?} {:?} needs {}",
            end - begin,
            info.dtype,
            info.shape,
            bits / 8
        ));
    }
    Ok(Span { name, begin, end })
}
