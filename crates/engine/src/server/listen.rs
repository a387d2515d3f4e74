//! The accept loop: HTTP/1.1 connections served by hyper with the timeouts `axum::serve` lacks.
//! A connection must send its request head within `header_read_timeout` (hyper restarts that
//! timer when a kept-alive connection waits for its next request, so it is also the idle
//! keep-alive timeout); at most `max_connections` are open at once (further ones wait in the
//! kernel's backlog until one closes); each socket's send buffer is small and fixed, so that a
//! client that stops reading stalls its stream soon (and the engine then stops its request);
//! an `accept` error such as EMFILE (out of file
//! descriptors) is logged and retried after a pause instead of ending the server. Each request
//! carries the local address its connection arrived on ([`LocalAddr`]) for the Host check.

use std::convert::Infallible;
use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower_service::Service;

use crate::error::EngineError;

/// The local address a request's connection was accepted on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalAddr(pub(crate) SocketAddr);

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// The socket send buffer of every connection (the kernel doubles it for its bookkeeping).
const SEND_BUFFER_BYTES: usize = 32 << 10;

/// Pause after an `accept` error that is not about one connection (e.g. EMFILE): retrying at
/// once would spin, and descriptors free up as other connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets every open
/// connection finish its current response, and returns once all are closed.
pub(crate) async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EngineError> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        // A free slot first: over the cap, connections stay unaccepted in the backlog.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            s = slots.clone().acquire_owned() => s.map_err(|_| EngineError::Io("connection slots closed".into()))?,
        };
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    eprintln!("screenpilot: accept failed ({e}); retrying in {ACCEPT_BACKOFF:?}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let local = stream.local_addr().ok().map(LocalAddr);
        stream.set_nodelay(true).ok();
        // A fixed, small send buffer (the kernel would otherwise grow it to megabytes): a
        // client that stops reading then blocks the response within a few hundred tokens, the
        // engine's buffer for it fills, and its request stops.
        socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER_BYTES).ok();
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(Body::new);
            if let Some(l) = local {
                req.extensions_mut().insert(l);
            }
            // Router is always ready (its poll_ready returns Ready), so calling a clone is sound.
            let mut app = app.clone();
            async move { Ok::<_, Infallible>(app.call(req).await.unwrap_or_else(|never| match never {})) }
        });
        let http = http.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            // Errors here are the client's doing (reset, timeout, bad request head): nothing
            // to report, the connection simply ends.
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    stop_tx.send(true).ok();
    // Every connection holds a slot until it ends: all slots back means all are closed.
    let _ = slots.acquire_many(u32::try_from(max).unwrap_or(u32::MAX)).await;
    Ok(())
}

/// Errors about one incoming connection only (it was reset before being accepted).
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset)
}
