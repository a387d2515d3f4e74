//! The backend a command asks: the local engine on `--model DIR`, or an OpenAI-compatible
//! server with `--backend URL` (its key from `--api-key` or `SCREENPILOT_API_KEY`).

use std::path::Path;
use std::sync::Arc;

use anyhow::bail;
use screenpilot_engine::backend::{Backend, LocalBackend, RemoteBackend, RemoteConfig};
use screenpilot_engine::load::GenerationDefaults;
use screenpilot_engine::{EngineConfig, EngineHandle};

use crate::args::{BackendArgs, ModelArgs, RuntimeArgs};
use crate::load::load;

/// The local engine as a command opened it.
pub struct LocalEngine {
    pub backend: LocalBackend,
    /// The model's context length (prompt + answer), after `--context`.
    pub context: usize,
    pub defaults: GenerationDefaults,
    pub load_ms: f64,
}

/// Where a command's requests go.
pub enum Opened {
    Local(LocalEngine),
    Remote(RemoteBackend),
}

impl Opened {
    pub fn backend(&self) -> &dyn Backend {
        match self {
            Opened::Local(l) => &l.backend,
            Opened::Remote(r) => r,
        }
    }
}

/// Connects to `--backend`, or loads `model` into an engine set up by `cfg` (its worker thread
/// runs every request, as the server's does).
pub fn open(args: &BackendArgs, model: Option<&Path>, runtime: &RuntimeArgs, cfg: EngineConfig) -> anyhow::Result<Opened> {
    if let Some(url) = &args.backend {
        let api_key = args.api_key.clone().or_else(|| std::env::var("SCREENPILOT_API_KEY").ok()).filter(|k| !k.is_empty());
        let cfg = RemoteConfig { model: args.backend_model.clone(), api_key, stream: !args.no_stream, ..RemoteConfig::new(url) };
        return Ok(Opened::Remote(RemoteBackend::connect(cfg)?));
    }
    let Some(dir) = model else { bail!("give a model folder (--model DIR) or a server (--backend URL)") };
    let l = load(&ModelArgs { model: dir.to_path_buf(), runtime: runtime.clone() })?;
    let (context, defaults, load_ms) = (l.model.max_context, l.defaults.clone(), l.load_ms);
    let handle = EngineHandle::spawn(l.into_engine(cfg))?;
    Ok(Opened::Local(LocalEngine { backend: LocalBackend::new(handle), context, defaults, load_ms }))
}

/// The prefix cache of an engine that runs GUI tasks: a task's conversation keeps several
/// screenshots (a 1920x1080 one is ~2,000 tokens; the 2B model's KV is 112 KiB a token), and
/// each step reuses the previous step's prompt only if its KV fits. 1 GiB (the server's
/// default) held four steps of a 2B task on 1080p screens; this holds a task's whole context.
pub const TASK_PREFIX_CACHE_BYTES: usize = 4 << 30;

/// [`open`] configured for GUI tasks ([`TASK_PREFIX_CACHE_BYTES`]), as any [`Backend`].
#[allow(dead_code)] // used by `do`, which headless builds (no `os` feature) leave out
pub fn open_backend(args: &BackendArgs, model: Option<&Path>, runtime: &RuntimeArgs) -> anyhow::Result<Arc<dyn Backend>> {
    let cfg = EngineConfig { prefix_cache_bytes: TASK_PREFIX_CACHE_BYTES, ..EngineConfig::default() };
    Ok(match open(args, model, runtime, cfg)? {
        Opened::Local(l) => Arc::new(l.backend),
        Opened::Remote(r) => Arc::new(r),
    })
}
