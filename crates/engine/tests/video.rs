//! Videos through the engine on the tiny model: a clip listed as PNG frames gives transformers'
//! tokens (the video fixture of tools/make_video_fixtures.py), a clip mixed with an image too,
//! and a second question about the same clip reuses its preprocessing, its vision features and
//! the prompt's KV cache, with the same answer as a fresh engine's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use screenpilot_engine::{video, Clip, ContentPart, EngineConfig, ImageSource, Request, Role, VideoSource};
use screenpilot_model::ModelFolder;

fn meta() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference/video_cases.json")).unwrap()).unwrap()
}

/// A fixture clip as the PNG files of all its frames (the engine samples them).
fn frames_of(name: &str) -> VideoSource {
    let spec = &meta()["clips"][name];
    let n = spec["frames"].as_u64().unwrap() as usize;
    let frames = (0..n).map(|i| ImageSource::Path(fixtures().join(format!("video/{name}/frame_{i:03}.png")))).collect();
    VideoSource::Frames { frames, fps: spec["fps"].as_f64().unwrap() }
}

fn greedy(messages: Vec<screenpilot_engine::ChatMessage>) -> Request {
    let mut r = request(messages, 12);
    r.options.ignore_eos = false;
    r
}

fn expected(case: &str) -> Vec<u32> {
    serde_json::from_value(meta()["cases"][case]["generated_ids"].clone()).unwrap()
}

#[test]
fn a_clip_of_png_frames_gives_transformers_tokens() {
    let mut e = engine(EngineConfig::default().without_caches());
    let r = greedy(vec![user(vec![ContentPart::Video(frames_of("odd")), text("What happens in this clip?")])]);
    let c = e.run(&e.validate(r).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(c.token_ids, expected("video_odd"));
}

#[test]
fn a_clip_and_an_image_in_one_prompt_give_transformers_tokens() {
    let mut e = engine(EngineConfig::default().without_caches());
    let picture = ImageSource::Path(fixtures().join("images/a_120x90.png"));
    let r = greedy(vec![
        screenpilot_engine::ChatMessage::text(Role::System, "You are a helpful assistant."),
        user(vec![img(&picture), ContentPart::Video(frames_of("sampled")), text("Is the picture in the clip?")]),
    ]);
    let c = e.run(&e.validate(r).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(c.token_ids, expected("video_and_image"));
}

#[test]
fn a_second_question_about_the_same_clip_reuses_everything_and_answers_the_same() {
    let folder = ModelFolder::open(fixtures().join("tiny")).unwrap();
    let clip = video::sample(&frames_of("odd"), &folder.video).unwrap();
    let ask = |q: &str| greedy(vec![user(vec![ContentPart::Video(VideoSource::Clip(clip.clone())), text(q)])]);
    let mut on = engine(EngineConfig::default());
    let first = on.run(&on.validate(ask("What happens in this clip?")).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(first.token_ids, expected("video_odd"));
    assert_eq!((first.timings.images_preprocessed, first.timings.vision_cache_hits), (1, 0));
    let second = on.run(&on.validate(ask("What happens in this clip now?")).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(second.timings.images_preprocessed, 0, "the clip's preprocessing is remembered");
    assert_eq!(second.timings.vision_cache_hits, 1, "the clip's vision features are cached");
    assert!(second.timings.cached_prompt_tokens > 60, "the clip's KV is reused: {:?}", second.timings);
    let mut off = engine(EngineConfig::default().without_caches());
    let fresh = off.run(&off.validate(ask("What happens in this clip now?")).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(second.token_ids, fresh.token_ids);
}

#[test]
fn bad_videos_are_one_clear_error_and_the_engine_goes_on() {
    let mut e = engine(EngineConfig::default());
    let one_frame = VideoSource::Clip(Arc::new(Clip {
        frames: vec![Arc::new(image::DynamicImage::new_rgb8(64, 64))],
        indices: vec![0],
        fps: Some(2.0),
    }));
    let r = greedy(vec![user(vec![ContentPart::Video(one_frame), text("?")])]);
    let err = e.run(&e.validate(r).unwrap(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("at least 2 frames"), "{err}");
    let missing = VideoSource::Frames { frames: vec![ImageSource::Path("/nonexistent/f.png".into()); 4], fps: 2.0 };
    let err = e.run(&e.validate(greedy(vec![user(vec![ContentPart::Video(missing)])])).unwrap(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/f.png"), "{err}");
    let too_many = greedy(vec![user((0..5).map(|_| ContentPart::Video(frames_of("odd"))).collect())]);
    assert!(e.validate(too_many).is_err());
    let ok = greedy(vec![user(vec![ContentPart::Video(frames_of("odd")), text("What happens in this clip?")])]);
    assert_eq!(e.run(&e.validate(ok).unwrap(), &mut |_| {}).unwrap().token_ids, expected("video_odd"));
}
