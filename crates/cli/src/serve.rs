//! `screenpilot serve`: the OpenAI-compatible HTTP API over the engine (caches, queue, batching).

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use screenpilot_engine::{Engine, EngineConfig, EngineHandle, ServeConfig};

use crate::args::ServeArgs;
use crate::load::load;

pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let l = load(&a.model)?;
    let mut cfg = EngineConfig::default();
    cfg.queue_capacity = a.queue;
    cfg.vision_cache_bytes = a.vision_cache_mib << 20;
    cfg.prefix_cache_bytes = a.prefix_cache_mib << 20;
    let name = a.model_name.clone().unwrap_or_else(|| {
        l.folder.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "qwen3-vl".into())
    });
    let engine = Engine::new(l.model, l.tok, l.preprocess, cfg);
    let addr = SocketAddr::new(a.host, a.port);
    let serve_cfg = ServeConfig {
        addr,
        api_key: a.api_key.clone().or_else(|| std::env::var("SCREENPILOT_API_KEY").ok()).filter(|k| !k.is_empty()),
        model_name: name,
        ..ServeConfig::default()
    };
    if !addr.ip().is_loopback() && serve_cfg.api_key.is_none() {
        anyhow::bail!("refusing to listen on {addr} without --api-key: anyone on the network could use it");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let handle = EngineHandle::spawn(engine)?;
        eprintln!("screenpilot: serving {} on http://{addr}/v1 (model loaded in {:.0} ms)", serve_cfg.model_name, l.load_ms);
        screenpilot_engine::serve(serve_cfg, handle).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Default bind address: loopback only.
pub fn default_host() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
