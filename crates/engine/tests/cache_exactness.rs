//! Caches on must give what caches off give: the same token ids and logits within 1e-5 (f32,
//! CPU, tiny model), on cases built to fool a cache: the same image at another position, two
//! images swapped, the same pixel buffer at another size, an edited prompt prefix, and a
//! follow-up turn. Each case also checks that the cache really was used (or rightly was not).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use screenpilot_engine::bench::{second_question, SecondQuestionCase};
use screenpilot_engine::{ChatMessage, Completion, Engine, EngineConfig, Request, Role};
use screenpilot_model::generate::{generate, Flow};
use screenpilot_model::preprocess::preprocess;
use screenpilot_model::prompt::{render, Message, Part};
use screenpilot_model::{GridThw, PromptInput, SamplingParams};

const TOL: f32 = 1e-5;

fn engines() -> (Engine, Engine) {
    let cfg = EngineConfig { record_logits: true, ..Default::default() };
    (engine(cfg.clone()), engine(cfg.without_caches()))
}

fn run(e: &mut Engine, r: &Request) -> Completion {
    let v = e.validate(r.clone()).unwrap();
    e.run(&v, &mut |_| {}).unwrap()
}

fn assert_same(cached: &Completion, fresh: &Completion) {
    assert_close(cached, fresh, TOL)
}

fn assert_close(cached: &Completion, fresh: &Completion, tol: f32) {
    assert_eq!(cached.token_ids, fresh.token_ids, "token ids differ");
    assert_eq!(cached.step_logits.len(), fresh.step_logits.len());
    for (step, (a, b)) in cached.step_logits.iter().zip(&fresh.step_logits).enumerate() {
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff <= tol, "step {step}: logits differ by {diff}");
    }
}

/// Runs `warm` then `probe` on the cached engine, `probe` alone on the uncached one, and
/// compares; returns the cached probe.
fn check(on: &mut Engine, off: &mut Engine, warm: &Request, probe: &Request) -> Completion {
    let w = run(on, warm);
    assert_same(&w, &run(off, warm));
    let cached = run(on, probe);
    assert_same(&cached, &run(off, probe));
    cached
}

/// The tokens of one request through the engine (caches off) and through the model crate's
/// own loop (what the CLI's `ask` runs), with the given repetition penalty.
fn engine_and_generate(penalty: f64) -> (Vec<u32>, Vec<u32>) {
    let mut off = engine(EngineConfig { record_logits: true, ..Default::default() }.without_caches());
    let a = image(1, 128, 96);
    let mut r = request(vec![user(vec![img(&a), text("What is this?")])], 12);
    r.options.repetition_penalty = penalty;
    let c = run(&mut off, &r);
    let screenpilot_engine::ImageSource::Image(raw) = &a else { unreachable!() };
    let (model, tok) = (off.model(), off.tokenizer());
    let pre =
        preprocess(raw, &screenpilot_model::ModelFolder::open(fixtures().join("tiny")).unwrap().preprocess).unwrap();
    let vision = model.encode_images(&[&pre]).unwrap();
    let msgs = [Message {
        role: Role::User,
        parts: vec![Part::Image { tokens: pre.grid.num_tokens(2) }, Part::Text("What is this?".into())],
    }];
    let ids = tok.encode(&render(&msgs, &[], true)).unwrap();
    let grids: Vec<GridThw> = vec![pre.grid];
    let prompt = PromptInput { ids: &ids, grids: &grids, vision: Some(&vision) };
    let params = SamplingParams { max_new_tokens: 12, repetition_penalty: penalty, ..Default::default() };
    let g = generate(model, tok, &prompt, &params, &mut model.new_cache(), &mut |_| Flow::Continue).unwrap();
    assert_eq!(c.timings.prompt_tokens, ids.len());
    // The engine ignores end tokens here (the request says so); compare what both generated.
    let n = g.steps.len();
    (c.token_ids[..n].to_vec(), g.steps.iter().map(|s| s.id).collect())
}

#[test]
fn engine_without_caches_matches_the_model_crate_generate() {
    let (engine_ids, generate_ids) = engine_and_generate(1.0);
    assert_eq!(engine_ids, generate_ids);
}

#[test]
fn the_repetition_penalty_gives_the_same_tokens_in_the_engine_and_the_model_crate() {
    let (plain, _) = engine_and_generate(1.0);
    let (engine_ids, generate_ids) = engine_and_generate(1.5);
    assert_eq!(engine_ids, generate_ids);
    assert_ne!(engine_ids, plain[..engine_ids.len()], "the penalty changed nothing: is it applied?");
}

#[test]
fn same_image_at_another_position_matches_uncached() {
    let (mut on, mut off) = engines();
    let a = image(1, 128, 96);
    let warm = request(vec![user(vec![img(&a), text("Describe it.")])], 6);
    let probe = request(vec![user(vec![text("Look:"), img(&a), text("Describe it.")])], 6);
    let c = check(&mut on, &mut off, &warm, &probe);
    assert_eq!(c.timings.vision_cache_hits, 1, "the image's features come from the cache");
    // "<|im_start|>user\n" is shared; the image moved, so its tokens must not be reused.
    assert!(c.timings.cached_prompt_tokens <= 3, "reused {} tokens", c.timings.cached_prompt_tokens);
}

#[test]
fn two_images_swapped_match_uncached() {
    let (mut on, mut off) = engines();
    let (a, b) = (image(1, 128, 96), image(2, 128, 96));
    let warm = request(vec![user(vec![img(&a), img(&b), text("Compare.")])], 6);
    let probe = request(vec![user(vec![img(&b), img(&a), text("Compare.")])], 6);
    let c = check(&mut on, &mut off, &warm, &probe);
    assert_eq!(c.timings.vision_cache_hits, 2);
    // Shared: "<|im_start|>user\n<|vision_start|>" and nothing of the first image.
    assert!(c.timings.cached_prompt_tokens <= 4, "reused {} tokens", c.timings.cached_prompt_tokens);
}

#[test]
fn same_pixel_buffer_at_another_size_matches_uncached() {
    let (mut on, mut off) = engines();
    let buf = noise(7, 128 * 96 * 3);
    let wide = image_from(buf.clone(), 128, 96);
    let tall = image_from(buf, 96, 128);
    let warm = request(vec![user(vec![img(&wide), text("Describe it.")])], 6);
    let probe = request(vec![user(vec![img(&tall), text("Describe it.")])], 6);
    let c = check(&mut on, &mut off, &warm, &probe);
    assert_eq!(c.timings.vision_cache_hits, 0, "a different size is a different image");
}

#[test]
fn edited_prompt_prefix_matches_uncached() {
    let (mut on, mut off) = engines();
    let a = image(3, 128, 128);
    let ask = |system: &str| {
        request(vec![ChatMessage::text(Role::System, system), user(vec![img(&a), text("What is on screen?")])], 6)
    };
    let c = check(&mut on, &mut off, &ask("You are a helpful assistant."), &ask("You are a careful assistant."));
    assert_eq!(c.timings.vision_cache_hits, 1);
    assert!(
        c.timings.cached_prompt_tokens > 0 && c.timings.cached_prompt_tokens < 8,
        "reused {}",
        c.timings.cached_prompt_tokens
    );
}

#[test]
fn follow_up_turn_reuses_the_conversation_and_matches_uncached() {
    let (mut on, mut off) = engines();
    let a = image(4, 128, 96);
    let mut first = request(vec![user(vec![img(&a), text("What is this?")])], 5);
    first.options.temperature = 0.8;
    first.options.seed = 11;
    let answer = run(&mut on, &first);
    let mut follow = first.clone();
    follow.messages.push(ChatMessage::text(Role::Assistant, answer.text.clone()));
    follow.messages.push(user(vec![text("And what colour is it?")]));
    let c = check(&mut on, &mut off, &first, &follow);
    let first_prompt = run(&mut off, &first).timings.prompt_tokens;
    assert_eq!(c.timings.cached_prompt_tokens, first_prompt, "the whole first prompt (image included) is reused");
    assert_eq!(c.timings.prefill_tokens + c.timings.cached_prompt_tokens, c.timings.prompt_tokens);
}

#[test]
fn asking_the_same_question_twice_matches_uncached() {
    let (mut on, mut off) = engines();
    let a = image(6, 128, 96);
    let r = request(vec![user(vec![img(&a), text("What is this? Tell me more about it please.")])], 6);
    let c = check(&mut on, &mut off, &r, &r);
    assert_eq!(c.timings.vision_cache_hits, 1);
    assert_eq!(c.timings.prefill_tokens, EngineConfig::default().min_prefill_tokens, "all but the last rows reused");
}

/// Opt-in answer reuse: KV computed one token at a time differs in the last bits from a
/// prefill's, so this mode is only close (1e-4), not equal.
#[test]
fn follow_up_reusing_the_answers_kv_stays_close() {
    let cfg = EngineConfig { record_logits: true, reuse_answer_kv: true, ..Default::default() };
    let (mut on, mut off) = (engine(cfg.clone()), engine(cfg.without_caches()));
    let a = image(4, 128, 96);
    let first = request(vec![user(vec![img(&a), text("What is this?")])], 5);
    let answer = run(&mut on, &first);
    let mut follow = first.clone();
    follow.messages.push(ChatMessage::text(Role::Assistant, answer.text.clone()));
    follow.messages.push(user(vec![text("And what colour is it?")]));
    run(&mut on, &first);
    let c = run(&mut on, &follow);
    assert_close(&c, &run(&mut off, &follow), 1e-4);
    assert!(c.timings.cached_prompt_tokens > run(&mut off, &first).timings.prompt_tokens, "the answer is reused too");
}

#[test]
fn second_question_on_the_same_image_skips_the_vision_tower_and_the_shared_prefix() {
    let (mut on, _) = engines();
    let case = SecondQuestionCase {
        image: image(5, 256, 192),
        system: Some("You are a screen assistant.".into()),
        first: "What is on screen?".into(),
        second: "Where is the close button?".into(),
        max_tokens: 4,
    };
    let r = second_question(&mut on, &case).unwrap();
    assert_eq!((r.first.vision_cache_hits, r.second.vision_cache_hits), (0, 1));
    assert!(r.second.vision_ms < r.first.vision_ms);
    assert!(r.second.cached_prompt_tokens > 48, "system + image reused: {}", r.second.cached_prompt_tokens);
    assert!(r.second.prefill_tokens < r.first.prefill_tokens);
    let report = on.cache_report();
    assert_eq!((report.vision.hits, report.vision.misses), (1, 1));
    assert_eq!(report.prefix.hits, 1);
}
