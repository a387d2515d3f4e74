//! Videos through the OpenAI-compatible server, as vLLM takes them (`video_url` parts): a
//! `data:` URI and an allowed local file give the engine's own answer about the file; paths
//! outside the allowed folders are refused alike whether or not they exist; a file that is not a
//! video is one clear 400 and the server answers the next request; the decoder stops at the
//! server's video timeout.
#![cfg(feature = "video-files")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use screenpilot_engine::{ContentPart, EngineConfig, GenerationOptions, Request, ServeConfig, VideoSource};
use serde_json::Value;

/// Answers on the tiny model take a few seconds on a slow CPU.
const WAIT: Duration = Duration::from_secs(60);


fn clip(name: &str) -> PathBuf {
    fixtures().join("video_files").join(name)
}

fn data_uri(name: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(clip(name)).unwrap());
    format!("data:video/mp4;base64,{b64}")
}

const QUESTION: &str = "What happens in this clip?";

fn video_body(url: &str) -> String {
    serde_json::json!({"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": QUESTION}]}],
        "max_tokens": 4})
    .to_string()
}

async fn chat(addr: SocketAddr, body: &str) -> (u16, Value) {
    let (status, text) = tokio::time::timeout(WAIT, http(addr, "POST", "/v1/chat/completions", &[], body.as_bytes()))
        .await
        .unwrap_or_else(|_| panic!("no answer within {WAIT:?}"));
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

fn message(v: &Value) -> String {
    v["error"]["message"].as_str().unwrap_or_default().to_string()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("screenpilot-video-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The engine's own answer (greedy, 4 tokens) about the video file at `path`.
fn engine_answer(path: PathBuf) -> String {
    let mut e = engine(EngineConfig::default().without_caches());
    let r = Request {
        messages: vec![user(vec![ContentPart::Video(VideoSource::Path(path)), text(QUESTION)])],
        options: GenerationOptions { max_tokens: 4, ..Default::default() },
        tools: Vec::new(),
    };
    e.run(&e.validate(r).unwrap(), &mut |_| {}).unwrap().text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_uri_and_an_allowed_file_give_the_engines_answer() {
    let dir = scratch("allowed");
    std::fs::copy(clip("h264.mp4"), dir.join("clip.mp4")).unwrap();
    let s = start(ServeConfig { allowed_dirs: vec![dir.clone()], ..Default::default() }).await;
    let expected = tokio::task::spawn_blocking(|| engine_answer(clip("h264.mp4"))).await.unwrap();
    assert!(!expected.is_empty());
    let (status, text_only) = chat(s.addr, &serde_json::json!({"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 1}).to_string()).await;
    assert_eq!(status, 200, "{text_only}");
    for url in [data_uri("h264.mp4"), dir.join("clip.mp4").display().to_string(), format!("file://{}/clip.mp4", dir.display())] {
        let (status, v) = chat(s.addr, &video_body(&url)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"][0]["message"]["content"].as_str().unwrap(), expected, "{v}");
        // The clip's tokens are in the prompt (6 sampled frames: 3 temporal patches).
        let extra = v["usage"]["prompt_tokens"].as_u64().unwrap() - text_only["usage"]["prompt_tokens"].as_u64().unwrap();
        assert!(extra > 12, "{v}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_paths_outside_the_allowed_folders_are_refused_alike() {
    let dir = scratch("inside");
    let outside = scratch("outside");
    std::fs::copy(clip("vp9.webm"), outside.join("secret.webm")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(dir.join("pipe.mp4")).status().unwrap().success());
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.mp4")).unwrap();
    let s = start(ServeConfig { allowed_dirs: vec![dir.clone()], ..Default::default() }).await;
    let existing = outside.join("secret.webm").display().to_string();
    let missing = outside.join("missing.webm").display().to_string();
    let (sa, a) = chat(s.addr, &video_body(&existing)).await;
    let (sb, b) = chat(s.addr, &video_body(&missing)).await;
    assert_eq!((sa, sb), (400, 400), "{a} {b}");
    assert_eq!(message(&a).replace(&existing, "PATH"), message(&b).replace(&missing, "PATH"));
    assert!(message(&a).contains("no such video file in the folders this server allows"), "{a}");
    for url in [dir.join("pipe.mp4").display().to_string(), dir.join("zero.mp4").display().to_string()] {
        let t = Instant::now();
        let (status, v) = chat(s.addr, &video_body(&url)).await;
        assert_eq!(status, 400, "{url}: {v}");
        assert!(t.elapsed() < Duration::from_secs(5), "{url} took {:?}", t.elapsed());
    }
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&outside).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_video_is_one_clear_error_and_the_server_goes_on() {
    let s = start(ServeConfig::default()).await;
    let garbage = format!("data:video/mp4;base64,{}", base64::engine::general_purpose::STANDARD.encode(noise(7, 5000)));
    let (status, v) = chat(s.addr, &video_body(&garbage)).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["type"], "invalid_video", "{v}");
    let m = message(&v);
    assert!(m.contains("the video data: not a video in a supported container"), "{m}");
    assert!(!m.contains('\n'), "{m}");
    let (status, v) = chat(s.addr, &video_body(&data_uri("vp8.mkv"))).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoding_stops_at_the_video_timeout() {
    let s = start(ServeConfig { video_timeout: Duration::from_nanos(1), ..Default::default() }).await;
    let (status, v) = chat(s.addr, &video_body(&data_uri("h264.mp4"))).await;
    assert_eq!(status, 400, "{v}");
    assert!(message(&v).contains("too long") || message(&v).contains("took over"), "{v}");
}
