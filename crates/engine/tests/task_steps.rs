//! A GUI task's steps through the engine: step k holds k screenshots, but only the newest one
//! is preprocessed and goes through the vision tower, and only the new turn is prefilled (the
//! rest comes from the engine's memo and its vision and prefix caches); every step's answer is
//! the one a cold engine gives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use screenpilot_engine::backend::LocalBackend;
use screenpilot_engine::bench_task::{task_steps, TaskStepsCase};
use screenpilot_engine::{EngineConfig, EngineHandle};

#[test]
fn each_step_encodes_only_its_new_screenshot_and_prefills_only_the_new_turn() {
    let case = TaskStepsCase {
        screens: (0..4).map(|k| image(10 + k, 96, 64)).collect(),
        system: "You operate the computer.".into(),
        tools: vec![serde_json::json!({"name": "computer_use", "parameters": {"type": "object"}})],
        task: "Open the settings.".into(),
        answer_tokens: 6,
    };
    let warm = LocalBackend::new(EngineHandle::spawn(engine(EngineConfig::default())).unwrap());
    let steps = task_steps(&warm, &case).unwrap();
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[0].timings.vision_cache_hits, 0);
    for s in &steps[1..] {
        let t = &s.timings;
        assert_eq!((t.images, t.vision_cache_hits), (s.images, s.images - 1), "step {}: {t:?}", s.step);
        // Only the new screenshot is resized and patchified; the others' preprocessing is remembered.
        assert_eq!(t.images_preprocessed, 1, "step {}: {t:?}", s.step);
        let previous = &steps[s.step - 2].timings;
        assert!(t.cached_prompt_tokens >= previous.prompt_tokens - 1, "step {}: {t:?}", s.step);
        assert!(t.prefill_tokens < t.prompt_tokens / 2, "step {}: {t:?}", s.step);
    }
    // The same steps on an engine with the caches off give the same prompts and answers.
    let cold_cfg = EngineConfig { vision_cache_bytes: 0, prefix_cache_bytes: 0, ..EngineConfig::default() };
    let cold = LocalBackend::new(EngineHandle::spawn(engine(cold_cfg)).unwrap());
    let cold_steps = task_steps(&cold, &case).unwrap();
    for (w, c) in steps.iter().zip(&cold_steps) {
        assert_eq!(w.timings.prompt_tokens, c.timings.prompt_tokens);
        assert_eq!(w.answer, c.answer, "step {}", w.step);
        assert_eq!(c.timings.cached_prompt_tokens, 0);
        assert_eq!(c.timings.images_preprocessed, c.images, "with the caches off every image is preprocessed");
    }
}
