//! Tracing logits (`EngineConfig::trace_logits`, what `ask --json` prints): every token event,
//! the end token's included, carries its step's highest raw logits, the first also the prompt
//! and its last position's whole logits; tracing changes no token. And the one loader
//! (`load::open`) gives what `Engine::load` gives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use screenpilot_engine::load::{open, DeviceChoice, RuntimeConfig};
use screenpilot_engine::{Engine, EngineConfig, EngineHandle, Event, FinishReason, Request, TokenEvent};

fn loaded_engine(cfg: EngineConfig, end_id: Option<u32>) -> Engine {
    let rt = RuntimeConfig { device: DeviceChoice::Cpu, ..Default::default() };
    let mut l = open(&fixtures().join("tiny"), &rt).unwrap();
    if let Some(id) = end_id {
        l.tok.add_end_ids(&[id]);
    }
    l.into_engine(cfg)
}

fn question(max_tokens: usize) -> Request {
    let mut r = request(vec![user(vec![img(&image(3, 48, 40)), text("What is on this screen?")])], max_tokens);
    r.options.ignore_eos = false;
    r
}

fn tokens(h: &EngineHandle, r: Request) -> (Vec<TokenEvent>, Option<FinishReason>) {
    let mut events = h.submit(h.validate(r).unwrap()).unwrap();
    let (mut out, mut finish) = (Vec::new(), None);
    while let Some(ev) = events.blocking_next() {
        match ev {
            Event::Token(t) => out.push(t),
            Event::Finished(f) => finish = Some(f),
            Event::Error(e) => panic!("{e}"),
            Event::Timings(_) => {}
        }
    }
    (out, finish)
}

#[test]
fn traced_events_carry_the_logits_and_the_end_token_has_its_event() {
    let traced = EngineConfig { trace_logits: 5, ..Default::default() };
    let mut plain = loaded_engine(EngineConfig::default(), None);
    let greedy = plain.run(&plain.validate(question(12)).unwrap(), &mut |_| {}).unwrap().token_ids;
    // A later greedy token made an end token: the answer stops there, and its event comes.
    let k = (2..greedy.len()).find(|&i| !greedy[..i].contains(&greedy[i])).expect("a new token after the second");
    let h = EngineHandle::spawn(loaded_engine(traced.clone(), Some(greedy[k]))).unwrap();
    let (events, finish) = tokens(&h, question(12));
    assert_eq!(finish, Some(FinishReason::Stop));
    assert_eq!(events.iter().map(|t| t.id).collect::<Vec<_>>(), greedy[..=k]);
    assert_eq!(events[k].text, "", "an end token releases no text");
    for (i, t) in events.iter().enumerate() {
        let l = t.logits.as_ref().expect("every step is traced");
        assert_eq!(l.top.len(), 5);
        assert_eq!(l.top[0].0, t.id, "greedy takes the top logit");
        assert!(l.top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(l.prompt.is_some(), i == 0, "only the first step carries the prompt");
    }
    let prompt = events[0].logits.as_ref().unwrap().prompt.as_ref().unwrap();
    assert_eq!(prompt.last_logits.len(), 151936);
    let best = prompt.last_logits.iter().cloned().fold(f32::MIN, f32::max);
    assert_eq!(best, events[0].logits.as_ref().unwrap().top[0].1);
    let mut same = loaded_engine(traced, Some(greedy[k]));
    let done = same.run(&same.validate(question(12)).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(done.token_ids, greedy[..=k], "Engine::run ends alike");
    assert_eq!(done.timings.prompt_tokens, prompt.token_ids.len());
}

#[test]
fn tracing_changes_no_token_when_sampling_with_a_penalty_and_a_stop_string() {
    let mut r = question(24);
    r.options.temperature = 0.9;
    r.options.top_k = 50;
    r.options.seed = 11;
    r.options.repetition_penalty = 1.3;
    let plain = EngineHandle::spawn(loaded_engine(EngineConfig::default(), None)).unwrap();
    let (all, _) = tokens(&plain, r.clone());
    // A stop string made of the text of tokens 5 and 6: the answer is cut before it.
    let stop: String = all[5..7].iter().map(|t| t.text.as_str()).collect();
    assert!(!stop.trim().is_empty(), "{all:?}");
    r.options.stop = vec![stop.clone()];
    let traced = EngineHandle::spawn(loaded_engine(EngineConfig { trace_logits: 3, ..Default::default() }, None)).unwrap();
    let (a, fa) = tokens(&plain, r.clone());
    let (b, fb) = tokens(&traced, r);
    assert_eq!(a.iter().map(|t| t.id).collect::<Vec<_>>(), b.iter().map(|t| t.id).collect::<Vec<_>>());
    assert_eq!((fa, fb), (Some(FinishReason::StopString), Some(FinishReason::StopString)));
    let text: String = b.iter().map(|t| t.text.as_str()).collect();
    assert!(!text.contains(&stop) && b.iter().all(|t| t.logits.is_some()), "{text:?}");
}

#[test]
fn the_loader_and_engine_load_give_the_same_answer() {
    let mut a = loaded_engine(EngineConfig::default(), None);
    let mut b = engine(EngineConfig::default());
    let ra = a.run(&a.validate(question(5)).unwrap(), &mut |_| {}).unwrap();
    let rb = b.run(&b.validate(question(5)).unwrap(), &mut |_| {}).unwrap();
    assert_eq!((ra.token_ids, ra.text), (rb.token_ids, rb.text));
}
