//! An OpenAI-compatible HTTP API over an [`EngineHandle`]: `POST /v1/chat/completions`
//! (streaming as server-sent events or not) and `GET /v1/models`. Binds 127.0.0.1 by default;
//! with an API key set, requests without `Authorization: Bearer <key>` get 401. Every error is
//! a JSON body `{"error": {"message", "type"}}`; this module alone decides HTTP statuses
//! (a full queue is 429, a stopped engine 503).

mod chat;
mod parse;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::error::EngineError;
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
    /// Whether image URLs may name local files (`file://...` or a plain path).
    pub allow_local_files: bool,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8000)),
            api_key: None,
            model_name: "qwen3-vl".into(),
            max_body_bytes: 64 << 20,
            allow_local_files: true,
            default_max_tokens: 512,
        }
    }
}

pub(crate) struct AppState {
    pub(crate) cfg: ServeConfig,
    pub(crate) engine: EngineHandle,
    pub(crate) next_id: AtomicU64,
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
            EngineError::InvalidRequest(_) | EngineError::InvalidImage(_) | EngineError::ContextLength { .. } => {
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

/// Checks the bearer token when one is configured.
pub(crate) fn authorize(cfg: &ServeConfig, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &cfg.api_key else { return Ok(()) };
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.trim().as_bytes(), key.as_bytes()) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing or wrong API key: send `Authorization: Bearer <key>`",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The API's routes.
pub fn router(cfg: ServeConfig, engine: EngineHandle) -> Router {
    let limit = cfg.max_body_bytes;
    let state = Arc::new(AppState { cfg, engine, next_id: AtomicU64::new(1) });
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(chat::models))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
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

/// Serves on an already bound listener until `shutdown` completes.
pub async fn serve_on(
    listener: TcpListener,
    cfg: ServeConfig,
    engine: EngineHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EngineError> {
    axum::serve(listener, router(cfg, engine))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| EngineError::Io(format!("server failed: {e}")))
}

/// Binds `cfg.addr` and serves until the process ends.
pub async fn serve(cfg: ServeConfig, engine: EngineHandle) -> Result<(), EngineError> {
    let listener = bind(cfg.addr).await?;
    serve_on(listener, cfg, engine, std::future::pending()).await
}
