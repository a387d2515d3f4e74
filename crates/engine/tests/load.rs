//! Load: 200 concurrent chat requests over loopback against a small queue. Every request is
//! answered (200) or refused (429 / 503) — none lost, none crashing the server — the number of
//! requests in flight never exceeds the queue plus the answers admitted at once, and identical
//! questions get identical answers whether computed, coalesced or served from the caches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::*;
use screenpilot_engine::{bind, serve_on, EngineConfig, EngineHandle, ServeConfig};
use serde_json::Value;

const REQUESTS: usize = 200;
const QUEUE: usize = 8;
const BATCH: usize = 4;
/// Answers admitted at once (they take turns in batches of BATCH).
const ACTIVE: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_are_all_answered_or_refused() {
    let handle =
        EngineHandle::spawn(engine(EngineConfig {
            queue_capacity: QUEUE,
            max_batch: BATCH,
            max_active: ACTIVE,
            ..Default::default()
        }))
        .unwrap();
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_on(listener, ServeConfig::default(), handle.clone(), std::future::pending()));

    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let question = format!("Question number {}?", i % 20);
            let stream = i % 3 == 0;
            tokio::spawn(async move {
                let body = serde_json::json!({
                    "messages": [{"role": "user", "content": question}],
                    "max_tokens": 3, "stream": stream, "ignore_eos": true,
                });
                let (status, text) = http(addr, "POST", "/v1/chat/completions", &[], body.to_string().as_bytes()).await;
                (i, stream, status, text)
            })
        })
        .collect();
    let mut answers: HashMap<usize, Vec<String>> = HashMap::new();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (i, stream, status, text) = t.await.expect("no request task panicked");
        match status {
            200 if !stream => {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["usage"]["completion_tokens"], 3);
                answers
                    .entry(i % 20)
                    .or_default()
                    .push(v["choices"][0]["message"]["content"].as_str().unwrap().to_string());
                ok += 1;
            }
            200 => {
                assert!(text.contains("data: [DONE]"), "stream {i} did not finish: {text}");
                ok += 1;
            }
            429 | 503 => {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert!(v["error"]["type"].is_string(), "{text}");
                refused += 1;
            }
            other => panic!("request {i}: unexpected status {other}: {text}"),
        }
    }
    assert_eq!(ok + refused, REQUESTS, "every request was answered or refused");
    assert!(ok >= QUEUE, "at least a queue's worth was served ({ok} ok, {refused} refused)");
    for (q, texts) in &answers {
        assert!(texts.iter().all(|t| t == &texts[0]), "question {q}: answers differ: {texts:?}");
    }
    handle.wait_for(|s| s.in_flight == 0).await;
    let stats = handle.stats();
    assert!(stats.peak_in_flight <= QUEUE + ACTIVE, "queue bound exceeded: {stats:?}");
    assert_eq!(stats.submitted as usize + stats.rejected as usize, REQUESTS, "{stats:?}");
    assert_eq!(stats.rejected as usize, refused);
    assert!(!server.is_finished(), "the server is still up");
    eprintln!(
        "load: {ok} answered, {refused} refused, {} coalesced, peak in flight {}",
        stats.coalesced, stats.peak_in_flight
    );
}
