//! `screenpilot serve`: the OpenAI-compatible HTTP API over the engine (caches, queue, batching).

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use screenpilot_engine::intake::{ImageLimits, ImagePolicy};
use screenpilot_engine::{Engine, EngineConfig, EngineHandle, ServeConfig};

use crate::args::ServeArgs;
use crate::load::load;

pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut serve_cfg = serve_config(&a);
    let addr = serve_cfg.addr;
    if !addr.ip().is_loopback() && serve_cfg.api_key.is_none() {
        anyhow::bail!("refusing to listen on {addr} without --api-key: anyone on the network could use it");
    }
    // A missing --allow-local-files folder fails now, not after the model has loaded.
    ImagePolicy::new(serve_cfg.image_limits, &serve_cfg.allowed_dirs, serve_cfg.image_timeout)?;
    let l = load(&a.model)?;
    let cfg = engine_config(&a);
    serve_cfg.sampling_defaults = l.defaults.clone();
    serve_cfg.model_name = a.model_name.clone().unwrap_or_else(|| {
        l.folder.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "qwen3-vl".into())
    });
    let engine = Engine::new(l.model, l.tok, l.preprocess, cfg).with_video(l.folder.video.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let handle = EngineHandle::spawn(engine)?;
        eprintln!("screenpilot: serving {} on http://{addr}/v1 (model loaded in {:.0} ms)", serve_cfg.model_name, l.load_ms);
        screenpilot_engine::serve(serve_cfg, handle).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The engine's settings from the flags.
fn engine_config(a: &ServeArgs) -> EngineConfig {
    let mut cfg = EngineConfig {
        queue_capacity: a.queue,
        vision_cache_bytes: a.vision_cache_mib << 20,
        prefix_cache_bytes: a.prefix_cache_mib << 20,
        max_batch: a.max_batch.max(1),
        max_active: a.max_active.max(a.max_batch).max(1),
        ..EngineConfig::default()
    };
    // The engine lowers the cap to the model's context length in any case.
    if let Some(cap) = a.max_tokens_cap {
        cfg.limits.max_tokens = cap;
    }
    cfg
}

/// The server's settings from the flags (the model name is filled in once the model is loaded).
fn serve_config(a: &ServeArgs) -> ServeConfig {
    ServeConfig {
        addr: SocketAddr::new(a.host, a.port),
        api_key: a.api_key.clone().or_else(|| std::env::var("SCREENPILOT_API_KEY").ok()).filter(|k| !k.is_empty()),
        allowed_dirs: a.allow_local_files.clone(),
        allowed_hosts: a.allowed_host.clone(),
        image_limits: ImageLimits {
            max_pixels: a.max_image_pixels,
            max_side: a.max_image_side,
            max_file_bytes: a.max_image_file_mib.saturating_mul(1 << 20),
        },
        max_connections: a.max_connections.max(1),
        header_read_timeout: Duration::from_secs(a.header_timeout_s.max(1)),
        body_read_timeout: Duration::from_secs(a.body_timeout_s.max(1)),
        ..ServeConfig::default()
    }
}

/// Default bind address: loopback only.
pub fn default_host() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn parse(extra: &[&str]) -> ServeConfig {
        let argv = [&["screenpilot", "serve", "--model", "m"][..], extra].concat();
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Serve(a)) => serve_config(&a),
            other => panic!("not a serve command: {other:?}"),
        }
    }

    #[test]
    fn local_files_are_off_unless_folders_are_named_and_limits_come_from_flags() {
        let d = parse(&[]);
        assert!(d.allowed_dirs.is_empty() && d.allowed_hosts.is_empty());
        assert_eq!(d.image_limits, ImageLimits::default());
        let c = parse(&[
            "--allow-local-files",
            "/a",
            "--allow-local-files",
            "/b",
            "--allowed-host",
            "pilot.lan",
            "--max-image-pixels",
            "1000",
            "--max-image-side",
            "50",
            "--max-image-file-mib",
            "2",
        ]);
        assert_eq!(c.allowed_dirs, vec![std::path::PathBuf::from("/a"), "/b".into()]);
        assert_eq!(c.allowed_hosts, vec!["pilot.lan".to_string()]);
        assert_eq!(c.image_limits, ImageLimits { max_pixels: 1000, max_side: 50, max_file_bytes: 2 << 20 });
    }

    #[test]
    fn connection_and_scheduling_limits_come_from_flags() {
        let d = parse(&[]);
        assert_eq!((d.max_connections, d.header_read_timeout.as_secs(), d.body_read_timeout.as_secs()), (256, 10, 60));
        let c = parse(&["--max-connections", "3", "--header-timeout-s", "2", "--body-timeout-s", "5"]);
        assert_eq!((c.max_connections, c.header_read_timeout.as_secs(), c.body_read_timeout.as_secs()), (3, 2, 5));
        let argv = ["screenpilot", "serve", "--model", "m", "--max-tokens-cap", "100", "--max-batch", "2", "--max-active", "1"];
        let Ok(Command::Serve(a)) = Cli::try_parse_from(argv).map(|c| c.command) else { panic!("not serve") };
        let e = engine_config(&a);
        assert_eq!((e.limits.max_tokens, e.max_batch, e.max_active), (100, 2, 2));
    }
}
