//! The two transports: stdio (a host starts `screenpilot mcp` and talks over its stdin and
//! stdout) and streamable HTTP at `/mcp`. HTTP binds to loopback unless told otherwise; a
//! bearer token, when set, is checked on every request before rmcp sees it, and an address
//! other than loopback is refused without one. rmcp's own Host check (DNS rebinding) stays on
//! for loopback, and any request with an `Origin` (a browser's) is refused.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
pub use tokio_util::sync::CancellationToken;

use screenpilot_engine::server::bearer_matches;

use super::core::McpCore;
use super::handler::ScreenServer;
use crate::error::{DesktopError, Result};

fn internal(e: impl std::fmt::Display) -> DesktopError {
    DesktopError::Internal(format!("MCP: {e}"))
}

/// Serves one client over stdin/stdout until it disconnects.
pub async fn serve_stdio(core: Arc<McpCore>) -> Result<()> {
    let running = match ScreenServer::new(core).serve(rmcp::transport::stdio()).await {
        Ok(r) => r,
        // A 2026-07-28 client never sends `initialize`; its session ends when stdin closes.
        Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => return Ok(()),
        Err(e) => return Err(internal(e)),
    };
    running.waiting().await.map_err(internal)?;
    Ok(())
}

/// Refuses an HTTP address other than loopback without a token (anyone on the network could
/// otherwise look at the screen).
pub fn check_http_address(addr: SocketAddr, token: Option<&str>) -> Result<()> {
    if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(DesktopError::InvalidArgument(format!(
            "{addr} is reachable from other machines: set a token (--token or $SCREENPILOT_MCP_TOKEN) so that only your MCP clients can use it"
        )));
    }
    Ok(())
}

/// A bound HTTP server; [`HttpServer::run`] serves it.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    router: Router,
    /// Stops it.
    pub shutdown: CancellationToken,
}

impl HttpServer {
    /// Binds `addr` (port 0: any free port) for `core`, with an optional bearer `token`.
    pub async fn bind(core: Arc<McpCore>, addr: SocketAddr, token: Option<String>) -> Result<Self> {
        check_http_address(addr, token.as_deref())?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| DesktopError::InvalidArgument(format!("cannot listen on {addr}: {e}")))?;
        let shutdown = CancellationToken::new();
        // MCP clients are programs, not web pages: a request that carries an `Origin` comes from
        // a browser (a page driving the screen from another site) and is refused (403).
        let mut config = StreamableHttpServerConfig::default().enforce_origin_validation();
        config.cancellation_token = shutdown.child_token();
        if !addr.ip().is_loopback() {
            // Reached by other names than localhost; the token guards it instead.
            config = config.disable_allowed_hosts();
        }
        let service = StreamableHttpService::new(move || Ok(ScreenServer::new(core.clone())), Arc::new(LocalSessionManager::default()), config);
        let token = Arc::new(token.filter(|t| !t.is_empty()));
        let router = Router::new().nest_service("/mcp", service).layer(middleware::from_fn_with_state(token, require_token));
        Ok(Self { listener, router, shutdown })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(internal)
    }

    /// Serves until [`HttpServer::shutdown`] is cancelled.
    pub async fn run(self) -> Result<()> {
        let stop = self.shutdown.clone();
        axum::serve(self.listener, self.router).with_graceful_shutdown(async move { stop.cancelled_owned().await }).await.map_err(internal)
    }
}

async fn require_token(State(token): State<Arc<Option<String>>>, request: Request, next: Next) -> Response {
    if let Some(t) = token.as_deref() {
        if !bearer_matches(request.headers(), t) {
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "missing or wrong bearer token").into_response();
        }
    }
    next.run(request).await
}
