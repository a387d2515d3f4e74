//! The server under hostile input (issue 17, findings 1-5 and 9): local files only from allowed
//! folders and only regular ones, errors that do not tell which paths exist, JSON-only POSTs,
//! Host / Origin checks against DNS rebinding and cross-site pages, the API key checked before
//! the body is read, connection timeouts and a connection cap, decompression bombs refused
//! from the header, unsupported request fields refused by name. Every exchange runs under a
//! timeout, so a hang fails the test instead of stalling it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use screenpilot_engine::ServeConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const QUICK: Duration = Duration::from_secs(5);


/// A folder of this test's own under the temp dir, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("screenpilot-sec-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn image_body(url: &str) -> String {
    serde_json::json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What?"}]}],
        "max_tokens": 1})
    .to_string()
}

/// POSTs a chat body; panics if no answer comes within [`QUICK`].
async fn chat(addr: SocketAddr, body: &str) -> (u16, Value) {
    let (status, text) = tokio::time::timeout(QUICK, http(addr, "POST", "/v1/chat/completions", &[], body.as_bytes()))
        .await
        .unwrap_or_else(|_| panic!("no answer within {QUICK:?} to {}", &body[..body.len().min(200)]));
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

fn message(v: &Value) -> String {
    v["error"]["message"].as_str().unwrap_or_default().to_string()
}

/// Reads one response head (and nothing more) from `s`; None when the server closed first.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => buf.push(byte[0]),
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Whether the server closes `s` within `within` (reading and discarding whatever it sends).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_files_only_from_allowed_folders_and_only_regular_ones() {
    let dir = scratch("allowed");
    let outside = scratch("outside");
    std::fs::write(dir.join("ok.png"), png_bytes(3, 64, 48)).unwrap();
    std::fs::write(outside.join("secret.png"), png_bytes(4, 64, 48)).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(dir.join("pipe")).status().unwrap().success());
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd.png")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.png")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.png"), dir.join("link-out.png")).unwrap();
    std::os::unix::fs::symlink(dir.join("pipe"), dir.join("link-pipe.png")).unwrap();
    let s = start(ServeConfig { allowed_dirs: vec![dir.clone()], ..Default::default() }).await;
    let d = dir.display();
    let refused = [
        "file:///etc/passwd".to_string(),
        "/etc/passwd".into(),
        format!("{d}/../{}/secret.png", outside.file_name().unwrap().to_string_lossy()),
        format!("file://{d}/passwd.png"),
        format!("{d}/link-out.png"),
        format!("{d}/pipe"),
        format!("{d}/link-pipe.png"),
        "/dev/zero".into(),
        format!("{d}/zero.png"),
        "/proc/self/fd/1".into(),
        "ok.png".into(),
    ];
    for url in &refused {
        let t = Instant::now();
        let (status, v) = chat(s.addr, &image_body(url)).await;
        assert_eq!(status, 400, "{url}: {v}");
        assert!(t.elapsed() < Duration::from_secs(2), "{url} took {:?}", t.elapsed());
    }
    // Whether a path outside exists must not show: same answer, up to the path itself.
    let existing = outside.join("secret.png");
    let missing = outside.join("missing.png");
    let (_, a) = chat(s.addr, &image_body(&existing.display().to_string())).await;
    let (_, b) = chat(s.addr, &image_body(&missing.display().to_string())).await;
    let (_, c) = chat(s.addr, &image_body("/etc/shadow-does-not-exist")).await;
    let shape = |v: &Value, p: &str| (v["error"]["type"].clone(), message(v).replace(p, "PATH"));
    assert_eq!(shape(&a, &existing.display().to_string()), shape(&b, &missing.display().to_string()));
    assert_eq!(shape(&a, &existing.display().to_string()), shape(&c, "/etc/shadow-does-not-exist"));
    // The allowed file works, through a plain path and a file:// URL, after all of the above.
    for url in [format!("{d}/ok.png"), format!("file://{d}/ok.png")] {
        let (status, v) = chat(s.addr, &image_body(&url)).await;
        assert_eq!(status, 200, "{url}: {v}");
    }
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&outside).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_no_local_file_is_read() {
    let dir = scratch("default");
    std::fs::write(dir.join("ok.png"), png_bytes(5, 32, 32)).unwrap();
    let s = start(ServeConfig::default()).await;
    let (status, v) = chat(s.addr, &image_body(&dir.join("ok.png").display().to_string())).await;
    assert_eq!(status, 400, "{v}");
    assert!(message(&v).contains("not allowed"), "{v}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_json_posts_from_this_host_and_no_foreign_origin() {
    let cfg = ServeConfig { allowed_hosts: vec!["pilot.lan".into()], ..Default::default() };
    let s = start(cfg).await;
    let body = br#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":1}"#;
    let port = s.addr.port();
    let pilot = format!("pilot.lan:{port}");
    let own_origin = format!("http://localhost:{port}");
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case> = vec![
        ("POST", "/v1/chat/completions", vec![("Content-Type", "text/plain")], 415),
        ("POST", "/v1/chat/completions", vec![("Content-Type", "application/x-www-form-urlencoded")], 415),
        ("POST", "/v1/chat/completions", vec![("Content-Type", "application/json; charset=utf-8")], 200),
        ("GET", "/v1/models", vec![("Host", "evil.example")], 403),
        ("GET", "/v1/models", vec![("Host", "evil.example:80")], 403),
        ("GET", "/v1/models", vec![("Host", "localhost:1")], 403),
        ("GET", "/v1/models", vec![("Host", pilot.as_str())], 200),
        ("GET", "/v1/models", vec![("Origin", "https://evil.example")], 403),
        ("GET", "/v1/models", vec![("Origin", "null")], 403),
        ("GET", "/v1/models", vec![("Origin", own_origin.as_str())], 200),
        (
            "POST",
            "/v1/chat/completions",
            vec![("Origin", "http://evil.example"), ("Content-Type", "application/json")],
            403,
        ),
    ];
    for (method, path, headers, want) in cases {
        let (status, text) = tokio::time::timeout(QUICK, raw_http(s.addr, method, path, &headers, body)).await.unwrap();
        assert_eq!(status, want, "{method} {path} {headers:?}: {text}");
        if want != 200 {
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert!(!message(&v).is_empty(), "{text}");
        }
    }
}

/// Like `common::http`, but `headers` may replace Host and nothing is added.
async fn raw_http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    if method == "POST" {
        s.write_all(body).await.unwrap();
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_before_the_body_and_a_missing_body_times_out() {
    let cfg =
        ServeConfig { api_key: Some("right".into()), body_read_timeout: Duration::from_secs(1), ..Default::default() };
    let s = start(cfg).await;
    let head = |key: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {key}\r\nContent-Length: 60000000\r\n\r\n",
            s.addr
        )
    };
    // 60 MB announced, none sent: the answer must not wait for it.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(head("wrong").as_bytes()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), read_head(&mut c)).await;
    let got = got.expect("the server waited for the body before checking the key").unwrap_or_default();
    assert!(got.starts_with("HTTP/1.1 401"), "{got}");
    // The right key, and the body never comes: 408 after the body timeout, not a hang.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(head("right").as_bytes()).await.unwrap();
    c.write_all(b"{\"messages\":").await.unwrap();
    let t = Instant::now();
    let got = tokio::time::timeout(QUICK, read_head(&mut c)).await.expect("no body timeout").unwrap_or_default();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(t.elapsed() >= Duration::from_millis(900), "answered before the timeout: {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_sent_and_idle_connections_are_closed_and_the_cap_holds() {
    let cfg = ServeConfig { header_read_timeout: Duration::from_secs(1), max_connections: 4, ..Default::default() };
    let s = start(cfg).await;
    let bound = Duration::from_secs(4);
    // Sends nothing.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    // Half a request head.
    let mut half = TcpStream::connect(s.addr).await.unwrap();
    half.write_all(format!("GET /v1/models HTTP/1.1\r\nHost: {}\r\nX-Slow: ", s.addr).as_bytes()).await.unwrap();
    // One full request, then kept alive and idle.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    idle.write_all(format!("GET /v1/models HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr).as_bytes()).await.unwrap();
    let head = tokio::time::timeout(QUICK, read_head(&mut idle)).await.unwrap().unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for (name, c) in [("silent", &mut silent), ("half-sent", &mut half), ("idle keep-alive", &mut idle)] {
        assert!(closed_within(c, bound).await, "the {name} connection was not closed within {bound:?}");
    }
    // Three times the cap of silent connections: later ones wait, none breaks the server.
    let mut hogs = Vec::new();
    for _ in 0..12 {
        hogs.push(TcpStream::connect(s.addr).await.unwrap());
    }
    let t = Instant::now();
    let (status, text) = tokio::time::timeout(Duration::from_secs(15), http(s.addr, "GET", "/v1/models", &[], &[]))
        .await
        .expect("the server stopped answering after more connections than its cap");
    assert_eq!(status, 200, "{text}");
    eprintln!("answered after {:?} behind 12 silent connections (cap 4, header timeout 1 s)", t.elapsed());
    drop(hogs);
    let (status, _) = tokio::time::timeout(QUICK, http(s.addr, "GET", "/v1/models", &[], &[])).await.unwrap();
    assert_eq!(status, 200);
}

/// A valid 1-bit greyscale PNG of `side` x `side` zeros, streamed row by row.
fn bomb(side: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, side, side);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::One);
    enc.set_compression(png::Compression::High);
    let mut header = enc.write_header().unwrap();
    let mut w = header.stream_writer().unwrap();
    let row = vec![0u8; side.div_ceil(8) as usize];
    for _ in 0..side {
        std::io::Write::write_all(&mut w, &row).unwrap();
    }
    w.finish().unwrap();
    header.finish().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_is_refused_at_once_and_the_server_keeps_answering() {
    let png = tokio::task::spawn_blocking(|| bomb(40_000)).await.unwrap();
    let url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&png));
    let s = start(ServeConfig::default()).await;
    let t = Instant::now();
    let (status, v) = chat(s.addr, &image_body(&url)).await;
    assert_eq!(status, 400, "{v}");
    assert!(message(&v).contains("40000x40000"), "{v}");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?} for a {} byte PNG", t.elapsed(), png.len());
    let small =
        format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png_bytes(9, 40, 30)));
    let (status, v) = chat(s.addr, &image_body(&small)).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_fields_get_400_naming_them() {
    let s = start(ServeConfig::default()).await;
    for (extra, name) in [
        (r#""logprobs":true"#, "logprobs"),
        (r#""top_logprobs":2"#, "top_logprobs"),
        (r#""logit_bias":{"7":-100}"#, "logit_bias"),
        (r#""presence_penalty":1"#, "presence_penalty"),
        (r#""frequency_penalty":0.3"#, "frequency_penalty"),
        (r#""response_format":{"type":"json_schema"}"#, "response_format"),
        (r#""tools":[{"type":"retrieval"}]"#, "tools[0]"),
        (r#""tool_choice":"required""#, "tool_choice"),
        (r#""functions":[{"name":"click"}]"#, "functions"),
        (r#""function_call":{"name":"click"}"#, "function_call"),
        (r#""n":3"#, "n"),
        (r#""best_of":2"#, "best_of"),
        (r#""audio":{"format":"wav"}"#, "audio"),
        (r#""modalities":["audio"]"#, "modalities"),
        (r#""prediction":{"type":"content"}"#, "prediction"),
        (r#""unheard_of":true"#, "unheard_of"),
        (r#""repetition_penalty":0"#, "repetition_penalty"),
        (r#""repetition_penalty":"high""#, "repetition_penalty"),
    ] {
        let body = format!(r#"{{"messages":[{{"role":"user","content":"Hi"}}],"max_tokens":1,{extra}}}"#);
        let (status, v) = chat(s.addr, &body).await;
        assert_eq!(status, 400, "{extra}: {v}");
        assert!(message(&v).contains(&format!("`{name}`")), "{extra}: {v}");
    }
    let body = r#"{"messages":[{"role":"user","content":"Hi","name":"ann"}],"max_tokens":1,"logprobs":false,
                  "presence_penalty":0,"user":"u","response_format":{"type":"text"},"repetition_penalty":1.1}"#;
    let (status, v) = chat(s.addr, body).await;
    assert_eq!(status, 200, "{v}");
}
