//! The model manager's logic: the catalogue of models people run ([`catalog`], one table of
//! data so quantised or MoE models can be added as rows), what this computer has
//! ([`detect_memory`], or a [`parse_memory_override`] from the app's edge), whether each model
//! fits ([`fit`]: the GPU, else the CPU, else too big), the models in the download cache
//! ([`installed`], laid out by [`crate::download`] as `models--ORG--NAME/{blobs,snapshots,refs}`)
//! and deleting one ([`delete_installed`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::download::validate_repo_id;
use crate::error::{DesktopError, Result};
use crate::threads::dir_bytes;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Tokens of context the memory estimate holds KV cache for (a few screenshot turns).
pub const ESTIMATE_CONTEXT_TOKENS: u64 = 8192;
/// Activations, the vision tower's working memory and the runtime, on top of weights and KV.
pub const RUNTIME_HEADROOM_BYTES: u64 = GIB;
/// Tokenizer, configs: what a download holds beyond the bf16 weights.
pub const EXTRA_DOWNLOAD_BYTES: u64 = 12 * MIB;

/// A model of the catalogue with what it costs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CatalogEntry {
    /// `Qwen/Qwen3-VL-2B-Instruct`.
    pub repo: String,
    /// `2B`.
    pub size: String,
    /// `Instruct` or `Thinking`.
    pub variant: String,
    pub parameters: u64,
    /// The bf16 safetensors and the tokenizer.
    pub download_bytes: u64,
    /// To run in bf16 on a GPU: weights + KV cache for [`ESTIMATE_CONTEXT_TOKENS`] + headroom.
    pub memory_bytes: u64,
    /// To run in f32 on the CPU: weights × 2 + KV cache (f32) + headroom.
    pub cpu_memory_bytes: u64,
    pub note: String,
}

/// One row of the model table: the data the estimates come from.
struct Spec {
    size: &'static str,
    variants: &'static [(&'static str, &'static str)],
    parameters: u64,
    /// Text decoder shape (KV cache per token = 2 × layers × kv_heads × head_dim values).
    layers: u64,
    kv_heads: u64,
    head_dim: u64,
    /// Bytes per parameter of the published weights (bf16: 2).
    download_bytes_per_param: u64,
}

const INSTRUCT: (&str, &str) = ("Instruct", "answers directly");
const THINKING: (&str, &str) = ("Thinking", "reasons step by step before answering: slower, better at hard questions");

/// Qwen3-VL dense models (config.json of each; parameter counts from the published weights).
const SPECS: &[Spec] = &[
    Spec { size: "2B", variants: &[INSTRUCT, THINKING], parameters: 2_130_000_000, layers: 28, kv_heads: 8, head_dim: 128, download_bytes_per_param: 2 },
    Spec { size: "4B", variants: &[INSTRUCT, THINKING], parameters: 4_440_000_000, layers: 36, kv_heads: 8, head_dim: 128, download_bytes_per_param: 2 },
    Spec { size: "8B", variants: &[INSTRUCT, THINKING], parameters: 8_770_000_000, layers: 36, kv_heads: 8, head_dim: 128, download_bytes_per_param: 2 },
];

impl Spec {
    fn kv_bytes(&self, bytes_per_value: u64) -> u64 {
        2 * self.layers * self.kv_heads * self.head_dim * bytes_per_value * ESTIMATE_CONTEXT_TOKENS
    }
}

/// The models the manager offers, smallest first.
pub fn catalog() -> Vec<CatalogEntry> {
    SPECS
        .iter()
        .flat_map(|s| {
            s.variants.iter().map(move |(variant, note)| CatalogEntry {
                repo: format!("Qwen/Qwen3-VL-{}-{variant}", s.size),
                size: s.size.to_string(),
                variant: variant.to_string(),
                parameters: s.parameters,
                download_bytes: s.parameters * s.download_bytes_per_param + EXTRA_DOWNLOAD_BYTES,
                memory_bytes: s.parameters * 2 + s.kv_bytes(2) + RUNTIME_HEADROOM_BYTES,
                cpu_memory_bytes: s.parameters * 4 + s.kv_bytes(4) + RUNTIME_HEADROOM_BYTES,
                note: note.to_string(),
            })
        })
        .collect()
}

/// What this computer has to run a model in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct DeviceMemory {
    pub gpu_name: Option<String>,
    /// Total memory of the first GPU.
    pub gpu_bytes: Option<u64>,
    /// Total RAM (0: unknown).
    pub ram_bytes: u64,
}

/// RAM from the OS and the first NVIDIA GPU from `nvidia-smi`, where they can be read.
pub fn detect_memory() -> DeviceMemory {
    let ram_bytes = if cfg!(target_os = "linux") {
        std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| parse_meminfo(&t)).unwrap_or(0)
    } else if cfg!(target_os = "macos") {
        run("sysctl", &["-n", "hw.memsize"]).and_then(|t| t.trim().parse().ok()).unwrap_or(0)
    } else {
        0
    };
    let gpu = run("nvidia-smi", &["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]).and_then(|t| parse_nvidia_smi(&t));
    DeviceMemory { gpu_name: gpu.as_ref().map(|g| g.0.clone()), gpu_bytes: gpu.map(|g| g.1), ram_bytes }
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `MemTotal:  16318412 kB` of /proc/meminfo, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    let unit = match words.next().map(str::to_ascii_lowercase).as_deref() {
        Some("kb") => 1024,
        Some("mb") => MIB,
        Some("gb") => GIB,
        None | Some("b") => 1,
        Some(_) => return None,
    };
    n.checked_mul(unit)
}

/// The first GPU of `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`
/// (`NVIDIA GeForce RTX 3070, 8192`, MiB): its name and bytes.
pub fn parse_nvidia_smi(text: &str) -> Option<(String, u64)> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let (name, mib) = line.rsplit_once(',')?;
    let mib: u64 = mib.trim().parse().ok()?;
    let name = name.trim();
    (!name.is_empty() && mib > 0).then(|| (name.to_string(), mib * MIB))
}

/// `8GiB`, `512 MiB`, `7.5GB`, `1024` (bytes) → bytes. Decimal units (KB, MB, GB, TB) are
/// powers of 1000, binary ones (KiB, MiB, GiB, TiB) of 1024.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => MIB,
        "g" | "gb" => 1_000_000_000,
        "gib" => GIB,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = n * scale as f64;
    (n.is_finite() && bytes < 1e19).then_some(bytes.round() as u64)
}

/// A pretend computer for tests and demos: `gpu=8GiB,ram=16GiB`, `ram=32GiB` (no GPU).
/// Keys `gpu` and `ram`, each at most once; at least one of them.
pub fn parse_memory_override(s: &str) -> Result<DeviceMemory> {
    let bad = |why: String| DesktopError::InvalidArgument(format!("memory override {s:?}: {why} (write e.g. gpu=8GiB,ram=16GiB)"));
    let mut mem = DeviceMemory::default();
    let (mut gpu, mut ram) = (false, false);
    for part in s.split(',').map(str::trim) {
        let (key, value) = part.split_once('=').ok_or_else(|| bad(format!("{part:?} is not key=size")))?;
        let bytes = parse_bytes(value).ok_or_else(|| bad(format!("{value:?} is not a size")))?;
        match key.trim().to_ascii_lowercase().as_str() {
            "gpu" if !gpu => {
                gpu = true;
                mem.gpu_bytes = Some(bytes);
                mem.gpu_name = Some("simulated GPU".into());
            }
            "ram" if !ram => {
                ram = true;
                mem.ram_bytes = bytes;
            }
            "gpu" | "ram" => return Err(bad(format!("{key} is given twice"))),
            other => return Err(bad(format!("unknown key {other:?}"))),
        }
    }
    Ok(mem)
}

/// Where a model can run here.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// It fits the GPU.
    Gpu,
    /// Not the GPU, but RAM: it runs on the CPU, slowly.
    Cpu,
    TooBig,
}

/// Whether `entry` fits this computer's GPU, else its RAM.
pub fn fit(entry: &CatalogEntry, mem: &DeviceMemory) -> Fit {
    if mem.gpu_bytes.is_some_and(|g| entry.memory_bytes <= g) {
        Fit::Gpu
    } else if entry.cpu_memory_bytes <= mem.ram_bytes {
        Fit::Cpu
    } else {
        Fit::TooBig
    }
}

/// A model in the download cache.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InstalledModel {
    /// `org/name` (None when the folder's name is not a repo id).
    pub repo: Option<String>,
    /// What the UI calls it ([`crate::assistant::model_name`]).
    pub name: String,
    /// The snapshot folder to load.
    pub path: String,
    /// Bytes on disk of the whole repo folder (blobs counted once, links not followed).
    pub bytes: u64,
    /// Has config.json, tokenizer.json and every weight file the index names.
    pub complete: bool,
}

/// The snapshot of a repo folder to load: the one `refs/main` names, else the newest.
fn snapshot_of(repo_dir: &Path) -> Option<PathBuf> {
    let snaps = repo_dir.join("snapshots");
    if let Ok(commit) = std::fs::read_to_string(repo_dir.join("refs").join("main")) {
        let commit = commit.trim();
        let p = snaps.join(commit);
        if !commit.is_empty() && !commit.contains(['/', '\\', '.']) && p.is_dir() {
            return Some(p);
        }
    }
    std::fs::read_dir(&snaps)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// Whether `snapshot` holds a loadable model: config, tokenizer and every weight file.
pub fn is_complete(snapshot: &Path) -> bool {
    let present = |f: &str| std::fs::metadata(snapshot.join(f)).is_ok_and(|m| m.is_file());
    if !present("config.json") || !present("tokenizer.json") {
        return false;
    }
    let index = snapshot.join("model.safetensors.index.json");
    match std::fs::read_to_string(&index) {
        Ok(text) => {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
            let Some(map) = v["weight_map"].as_object() else { return false };
            let files: Vec<&str> = map.values().filter_map(serde_json::Value::as_str).collect();
            !files.is_empty() && files.iter().all(|f| !f.contains(['/', '\\']) && present(f))
        }
        Err(_) => present("model.safetensors"),
    }
}

/// The models in the hub-style cache `models_dir` (`models--*/snapshots/*`, the newest snapshot
/// of each), sorted by name; unreadable folders are left out.
pub fn installed(models_dir: &Path) -> Vec<InstalledModel> {
    let Ok(entries) = std::fs::read_dir(models_dir) else { return Vec::new() };
    let mut out: Vec<InstalledModel> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("models--")))
        .filter_map(|e| {
            let repo_dir = e.path();
            let snapshot = snapshot_of(&repo_dir)?;
            let name = crate::assistant::model_name(&snapshot);
            Some(InstalledModel {
                repo: validate_repo_id(&name).is_ok().then(|| name.clone()),
                name,
                path: snapshot.display().to_string(),
                bytes: dir_bytes(&repo_dir),
                complete: is_complete(&snapshot),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Removes `models--ORG--NAME` of `repo` from `models_dir` (blobs, snapshots, refs and
/// unfinished parts); returns the bytes freed.
pub fn delete_installed(models_dir: &Path, repo: &str) -> Result<u64> {
    validate_repo_id(repo)?;
    let dir = models_dir.join(hf_hub::Repo::model(repo.to_string()).folder_name());
    let meta = std::fs::symlink_metadata(&dir).map_err(|_| DesktopError::InvalidArgument(format!("{repo} is not installed")))?;
    if !meta.is_dir() {
        return Err(DesktopError::InvalidArgument(format!("{} is not a model folder", dir.display())));
    }
    let root = std::fs::canonicalize(models_dir).map_err(|e| DesktopError::io(models_dir, e))?;
    let real = std::fs::canonicalize(&dir).map_err(|e| DesktopError::io(&dir, e))?;
    if real.parent() != Some(root.as_path()) {
        return Err(DesktopError::InvalidArgument(format!("{} is outside {}", real.display(), root.display())));
    }
    let bytes = dir_bytes(&real);
    std::fs::remove_dir_all(&real).map_err(|e| DesktopError::io(&real, e))?;
    Ok(bytes)
}

/// A catalogue entry with its fit here and its installed copy.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CatalogRow {
    #[serde(flatten)]
    pub entry: CatalogEntry,
    pub fit: Fit,
    pub installed: Option<InstalledModel>,
}

/// The model manager's table: every catalogue model with its fit for `mem` and its entry in
/// `have` (the [`installed`] models, scanned once by the caller).
pub fn rows(mem: &DeviceMemory, have: &[InstalledModel]) -> Vec<CatalogRow> {
    catalog()
        .into_iter()
        .map(|entry| CatalogRow {
            fit: fit(&entry, mem),
            installed: have.iter().find(|m| m.repo.as_deref() == Some(entry.repo.as_str())).cloned(),
            entry,
        })
        .collect()
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
