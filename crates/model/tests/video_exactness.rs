//! Exactness of the video path against HF transformers: the cases in
//! tests/fixtures/reference/video_cases.json (made by tools/make_video_fixtures.py with
//! transformers' Qwen3VLProcessor and Qwen3VLVideoProcessor on the tiny random model) are
//! recomputed from the clips' PNG frames: frame sampling, the video rule of smart_resize, pixel
//! values, vision and DeepStack features, prompt ids with the frame timestamps, 3-D positions,
//! logits at every prompt position and 12 greedy tokens. A clip with an odd number of frames
//! pads its last temporal patch; another is mixed with an image in one prompt.

use std::collections::HashMap;

mod common;
use common::{check_logits, fixtures, rel_err, vec2, ACT_TOL};

use screenpilot_model::preprocess::{
    load_image, preprocess, preprocess_video, smart_resize_video, timestamp_text, timestamps, PreprocessedImage,
};
use screenpilot_model::prompt::{render, Message, Part, Role};
use screenpilot_model::{DType, Device, GridThw, LogitsFor, ModelFolder, PromptInput, Qwen3Vl, Tensor, Tokenizer};
use serde_json::Value;

fn meta() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference/video_cases.json")).unwrap()).unwrap()
}

fn load() -> (ModelFolder, Qwen3Vl, Tokenizer) {
    let folder = ModelFolder::open(fixtures().join("tiny")).expect("run scripts/setup.sh to fetch the tokenizer");
    let model = Qwen3Vl::load(&folder, DType::F32, &Device::Cpu).unwrap();
    let tok = Tokenizer::from_file(&folder.tokenizer).unwrap();
    (folder, model, tok)
}

/// One image or clip of a case, preprocessed by us from the fixture files.
enum Visual {
    Image(PreprocessedImage),
    Video { clip: PreprocessedImage, timestamps: Vec<f64> },
}

impl Visual {
    fn input(&self) -> &PreprocessedImage {
        match self {
            Visual::Image(i) | Visual::Video { clip: i, .. } => i,
        }
    }
}

struct Case {
    name: String,
    system: Option<String>,
    text: String,
    visuals: Vec<Visual>,
    t: HashMap<String, Tensor>,
}

/// Reads a clip's frames, samples them as the video processor does (checked against the
/// indices transformers sampled) and preprocesses them.
fn load_clip(folder: &ModelFolder, meta: &Value, name: &str, sampled: &Value) -> Visual {
    let spec = &meta["clips"][name];
    let total = spec["frames"].as_u64().unwrap() as usize;
    let fps = spec["fps"].as_f64().unwrap();
    let indices = folder.video.sample_frames(total, Some(fps));
    let expected: Vec<usize> = serde_json::from_value(sampled[name].clone()).unwrap();
    assert_eq!(indices, expected, "{name}: sampled frames");
    let frames: Vec<_> = indices
        .iter()
        .map(|i| load_image(&fixtures().join(format!("video/{name}/frame_{i:03}.png"))).unwrap())
        .collect();
    let v = preprocess_video(&frames.iter().collect::<Vec<_>>(), &indices, Some(fps), &folder.video).unwrap();
    Visual::Video { clip: v.clip, timestamps: v.timestamps }
}

fn cases(folder: &ModelFolder) -> Vec<Case> {
    let meta = meta();
    let mut out = Vec::new();
    for (name, c) in meta["cases"].as_object().unwrap() {
        let visuals = c["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let (kind, file) = (p[0].as_str().unwrap(), p[1].as_str().unwrap());
                match kind {
                    "image" => Visual::Image(
                        preprocess(&load_image(&fixtures().join("images").join(file)).unwrap(), &folder.preprocess).unwrap(),
                    ),
                    _ => load_clip(folder, &meta, file, &c["sampled"]),
                }
            })
            .collect();
        out.push(Case {
            name: name.clone(),
            system: c["system"].as_str().map(String::from),
            text: c["text"].as_str().unwrap().to_string(),
            visuals,
            t: candle_core::safetensors::load(fixtures().join(format!("reference/{name}.safetensors")), &Device::Cpu)
                .unwrap(),
        });
    }
    assert_eq!(out.len(), 2, "expected the two video cases");
    out
}

fn grid_rows(t: &Tensor) -> Vec<GridThw> {
    let v: Vec<Vec<i64>> = t.to_vec2().unwrap();
    v.iter().map(|r| GridThw { t: r[0] as usize, h: r[1] as usize, w: r[2] as usize }).collect()
}

fn messages(case: &Case) -> Vec<Message> {
    let mut msgs = Vec::new();
    if let Some(s) = &case.system {
        msgs.push(Message::text(Role::System, s.clone()));
    }
    let mut parts: Vec<Part> = case
        .visuals
        .iter()
        .map(|v| match v {
            Visual::Image(i) => Part::Image { tokens: i.grid.num_tokens(2) },
            Visual::Video { clip, timestamps } => {
                Part::Video { timestamps: timestamps.clone(), tokens_per_frame: clip.grid.h * clip.grid.w / 4 }
            }
        })
        .collect();
    parts.push(Part::Text(case.text.clone()));
    msgs.push(Message { role: Role::User, parts });
    msgs
}

#[test]
fn frame_sampling_timestamps_and_video_resize_match_transformers() {
    let (folder, _, _) = load();
    let meta = meta();
    let mut checked = 0;
    for row in meta["sampling"].as_array().unwrap() {
        let total = row["total"].as_u64().unwrap() as usize;
        let fps = row["fps"].as_f64();
        assert!(row.get("error").is_none(), "the table has no failing row: {row}");
        let indices = folder.video.sample_frames(total, fps);
        let expected: Vec<usize> = serde_json::from_value(row["indices"].clone()).unwrap();
        assert_eq!(indices, expected, "sampling {total} frames at {fps:?} fps");
        let stamps = timestamps(&indices, fps, 2);
        let texts: Vec<String> = stamps.iter().map(|&s| timestamp_text(s)).collect();
        let expected: Vec<String> = serde_json::from_value(row["text"].clone()).unwrap();
        assert_eq!(texts, expected, "timestamps of {total} frames at {fps:?} fps");
        checked += 1;
    }
    for row in meta["smart_resize"].as_array().unwrap() {
        let n = |k: &str| row[k].as_u64().unwrap();
        let ours = smart_resize_video(n("frames") as usize, n("height") as u32, n("width") as u32, 2, 32, n("min_pixels"), n("max_pixels"));
        let expected: Vec<u32> = serde_json::from_value(row["out"].clone()).unwrap();
        assert_eq!(ours.map(|(h, w)| vec![h, w]).unwrap(), expected, "smart_resize of {row}");
        checked += 1;
    }
    assert_eq!(checked, 21);
}

#[test]
fn clip_pixels_match_transformers_bit_for_bit() {
    let (folder, _, _) = load();
    for case in cases(&folder) {
        let clip = case.visuals.iter().find_map(|v| if let Visual::Video { clip, .. } = v { Some(clip) } else { None }).unwrap();
        assert_eq!(vec![clip.grid], grid_rows(&case.t["video_grid_thw"]), "{}: video grid", case.name);
        let ours = screenpilot_model::vision::input::pixel_rows(clip, &Device::Cpu).unwrap();
        let reference = &case.t["pixel_values_videos"];
        assert_eq!(ours.dims(), reference.dims(), "{}", case.name);
        let diff = (&ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "{}: video pixel values differ by up to {diff}", case.name);
        assert_eq!(ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(), clip.pixels(), "{}: host and device rows", case.name);
    }
}

/// Vision features of a case's images and clips in prompt order, in one call.
fn encode(model: &Qwen3Vl, case: &Case) -> screenpilot_model::VisionOutput {
    model.encode_images(&case.visuals.iter().map(Visual::input).collect::<Vec<_>>()).unwrap()
}

#[test]
fn vision_and_deepstack_features_of_clips_match_transformers() {
    let (folder, model, _) = load();
    for case in cases(&folder) {
        let out = encode(&model, &case);
        let e = rel_err(&out.embeds, &case.t["vision_embeds"]);
        assert!(e < ACT_TOL, "{}: merged embeddings rel err {e}", case.name);
        for (k, f) in out.deepstack.iter().enumerate() {
            let e = rel_err(f, &case.t[&format!("deepstack_{k}")]);
            assert!(e < ACT_TOL, "{}: deepstack {k} rel err {e}", case.name);
        }
    }
}

#[test]
fn prompt_ids_with_timestamps_and_positions_match_transformers() {
    let (folder, model, tok) = load();
    for case in cases(&folder) {
        let ids = tok.encode(&render(&messages(&case), &[], true)).unwrap();
        let ref_ids: Vec<i64> = case.t["input_ids"].to_vec1().unwrap();
        assert_eq!(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), ref_ids, "{}: prompt ids", case.name);
        let grids: Vec<GridThw> = case.visuals.iter().map(|v| v.input().grid).collect();
        let prompt = PromptInput { ids: &ids, grids: &grids, vision: None };
        let (pos, delta) = model.positions(&prompt).unwrap();
        let ref_pos: Vec<Vec<i64>> = case.t["position_ids"].to_vec2().unwrap();
        for (a, (ours, reference)) in pos.axes.iter().zip(&ref_pos).enumerate() {
            assert_eq!(ours, reference, "{}: position axis {a}", case.name);
        }
        assert_eq!(delta, case.t["rope_delta"].to_vec1::<i64>().unwrap()[0], "{}: rope delta", case.name);
    }
}

#[test]
fn logits_and_twelve_greedy_tokens_of_clips_match_transformers() {
    let (folder, model, _) = load();
    for case in cases(&folder) {
        let vision = encode(&model, &case);
        let ids: Vec<u32> = case.t["input_ids"].to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect();
        let grids: Vec<GridThw> = case.visuals.iter().map(|v| v.input().grid).collect();
        let prompt = PromptInput { ids: &ids, grids: &grids, vision: Some(&vision) };
        let mut cache = model.new_cache();
        let out = model.prefill(&prompt, &mut cache, LogitsFor::All).unwrap();
        let e = rel_err(&out.hidden, &case.t["final_hidden"]);
        assert!(e < ACT_TOL, "{}: final hidden states rel err {e}", case.name);
        check_logits(&case.name, "prompt logits", &vec2(&out.logits), &case.t, "prompt_");

        let mut cache = model.new_cache();
        let ref_ids: Vec<i64> = case.t["generated_ids"].to_vec1().unwrap();
        let (ours, rows) = common::greedy(&model, &prompt, &mut cache, ref_ids.len());
        assert_eq!(ours, ref_ids, "{}: greedy ids", case.name);
        check_logits(&case.name, "decode logits", &rows, &case.t, "gen_");
    }
}
