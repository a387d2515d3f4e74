//! The server under clients that misbehave over time (issue 17, findings 3 and 6): a streaming
//! client that stops reading stops its generation, a client that leaves while its request is
//! queued costs no prefill, and a newcomer's first token does not wait for others' long answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use screenpilot_engine::{bind, serve_on, EngineConfig, EngineHandle, ServeConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const LIMIT: Duration = Duration::from_secs(120);

struct Server {
    addr: SocketAddr,
    handle: EngineHandle,
    _stop: oneshot::Sender<()>,
}

async fn start(engine_cfg: EngineConfig) -> Server {
    let handle = EngineHandle::spawn(engine(engine_cfg)).unwrap();
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, ServeConfig::default(), handle.clone(), async move {
        stopped.await.ok();
    }));
    Server { addr, handle, _stop: stop }
}

fn body(question: &str, max_tokens: usize, stream: bool) -> String {
    serde_json::json!({"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
                       "stream": stream, "ignore_eos": true})
    .to_string()
}

/// Sends a chat request on a new connection and returns the connection, unread.
async fn send(addr: SocketAddr, body: &str) -> TcpStream {
    send_with_receive_buffer(addr, body, None).await
}

/// [`send`] from a socket whose receive buffer is fixed at `rcvbuf` bytes (the kernel otherwise
/// grows it, here up to 32 MB, and a client that stops reading still takes that much).
async fn send_with_receive_buffer(addr: SocketAddr, body: &str, rcvbuf: Option<u32>) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).unwrap();
    }
    let mut s = sock.connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    s
}

/// Reads lines until one starts with `data: {` (the first SSE chunk).
async fn first_chunk(s: TcpStream) -> BufReader<TcpStream> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        let n = tokio::time::timeout(LIMIT, r.read_line(&mut line)).await.expect("the stream starts").unwrap();
        assert!(n > 0, "the connection closed before the stream started");
        if line.starts_with("data: {") {
            return r;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_stops_reading_stops_generating() {
    let srv = start(EngineConfig { subscriber_buffer: 64, ..Default::default() }).await;
    // The client reads the start of the stream, then nothing more, and keeps the socket open.
    // Its kernel buffer (16 KiB), the server's (32 KiB), hyper's queue and the engine's 64
    // events hold a few hundred tokens; then the answer must stop.
    let stream = send_with_receive_buffer(srv.addr, &body("Go on forever.", 4000, true), Some(16 << 10)).await;
    let _reader = first_chunk(stream).await;
    tokio::time::timeout(LIMIT, srv.handle.wait_for(|s| s.cancelled == 1)).await.unwrap_or_else(|_| {
        panic!("the answer of a client that stopped reading was not stopped: {:?}", srv.handle.stats())
    });
    let stats = srv.handle.stats();
    assert_eq!(stats.stalled, 1);
    assert!(stats.decode_steps < 2000, "stopped well before its 4000 tokens: {} steps", stats.decode_steps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_queued_costs_no_prefill() {
    let srv = start(EngineConfig { max_batch: 1, max_active: 1, ..Default::default() }).await;
    let long = first_chunk(send(srv.addr, &body("A long answer.", 3000, true)).await).await;
    // Queued behind the long answer, then the client goes away.
    let gone = send(srv.addr, &body("Never mind.", 8, false)).await;
    tokio::time::timeout(LIMIT, srv.handle.wait_for(|s| s.submitted == 2)).await.expect("the second was queued");
    drop(gone);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(long);
    tokio::time::timeout(LIMIT, srv.handle.wait_for(|s| s.in_flight == 0)).await.expect("both end");
    let stats = srv.handle.stats();
    assert_eq!(stats.started, 1, "the departed client's request was prefilled: {stats:?}");
    assert_eq!(stats.cancelled, 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_long_streams_do_not_delay_a_newcomers_answer() {
    let srv = start(EngineConfig::default()).await;
    let mut readers = Vec::new();
    for i in 0..8 {
        let mut r = first_chunk(send(srv.addr, &body(&format!("Long answer {i}."), 4000, true)).await).await;
        // These clients keep reading their long answers.
        readers.push(tokio::spawn(async move {
            let mut line = String::new();
            while r.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                line.clear();
            }
        }));
    }
    let (status, text) = tokio::time::timeout(
        LIMIT,
        http(srv.addr, "POST", "/v1/chat/completions", &[], body("Short question.", 4, false).as_bytes()),
    )
    .await
    .expect("the newcomer is answered");
    assert_eq!(status, 200, "{text}");
    // The reply leaves before the worker counts the request as finished: wait for the count.
    tokio::time::timeout(LIMIT, srv.handle.wait_for(|s| s.finished >= 1)).await.expect("the newcomer is counted as finished");
    let stats = srv.handle.stats();
    assert!(stats.decode_steps < 8 * 4000, "answered before the long ones ended: {stats:?}");
    assert_eq!(stats.finished, 1, "only the newcomer finished: {stats:?}");
    for r in readers {
        r.abort();
    }
}
