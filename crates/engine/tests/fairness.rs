//! Hostile load on the service (issue 17, finding 6 and the host-memory fault): long answers do
//! not keep a newcomer from its first token, a client that stops reading stops its request,
//! `max_tokens` is capped by the context length, and a request too large to compute is refused
//! before the vision tower runs while the engine keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use screenpilot_engine::{
    Engine, EngineConfig, EngineError, EngineHandle, Event, EventStream, FinishReason,
};
use screenpilot_model::{DType, Device, ModelFolder, Qwen3Vl, Tokenizer};

/// The tiny model with the released models' pixel bound (16.7 Mpx; the fixture's own
/// preprocessor_config.json caps images at 0.2 Mpx) and context (256k tokens; the fixture's is
/// 4096), so that large images stay large and reach the memory guard.
fn engine_with_real_pixel_bounds(cfg: EngineConfig) -> Engine {
    let folder = ModelFolder::open(fixtures().join("tiny")).unwrap();
    let mut model = Qwen3Vl::load(&folder, DType::F32, &Device::Cpu).unwrap();
    model.max_context = 262_144;
    let tok = Tokenizer::from_file(&folder.tokenizer).unwrap();
    let preprocess = screenpilot_model::PreprocessConfig { max_pixels: 4096 * 4096, ..folder.preprocess.clone() };
    Engine::new(model, tok, preprocess, cfg)
}

fn error(events: &[Event]) -> Option<&EngineError> {
    events.iter().find_map(|e| if let Event::Error(err) = e { Some(err) } else { None })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_is_answered_while_a_full_batch_of_long_answers_runs() {
    let h = EngineHandle::spawn(engine(EngineConfig { max_batch: 2, max_active: 4, ..Default::default() })).unwrap();
    let mut long: Vec<EventStream> = (0..2).map(|i| h.submit(ask(&h, &format!("Long answer {i}."), 3000)).unwrap()).collect();
    for s in &mut long {
        assert!(matches!(s.next().await, Some(Event::Token(_))), "the long requests run");
    }
    // The batch is full of 3000-token answers; a short request must not wait for them.
    let short = drain(h.submit(ask(&h, "Short.", 4)).unwrap()).await;
    assert_eq!(finish(&short), Some(FinishReason::Length), "{short:?}");
    let stats = h.stats();
    assert!(stats.decode_steps < 2 * 3000, "the newcomer finished before the long answers: {stats:?}");
    // The long answers kept advancing meanwhile and are still running.
    for s in &mut long {
        let mut n = 0;
        while let Some(Event::Token(_)) = s.try_next() {
            n += 1;
        }
        assert!(n >= 2, "a long answer advanced only {n} tokens while the newcomer ran");
        s.cancel();
    }
    tokio::time::timeout(LIMIT, h.wait_for(|s| s.in_flight == 0)).await.expect("the long answers stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_its_request_stops() {
    let h = EngineHandle::spawn(engine(EngineConfig { subscriber_buffer: 16, ..Default::default() })).unwrap();
    // Held, never read: like an HTTP client that stopped reading its stream.
    let _stalled = h.submit(ask(&h, "Go on forever.", 3000)).unwrap();
    tokio::time::timeout(LIMIT, h.wait_for(|s| s.cancelled == 1))
        .await
        .expect("the request of a client that stopped reading is stopped");
    let stats = h.stats();
    assert_eq!(stats.stalled, 1);
    assert!(stats.decode_steps < 100, "stopped soon after its buffer filled: {} steps", stats.decode_steps);
    // The engine goes on serving readers.
    assert_eq!(finish(&drain(h.submit(ask(&h, "Next.", 3)).unwrap()).await), Some(FinishReason::Length));
}

#[tokio::test]
async fn max_tokens_is_capped_by_the_context_length() {
    let h = EngineHandle::spawn(engine(EngineConfig::default())).unwrap();
    // The tiny model's context is 4096 tokens.
    let err = h.validate(request(vec![user(vec![text("hi")])], 5000)).unwrap_err();
    assert!(matches!(&err, EngineError::InvalidRequest(m) if m.contains("4096")), "{err}");
    assert!(h.validate(request(vec![user(vec![text("hi")])], 4000)).is_ok());
}

#[tokio::test]
async fn a_prompt_over_the_context_is_refused_before_the_vision_tower_runs() {
    let h = EngineHandle::spawn(engine(EngineConfig::default())).unwrap();
    let big = image(1, 448, 448);
    let req = h.validate(request(vec![user(vec![img(&big), text("What is this?")])], 4090)).unwrap();
    let events = drain(h.submit(req).unwrap()).await;
    let err = error(&events).expect("refused");
    assert!(
        matches!(err, EngineError::ContextLength { max_tokens: 4090, context: 4096, tokens } if *tokens > 6),
        "{err}"
    );
    assert_eq!(h.stats().caches.vision.misses, 0, "the vision tower did not run for a refused request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_large_for_host_memory_is_refused_and_the_engine_keeps_serving() {
    let cfg = EngineConfig { host_memory_budget: Some(256 << 20), ..Default::default() };
    let h = EngineHandle::spawn(engine_with_real_pixel_bounds(cfg)).unwrap();
    // 1024x1024: 4096 patches, whose attention scores alone take ~400 MB on the CPU.
    let big = image(2, 1024, 1024);
    let req = h.validate(request(vec![user(vec![img(&big), text("What is this?")])], 4)).unwrap();
    let events = drain(h.submit(req).unwrap()).await;
    let err = error(&events).expect("refused");
    assert!(matches!(err, EngineError::InvalidRequest(m) if m.contains("GiB")), "{err}");
    assert_eq!(h.stats().caches.vision.misses, 0, "refused before the vision tower ran");
    let small = image(3, 64, 64);
    let ok = h.validate(request(vec![user(vec![img(&small), text("And this?")])], 3)).unwrap();
    assert_eq!(finish(&drain(h.submit(ok).unwrap()).await), Some(FinishReason::Length));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_would_exhaust_the_machine_is_refused_with_the_default_budget() {
    // 4096x4096 is within the model's pixel bounds: 65536 patches, ~100 GB of attention scores
    // on the CPU. Without the guard the allocation fails and the process aborts.
    let h = EngineHandle::spawn(engine_with_real_pixel_bounds(EngineConfig::default())).unwrap();
    let huge = image(4, 4096, 4096);
    let req = h.validate(request(vec![user(vec![img(&huge), text("What is this?")])], 4)).unwrap();
    let events = drain(h.submit(req).unwrap()).await;
    assert!(
        matches!(error(&events), Some(EngineError::InvalidRequest(m)) if m.contains("GiB")),
        "{events:?}"
    );
    assert_eq!(finish(&drain(h.submit(ask(&h, "Still there?", 2)).unwrap()).await), Some(FinishReason::Length));
}
