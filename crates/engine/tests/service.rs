//! The async service: event order, refusal when the queue is full, cancellation by dropping the
//! stream, coalescing of identical requests, batched decoding of concurrent requests (the same
//! tokens as each alone), and errors delivered as events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use screenpilot_engine::{
    EngineConfig, EngineError, EngineHandle, Event, EventStream, FinishReason, ImageSource, ValidRequest,
};

/// A service that admits no more than one batch (so queue-capacity tests see a full batch).
fn handle(queue_capacity: usize, max_batch: usize) -> EngineHandle {
    EngineHandle::spawn(engine(EngineConfig { queue_capacity, max_batch, max_active: max_batch, ..Default::default() }))
        .unwrap()
}

fn handle_with(cfg: EngineConfig) -> EngineHandle {
    EngineHandle::spawn(engine(cfg)).unwrap()
}

fn token_ids(events: &[Event]) -> Vec<u32> {
    events.iter().filter_map(|e| if let Event::Token(t) = e { Some(t.id) } else { None }).collect()
}

#[tokio::test]
async fn events_are_tokens_then_timings_then_finished() {
    let h = handle(4, 2);
    let events = drain(h.submit(ask(&h, "Say something.", 5)).unwrap()).await;
    assert_eq!(token_ids(&events).len(), 5);
    let n = events.len();
    assert!(matches!(events[n - 2], Event::Timings(ref t) if t.completion_tokens == 5 && t.prompt_tokens > 0));
    assert_eq!(events[n - 1], Event::Finished(FinishReason::Length));
    assert!(events[..n - 2].iter().all(|e| matches!(e, Event::Token(_))));
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_with_busy() {
    let h = handle(1, 1);
    let mut long = h.submit(ask(&h, "Long answer.", 3000)).unwrap();
    assert!(matches!(long.next().await, Some(Event::Token(_))), "the long request is running");
    let queued = h.submit(ask(&h, "Queued.", 2)).unwrap(); // takes the only queue slot
    let refused = h.submit(ask(&h, "Refused.", 2));
    assert!(matches!(refused, Err(EngineError::Busy { capacity: 1 })), "{:?}", refused.err());
    assert_eq!(h.stats().rejected, 1);
    long.cancel();
    assert_eq!(finish(&drain(queued).await), Some(FinishReason::Length), "the queued one still runs");
    assert!(h.stats().peak_in_flight <= 2);
}

#[tokio::test]
async fn dropping_the_stream_stops_the_computation() {
    let h = handle(4, 2);
    let mut s = h.submit(ask(&h, "Go on forever.", 3000)).unwrap();
    assert!(matches!(s.next().await, Some(Event::Token(_))));
    drop(s);
    tokio::time::timeout(LIMIT, h.wait_for(|s| s.cancelled == 1)).await.expect("cancelled");
    let stats = h.stats();
    assert!(stats.decode_steps < 3000, "stopped early: {} steps", stats.decode_steps);
    assert_eq!((stats.finished, stats.in_flight), (0, 0));
    // The engine is free again.
    assert_eq!(finish(&drain(h.submit(ask(&h, "Next.", 2)).unwrap()).await), Some(FinishReason::Length));
}

#[tokio::test]
async fn identical_requests_arriving_together_are_computed_once() {
    let h = handle(4, 1);
    let mut blocker = h.submit(ask(&h, "Blocker.", 3000)).unwrap();
    assert!(matches!(blocker.next().await, Some(Event::Token(_))));
    let same: Vec<EventStream> = (0..3).map(|_| h.submit(ask(&h, "Same question.", 6)).unwrap()).collect();
    assert_eq!(same.iter().map(|s| s.coalesced()).collect::<Vec<_>>(), [false, true, true]);
    blocker.cancel();
    let mut answers = Vec::new();
    for s in same {
        answers.push(drain(s).await);
    }
    assert_eq!(token_ids(&answers[0]).len(), 6);
    assert!(answers.iter().all(|a| a == &answers[0]), "every subscriber gets every event");
    let stats = h.stats();
    assert_eq!((stats.started, stats.coalesced, stats.submitted), (2, 2, 4));
}

#[tokio::test]
async fn a_short_request_is_not_stuck_behind_a_long_one() {
    let h = handle(4, 4);
    let mut long = h.submit(ask(&h, "Long answer.", 3000)).unwrap();
    assert!(matches!(long.next().await, Some(Event::Token(_))));
    let short = drain(h.submit(ask(&h, "Short.", 3)).unwrap()).await;
    assert_eq!(finish(&short), Some(FinishReason::Length));
    // The long one is still running: decoding was interleaved, not one request after another.
    let mut buffered = Vec::new();
    while let Some(ev) = long.try_next() {
        buffered.push(ev);
    }
    assert_eq!(finish(&buffered), None, "the long request finished first");
    assert!(token_ids(&buffered).len() >= 2, "the long request advanced while the short one ran");
}

#[tokio::test]
async fn a_bad_image_is_an_error_event_and_the_engine_goes_on() {
    let h = handle(4, 2);
    let bad = ImageSource::Bytes(Arc::from(&b"not an image"[..]));
    let r = h.validate(request(vec![user(vec![img(&bad), text("?")])], 3)).unwrap();
    let events = drain(h.submit(r).unwrap()).await;
    assert!(matches!(events.as_slice(), [Event::Error(EngineError::InvalidImage(_))]), "{events:?}");
    assert_eq!(finish(&drain(h.submit(ask(&h, "Fine.", 2)).unwrap()).await), Some(FinishReason::Length));
    assert_eq!(h.stats().failed, 1);
}

#[tokio::test]
async fn images_through_the_service_hit_the_vision_cache_the_second_time() {
    let h = handle(4, 2);
    let a = ImageSource::Bytes(Arc::from(png_bytes(9, 128, 96)));
    let q = |t: &str| h.validate(request(vec![user(vec![img(&a), text(t)])], 2)).unwrap();
    let timings =
        |ev: &[Event]| ev.iter().find_map(|e| if let Event::Timings(t) = e { Some(t.clone()) } else { None }).unwrap();
    let first = timings(&drain(h.submit(q("What?")).unwrap()).await);
    let second = timings(&drain(h.submit(q("Where?")).unwrap()).await);
    assert_eq!((first.vision_cache_hits, second.vision_cache_hits), (0, 1));
    assert!(second.cached_prompt_tokens > 12 && second.prefill_tokens < first.prefill_tokens);
    assert_eq!(h.stats().caches.vision.hits, 1);
}

#[tokio::test]
async fn concurrent_requests_decoded_in_batches_give_each_ones_tokens_alone() {
    // Caches off: every request prefills from scratch, alone or not; only batching differs.
    let h = handle_with(EngineConfig { queue_capacity: 8, max_batch: 4, ..EngineConfig::default().without_caches() });
    let (a, b) = (image(1, 64, 48), image(2, 96, 64));
    let mut reqs = vec![
        request(vec![user(vec![img(&a), text("What is this?")])], 7),
        request(vec![user(vec![text("Say something long, please.")])], 12),
        request(vec![user(vec![text("Count.")])], 5),
        request(vec![user(vec![img(&b), text("Where?")])], 9),
        request(vec![user(vec![text("A fifth one waits for a free slot in the batch.")])], 6),
    ];
    (reqs[2].options.temperature, reqs[2].options.top_p, reqs[2].options.seed) = (0.8, 0.9, 7);
    (reqs[3].options.temperature, reqs[3].options.seed) = (1.0, 3);
    reqs[4].options.stop = vec!["e".into()];
    let reqs: Vec<ValidRequest> = reqs.into_iter().map(|r| h.validate(r).unwrap()).collect();
    let mut alone = Vec::new();
    for r in &reqs {
        alone.push(drain(h.submit(r.clone()).unwrap()).await);
    }
    let before = h.stats();
    let streams: Vec<EventStream> = reqs.iter().map(|r| h.submit(r.clone()).unwrap()).collect();
    let mut together = Vec::new();
    for s in streams {
        together.push(drain(s).await);
    }
    for (i, (x, y)) in alone.iter().zip(&together).enumerate() {
        assert!(!token_ids(x).is_empty(), "request {i} generated tokens");
        assert_eq!(token_ids(x), token_ids(y), "request {i}: tokens alone vs together");
        assert_eq!(finish(x), finish(y), "request {i}: finish reason");
    }
    let after = h.stats();
    let (steps, rounds) = (after.decode_steps - before.decode_steps, after.decode_rounds - before.decode_rounds);
    assert!(steps as f64 / rounds as f64 > 1.5, "decoded in batches: {steps} tokens in {rounds} rounds");
    assert!(after.decode_ms > before.decode_ms);
}
