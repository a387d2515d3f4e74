//! An OpenAI-compatible HTTP API over an [`EngineHandle`]: `POST /v1/chat/completions`
//! (streaming as server-sent events or not) and `GET /v1/models`. Binds 127.0.0.1 by default;
//! with an API key set, requests without `Authorization: Bearer <key>` get 401. Every error is
//! a JSON body `{"error": {"message", "type"}}`; this module alone decides HTTP statuses
//! (a full queue is 429, a stopped engine 503).
//!
//! Hardened for a hostile network and hostile web pages (see [`guard`] for the checks made on
//! every request head, [`listen`] for connection timeouts and limits): no local files unless
//! [`ServeConfig::allowed_dirs`] names folders, images read and decoded off the engine thread
//! under [`ImageLimits`] ([`crate::intake`]), unsupported request fields refused.
//!
//! Function calling as OpenAI's API has it ([`tools`]): `tools` go into the prompt, tool
//! results and earlier calls into the conversation, and the answer's `<tool_call>` blocks come
//! back as `tool_calls` with `finish_reason` `"tool_calls"`.

mod chat;
mod guard;
mod listen;
mod parse;
mod tools;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::error::EngineError;
use crate::intake::{ImageLimits, ImagePolicy, VideoLimits, DEFAULT_IMAGE_TIMEOUT, DEFAULT_VIDEO_TIMEOUT};
use crate::load::GenerationDefaults;
use crate::service::EngineHandle;

/// How the HTTP server is set up.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Default 127.0.0.1:8000.
    pub addr: SocketAddr,
    /// When set, every request needs `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    /// The model id reported by `/v1/models` and in responses.
    pub model_name: String,
    /// Largest request body accepted (base64 images included).
    pub max_body_bytes: usize,
    /// Folders whose regular files image URLs may name (`file:///...` or an absolute path),
    /// compared after canonicalisation (no `..`, no symlink out). Empty (the default): no
    /// local files at all.
    pub allowed_dirs: Vec<PathBuf>,
    /// Host names (`name` or `name:port`) accepted in `Host` and `Origin` besides this
    /// server's address, `localhost`, `127.0.0.1` and `[::1]`.
    pub allowed_hosts: Vec<String>,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    /// Pixel, side and size bounds of every image (checked before decoding).
    pub image_limits: ImageLimits,
    /// Time to read and decode one request's images.
    pub image_timeout: Duration,
    /// Bounds of every video (file size, frame size, frames; checked while decoding).
    pub video_limits: VideoLimits,
    /// Time to read and decode one request's videos.
    pub video_timeout: Duration,
    /// Time a connection has to send a request head; also how long a kept-alive connection
    /// may sit idle between requests.
    pub header_read_timeout: Duration,
    /// Time a request has to send its whole body.
    pub body_read_timeout: Duration,
    /// Connections open at once; more wait until one closes.
    pub max_connections: usize,
    /// The model folder's generation_config.json sampling: what a request that names no sampling
    /// parameter gets (as `ask` and the app do), each given parameter taking precedence.
    pub sampling_defaults: GenerationDefaults,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8000)),
            api_key: None,
            model_name: "qwen3-vl".into(),
            max_body_bytes: 64 << 20,
            allowed_dirs: Vec::new(),
            allowed_hosts: Vec::new(),
            default_max_tokens: 512,
            image_limits: ImageLimits::default(),
            image_timeout: DEFAULT_IMAGE_TIMEOUT,
            video_limits: VideoLimits::default(),
            video_timeout: DEFAULT_VIDEO_TIMEOUT,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 256,
            sampling_defaults: GenerationDefaults::default(),
        }
    }
}

pub(crate) struct AppState {
    pub(crate) cfg: ServeConfig,
    pub(crate) engine: EngineHandle,
    pub(crate) next_id: AtomicU64,
    /// `cfg.allowed_dirs` canonicalised, with the image and video limits.
    pub(crate) images: ImagePolicy,
    /// The address the listener is bound to (its real port when `cfg.addr` asked for port 0).
    pub(crate) bound: SocketAddr,
}

/// An error response: status, OpenAI-style type and message.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into() }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub(crate) fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": null}})
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::InvalidRequest(_)
            | EngineError::InvalidImage(_)
            | EngineError::InvalidVideo(_)
            | EngineError::ContextLength { .. } => {
                StatusCode::BAD_REQUEST
            }
            EngineError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            EngineError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.error_type(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// Checks the bearer token when one is configured (from [`guard`], before the body is read).
pub(crate) fn authorize(cfg: &ServeConfig, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &cfg.api_key else { return Ok(()) };
    match bearer_matches(headers, key) {
        true => Ok(()),
        false => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing or wrong API key: send `Authorization: Bearer <key>`",
        )),
    }
}

/// Whether `headers` carry `Authorization: Bearer <key>`, compared in constant time (this
/// server's API key, the MCP server's token).
pub fn bearer_matches(headers: &HeaderMap, key: &str) -> bool {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), key.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The API's routes, behind [`guard`]'s checks. Fails when an allowed folder cannot be
/// canonicalised.
pub fn router(cfg: ServeConfig, engine: EngineHandle) -> Result<Router, EngineError> {
    let limit = cfg.max_body_bytes;
    let images =
        ImagePolicy::new(cfg.image_limits, &cfg.allowed_dirs, cfg.image_timeout)?.with_videos(cfg.video_limits, cfg.video_timeout);
    let bound = cfg.addr;
    let state = Arc::new(AppState { cfg, engine, next_id: AtomicU64::new(1), images, bound });
    Ok(Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(chat::models))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route: see /v1/chat/completions and /v1/models")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method not allowed on this route")
}

/// Binds a listener (port 0 picks a free port; see `local_addr`).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, EngineError> {
    TcpListener::bind(addr).await.map_err(|e| EngineError::Io(format!("cannot listen on {addr}: {e}")))
}

/// Serves on an already bound listener until `shutdown` completes, then waits for open
/// connections to finish.
pub async fn serve_on(
    listener: TcpListener,
    mut cfg: ServeConfig,
    engine: EngineHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EngineError> {
    // The Host check needs the real port when the caller bound port 0.
    cfg.addr = listener.local_addr().map_err(|e| EngineError::Io(format!("listener has no address: {e}")))?;
    let limits =
        listen::ConnLimits { header_read_timeout: cfg.header_read_timeout, max_connections: cfg.max_connections };
    let app = router(cfg, engine)?;
    listen::serve_connections(listener, app, limits, shutdown).await
}

/// Binds `cfg.addr` and serves until the process ends.
pub async fn serve(cfg: ServeConfig, engine: EngineHandle) -> Result<(), EngineError> {
    let listener = bind(cfg.addr).await?;
    serve_on(listener, cfg, engine, std::future::pending()).await
}

/// Parses a chat-completions body exactly as `POST /v1/chat/completions` does, before
/// validation ([`crate::ValidRequest::new`]). For the fuzz targets (fuzz/); not a stable API.
#[doc(hidden)]
pub fn parse_chat_request(bytes: &[u8], cfg: &ServeConfig) -> Result<crate::request::Request, String> {
    parse::parse_body(bytes, cfg).map(|(_, request)| request)
}
