//! Helpers shared by the engine's integration tests: the tiny random model, synthetic images,
//! requests, and a minimal HTTP/1.1 client for loopback.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use image::{DynamicImage, RgbImage};
use screenpilot_engine::{
    EngineHandle, Event, EventStream, FinishReason, ValidRequest,
    ChatMessage, ContentPart, Engine, EngineConfig, GenerationOptions, ImageSource, Request, Role,
};
use screenpilot_model::{DType, Device};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The tiny random model in f32 on the CPU.
pub fn engine(cfg: EngineConfig) -> Engine {
    let dir = fixtures().join("tiny");
    assert!(dir.join("tokenizer.json").is_file(), "run scripts/setup.sh to fetch the tokenizer");
    Engine::load(&dir, DType::F32, &Device::Cpu, cfg).expect("tiny model loads")
}

/// A deterministic pseudo-random RGB buffer.
pub fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

pub fn image_from(buf: Vec<u8>, w: u32, h: u32) -> ImageSource {
    ImageSource::Image(Arc::new(DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, buf).unwrap())))
}

/// A noisy `w` x `h` image that `seed` picks.
pub fn image(seed: u32, w: u32, h: u32) -> ImageSource {
    image_from(noise(seed, (w * h * 3) as usize), w, h)
}

pub fn png_bytes(seed: u32, w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_raw(w, h, noise(seed, (w * h * 3) as usize)).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub fn text(t: &str) -> ContentPart {
    ContentPart::Text(t.to_string())
}

pub fn img(src: &ImageSource) -> ContentPart {
    ContentPart::Image(src.clone())
}

pub fn user(parts: Vec<ContentPart>) -> ChatMessage {
    ChatMessage { role: Role::User, parts }
}

/// A request generating exactly `max_tokens` tokens (end tokens ignored).
pub fn request(messages: Vec<ChatMessage>, max_tokens: usize) -> Request {
    Request { messages, options: GenerationOptions { max_tokens, ignore_eos: true, ..Default::default() }, tools: Vec::new() }
}

/// A minimal HTTP/1.1 exchange over loopback: returns the status and the body.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    // The server refuses POSTs that are not declared JSON (415).
    if method == "POST" && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// How long a test waits for the engine before failing.
pub const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// A text question through the service's validation.
pub fn ask(h: &EngineHandle, question: &str, max_tokens: usize) -> ValidRequest {
    h.validate(request(vec![user(vec![text(question)])], max_tokens)).unwrap()
}

/// Every event until the stream ends.
pub async fn drain(mut s: EventStream) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(ev) = tokio::time::timeout(LIMIT, s.next()).await.expect("the engine answers") {
        out.push(ev);
    }
    out
}

pub fn finish(events: &[Event]) -> Option<FinishReason> {
    events.iter().find_map(|e| if let Event::Finished(f) = e { Some(*f) } else { None })
}

/// The OpenAI-compatible server over the tiny model on a free loopback port; it stops when the
/// value is dropped.
pub struct Server {
    pub addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub async fn start(cfg: screenpilot_engine::ServeConfig) -> Server {
    let handle = EngineHandle::spawn(engine(EngineConfig::default())).unwrap();
    let listener = screenpilot_engine::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(screenpilot_engine::serve_on(listener, cfg, handle, async move {
        stopped.await.ok();
    }));
    Server { addr, _stop: stop }
}
