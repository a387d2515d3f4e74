//! Fuzz target: what a downloaded model folder holds is checked without panicking or
//! allocating without bound: the safetensors header (length prefix, JSON, data offsets) and
//! the tensors it describes, config.json, preprocessor_config.json and generation_config.json.
//!
//! Input: up to four parts separated by `SEP` (see below): the bytes of model.safetensors,
//! config.json, preprocessor_config.json, generation_config.json. The safetensors bytes go
//! through the public path, `ModelFolder::open` on a folder (tmpfs when there is one) holding
//! them with a valid config.json, then `parameter_count` and `var_builder`, and every tensor
//! the header names is read as f32. The JSON parts go straight to their parsers.
//!
//! Only std, serde_json and screenpilot-model are used: crates/model/tests/fuzz_regressions.rs
//! includes this file to replay the corpus in `cargo test`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use screenpilot_model::loader::GenerationConfig;
use screenpilot_model::{DType, Device, ModelFolder, PreprocessConfig, Qwen3VlConfig};

/// Separates the parts of an input (also in fuzz/dicts/safetensors_config.dict).
const SEP: &[u8] = b"\n--8<--\n";

thread_local! {
    /// A model folder of this thread: the tiny model's config.json, an empty tokenizer.json
    /// (only its presence is checked here); model.safetensors is rewritten for every input.
    static FOLDER: PathBuf = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() { shm } else { std::env::temp_dir() };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("screenpilot-fuzz-safetensors-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz folder");
        std::fs::write(dir.join("config.json"), include_str!("../../tests/fixtures/tiny/config.json")).expect("config.json");
        std::fs::write(dir.join("tokenizer.json"), "{}").expect("tokenizer.json");
        dir
    };
}

fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    while let Some(i) = data.windows(SEP.len()).position(|w| w == SEP) {
        parts.push(&data[..i]);
        data = &data[i + SEP.len()..];
    }
    parts.push(data);
    parts
}

/// Removes this thread's model folder, when done with it (tests; scripts/fuzz.sh cleans up
/// after the fuzzer).
pub fn remove_folder() {
    FOLDER.with(|dir| {
        let _ = std::fs::remove_dir_all(dir);
    });
}

fn weights(bytes: &[u8]) {
    FOLDER.with(|dir| weights_in(dir, bytes));
}

fn weights_in(dir: &Path, bytes: &[u8]) {
    std::fs::write(dir.join("model.safetensors"), bytes).expect("write model.safetensors");
    let Ok(folder) = ModelFolder::open(dir) else { return };
    let Ok(_) = folder.parameter_count() else { return };
    let Ok(vb) = folder.var_builder(DType::F32, &Device::Cpu) else { return };
    // The names the header lists (the loader asks for tensors by name).
    let Some(len) = bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else { return };
    let n = usize::try_from(u64::from_le_bytes(len)).unwrap_or(usize::MAX);
    let Some(header) = bytes.get(8..8usize.saturating_add(n)) else { return };
    let Ok(meta) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(header) else { return };
    for name in meta.keys().filter(|k| *k != "__metadata__") {
        if vb.contains_tensor(name) {
            let _ = vb.get_unchecked_dtype(name, DType::F32);
        }
    }
}

/// One input: must not panic.
pub fn run(data: &[u8]) {
    let parts = split(data);
    weights(parts[0]);
    if let Some(text) = parts.get(1).and_then(|p| std::str::from_utf8(p).ok()) {
        if let Ok(cfg) = Qwen3VlConfig::from_json(text) {
            let _ = cfg.text_params();
            let _ = cfg.tied_embeddings();
            let v = &cfg.vision_config;
            let _ = (v.head_dim(), v.grid_per_side(), v.patch_dim(), v.rope_theta());
        }
    }
    if let Some(text) = parts.get(2).and_then(|p| std::str::from_utf8(p).ok()) {
        if let Ok(cfg) = PreprocessConfig::from_json(text) {
            if cfg.validate().is_ok() {
                let _ = (cfg.factor(), cfg.patch_dim(), cfg.pixel_bounds());
            }
        }
    }
    if let Some(p) = parts.get(3) {
        if let Ok(g) = serde_json::from_slice::<GenerationConfig>(p) {
            let _ = g.eos_ids();
        }
    }
}
