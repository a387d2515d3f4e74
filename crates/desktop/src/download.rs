//! Model download from the Hugging Face hub (or any server laid out like it:
//! `/{repo}/resolve/{revision}/{file}` and `/api/models/{repo}/revision/{revision}`) through
//! hf-hub's tokio API, into a hub-style cache (`models--org--name/snapshots/<commit>/`).
//! Progress is reported per chunk; [`CancelToken`] stops a download, and the next call resumes
//! it from the last complete chunk (hf-hub keeps a `.sync.part` file with a committed length).
//! Files of the commit already in the cache are not fetched again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hf_hub::api::tokio::{ApiBuilder, Progress};
use hf_hub::{Repo, RepoType};
use serde::Serialize;
use tokio::sync::Notify;

use crate::error::{DesktopError, Result};

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Environment variable that overrides the endpoint (same name as huggingface_hub's).
pub const ENDPOINT_ENV: &str = "HF_ENDPOINT";
/// Resume granularity: bytes per ranged request.
pub const CHUNK_BYTES: usize = 1 << 20;

/// What to download.
#[derive(Debug, Clone)]
pub struct DownloadRequest {
    /// Base URL of the hub.
    pub endpoint: String,
    /// `org/name`.
    pub repo: String,
    /// Branch, tag or commit.
    pub revision: String,
    /// Hub-style cache folder.
    pub cache_dir: PathBuf,
    /// Chunks fetched at the same time.
    pub parallel: usize,
}

/// Progress of a download, for a progress bar.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DownloadProgress {
    /// The file being fetched.
    pub file: String,
    /// Its position in the list (1-based).
    pub file_index: usize,
    /// Files in the list.
    pub files: usize,
    /// Bytes of this file on disk.
    pub bytes: u64,
    /// Size of this file.
    pub total: u64,
}

/// Cancels a running download from another thread.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<(AtomicBool, Notify)>);

impl CancelToken {
    /// A fresh token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
        self.0 .1.notify_one();
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0 .0.load(Ordering::SeqCst)
    }

    async fn cancelled(&self) {
        while !self.is_cancelled() {
            self.0 .1.notified().await;
        }
    }
}

/// The endpoint to use: the setting, else `$HF_ENDPOINT`, else the public hub.
pub fn resolve_endpoint(setting: Option<&str>) -> String {
    let env = std::env::var(ENDPOINT_ENV).ok();
    setting.filter(|s| !s.trim().is_empty()).map(str::to_string).or(env).unwrap_or_else(|| DEFAULT_ENDPOINT.into())
}

/// Checks a repo id like `Qwen/Qwen3-VL-2B-Instruct` (no traversal, no URL tricks).
pub fn validate_repo_id(repo: &str) -> Result<()> {
    let ok_part = |p: &str| {
        !p.is_empty() && p != "." && p != ".." && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() == 2 && parts.iter().all(|p| ok_part(p)) && repo.len() <= 96 {
        Ok(())
    } else {
        Err(DesktopError::InvalidArgument(format!("repo id {repo:?} is not of the form org/name")))
    }
}

/// Whether a repo file is part of a Qwen3-VL model folder.
pub fn wanted(file: &str) -> bool {
    const FILES: [&str; 6] = [
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors.index.json",
    ];
    !file.contains('/') && (FILES.contains(&file) || file.ends_with(".safetensors"))
}

#[derive(Clone)]
struct Reporter {
    done: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    file: String,
    index: usize,
    files: usize,
    sink: Arc<dyn Fn(DownloadProgress) + Send + Sync>,
}

impl Reporter {
    fn report(&self) {
        (self.sink)(DownloadProgress {
            file: self.file.clone(),
            file_index: self.index,
            files: self.files,
            bytes: self.done.load(Ordering::SeqCst),
            total: self.total.load(Ordering::SeqCst),
        });
    }
}

impl Progress for Reporter {
    async fn init(&mut self, size: usize, _filename: &str) {
        self.total.store(size as u64, Ordering::SeqCst);
        self.report();
    }

    async fn update(&mut self, size: usize) {
        self.done.fetch_add(size as u64, Ordering::SeqCst);
        self.report();
    }

    async fn finish(&mut self) {}
}

fn dl_err(e: impl std::fmt::Display) -> DesktopError {
    DesktopError::Download(e.to_string())
}

/// Downloads the model files of `req` and returns the snapshot folder. Blocks the calling
/// thread; `cancel` stops it (returning [`DesktopError::Cancelled`]), and a later call resumes.
pub fn download(req: &DownloadRequest, cancel: &CancelToken, on_progress: Arc<dyn Fn(DownloadProgress) + Send + Sync>) -> Result<PathBuf> {
    validate_repo_id(&req.repo)?;
    if req.revision.is_empty() || req.revision.contains("..") || req.revision.contains(['?', '#', ' ']) {
        return Err(DesktopError::InvalidArgument(format!("revision {:?}", req.revision)));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(dl_err)?;
    let result = rt.block_on(async {
        tokio::select! {
            r = fetch_all(req, on_progress) => r,
            _ = cancel.cancelled() => Err(DesktopError::Cancelled),
        }
    });
    // Drops the chunk tasks still running, so nothing writes to the part file afterwards.
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn fetch_all(req: &DownloadRequest, sink: Arc<dyn Fn(DownloadProgress) + Send + Sync>) -> Result<PathBuf> {
    let api = ApiBuilder::new()
        .with_endpoint(req.endpoint.trim_end_matches('/').to_string())
        .with_cache_dir(req.cache_dir.clone())
        .with_progress(false)
        .with_chunk_size(Some(CHUNK_BYTES))
        .with_max_files(req.parallel.clamp(1, 32))
        .build()
        .map_err(dl_err)?;
    let repo = api.repo(Repo::with_revision(req.repo.clone(), RepoType::Model, req.revision.clone()));
    let info = repo.info().await.map_err(dl_err)?;
    let files: Vec<String> = info.siblings.iter().map(|s| s.rfilename.clone()).filter(|f| wanted(f)).collect();
    if !files.iter().any(|f| f.ends_with(".safetensors")) || !files.iter().any(|f| f == "config.json") {
        return Err(DesktopError::Download(format!("{} has no config.json or *.safetensors", req.repo)));
    }
    // Files of this commit already in the cache are not fetched again (hf-hub's download would).
    let snapshot = (!info.sha.is_empty() && info.sha.chars().all(|c| c.is_ascii_alphanumeric())).then(|| {
        req.cache_dir.join(Repo::model(req.repo.clone()).folder_name()).join("snapshots").join(&info.sha)
    });
    let mut folder: Option<PathBuf> = None;
    for (i, file) in files.iter().enumerate() {
        let reporter = Reporter {
            done: Arc::new(AtomicU64::new(0)),
            total: Arc::new(AtomicU64::new(0)),
            file: file.clone(),
            index: i + 1,
            files: files.len(),
            sink: Arc::clone(&sink),
        };
        let path = match snapshot.as_ref().map(|s| s.join(file)).filter(|p| p.exists()) {
            Some(cached) => {
                // hf-hub links a snapshot file only once its blob is complete.
                let size = std::fs::metadata(&cached).map_err(|e| DesktopError::io(&cached, e))?.len();
                reporter.total.store(size, Ordering::SeqCst);
                reporter.done.store(size, Ordering::SeqCst);
                cached
            }
            None => repo.download_with_progress(file, reporter.clone()).await.map_err(dl_err)?,
        };
        reporter.report();
        folder = path.parent().map(Path::to_path_buf);
    }
    folder.ok_or_else(|| DesktopError::Download("nothing downloaded".into()))
}
