//! Exactness against HF transformers: every case in tests/fixtures/reference (made by
//! tools/make_fixtures.py with transformers on the tiny random model) is recomputed here in f32
//! on the CPU and compared stage by stage: preprocessing, vision tower, DeepStack features,
//! 3-D positions, prompt ids, logits at every prompt position, and 12 greedy tokens decoded with
//! the KV cache.

use std::collections::HashMap;

mod common;
use common::{check_logits, fixtures, rel_err, vec2, ACT_TOL};

use screenpilot_model::preprocess::{load_image, preprocess};
use screenpilot_model::prompt::{render, Message, Part, Role};
use screenpilot_model::rope::get_rope_index;
use screenpilot_model::{DType, Device, GridThw, LogitsFor, ModelFolder, PromptInput, Qwen3Vl, Tensor, Tokenizer};

struct Case {
    name: String,
    images: Vec<String>,
    system: Option<String>,
    text: String,
    t: HashMap<String, Tensor>,
}

fn cases() -> Vec<Case> {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference/cases.json")).unwrap()).unwrap();
    let stride = meta["vocab_stride"].as_u64().unwrap();
    assert_eq!(stride, 37, "the comparison below assumes the fixture's vocabulary stride");
    let mut out = Vec::new();
    for (name, c) in meta["cases"].as_object().unwrap() {
        let path = fixtures().join(format!("reference/{name}.safetensors"));
        out.push(Case {
            name: name.clone(),
            images: c["images"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect(),
            system: c["system"].as_str().map(String::from),
            text: c["text"].as_str().unwrap().to_string(),
            t: candle_core::safetensors::load(path, &Device::Cpu).unwrap(),
        });
    }
    assert_eq!(out.len(), 4, "expected the four fixture cases");
    out
}

fn load() -> (ModelFolder, Qwen3Vl, Tokenizer) {
    let folder = ModelFolder::open(fixtures().join("tiny")).expect("run scripts/setup.sh to fetch the tokenizer");
    let model = Qwen3Vl::load(&folder, DType::F32, &Device::Cpu).unwrap();
    let tok = Tokenizer::from_file(&folder.tokenizer).unwrap();
    (folder, model, tok)
}

fn grids(t: &HashMap<String, Tensor>) -> Vec<GridThw> {
    t.get("image_grid_thw")
        .map(|g| {
            let v: Vec<Vec<i64>> = g.to_vec2().unwrap();
            v.iter().map(|r| GridThw { t: r[0] as usize, h: r[1] as usize, w: r[2] as usize }).collect()
        })
        .unwrap_or_default()
}

fn messages(case: &Case, token_counts: &[usize]) -> Vec<Message> {
    let mut msgs = Vec::new();
    if let Some(s) = &case.system {
        msgs.push(Message::text(Role::System, s.clone()));
    }
    let mut parts: Vec<Part> = token_counts.iter().map(|&n| Part::Image { tokens: n }).collect();
    parts.push(Part::Text(case.text.clone()));
    msgs.push(Message { role: Role::User, parts });
    msgs
}

#[test]
fn preprocessing_matches_transformers_pixel_for_pixel() {
    let folder = ModelFolder::open(fixtures().join("tiny")).expect("run scripts/setup.sh to fetch the tokenizer");
    let mut checked = 0;
    for case in cases() {
        let Some(ref_pixels) = case.t.get("pixel_values") else { continue };
        let ref_grids = grids(&case.t);
        let mut ours = Vec::new();
        for (img, g) in case.images.iter().zip(&ref_grids) {
            let p = preprocess(&load_image(&fixtures().join("images").join(img)).unwrap(), &folder.preprocess).unwrap();
            assert_eq!(p.grid, *g, "{}: grid of {img}", case.name);
            ours.push(screenpilot_model::vision::input::pixel_rows(&p, &Device::Cpu).unwrap());
            checked += 1;
        }
        let ours = Tensor::cat(&ours, 0).unwrap();
        let diff = (&ours - ref_pixels).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "{}: pixel values differ by up to {diff}", case.name);
    }
    assert_eq!(checked, 4);
}

#[test]
fn vision_tower_and_deepstack_match_transformers() {
    let (_, model, _) = load();
    let mut checked = 0;
    for case in cases() {
        let Some(px) = case.t.get("pixel_values") else { continue };
        let out = model.vision.forward(px, &grids(&case.t)).unwrap();
        let e = rel_err(&out.embeds, &case.t["vision_embeds"]);
        assert!(e < ACT_TOL, "{}: merged embeddings rel err {e}", case.name);
        assert_eq!(out.deepstack.len(), 2);
        for (k, f) in out.deepstack.iter().enumerate() {
            let e = rel_err(f, &case.t[&format!("deepstack_{k}")]);
            assert!(e < ACT_TOL, "{}: deepstack {k} rel err {e}", case.name);
        }
        checked += 1;
    }
    assert_eq!(checked, 3);
}

#[test]
fn prompt_ids_and_3d_positions_match_transformers() {
    let (_, model, tok) = load();
    for case in cases() {
        let g = grids(&case.t);
        let counts: Vec<usize> = g.iter().map(|g| g.num_tokens(2)).collect();
        let ids = tok.encode(&render(&messages(&case, &counts), &[], true)).unwrap();
        let ref_ids: Vec<i64> = case.t["input_ids"].to_vec1().unwrap();
        assert_eq!(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), ref_ids, "{}: prompt ids", case.name);
        let (pos, delta) = get_rope_index(&ids, &[model.config.image_token_id], &g, 2).unwrap();
        let ref_pos: Vec<Vec<i64>> = case.t["position_ids"].to_vec2().unwrap();
        for a in 0..3 {
            assert_eq!(pos.axes[a], ref_pos[a], "{}: position axis {a}", case.name);
        }
        let ref_delta: Vec<i64> = case.t["rope_delta"].to_vec1().unwrap();
        assert_eq!(delta, ref_delta[0], "{}: rope delta", case.name);
    }
}

/// Our full pipeline from the PNG files: preprocessing, vision, prefill of every position.
fn prefill_case(model: &Qwen3Vl, folder: &ModelFolder, case: &Case) -> (Vec<u32>, Vec<GridThw>, Option<screenpilot_model::VisionOutput>) {
    let imgs: Vec<_> = case
        .images
        .iter()
        .map(|f| preprocess(&load_image(&fixtures().join("images").join(f)).unwrap(), &folder.preprocess).unwrap())
        .collect();
    let g: Vec<GridThw> = imgs.iter().map(|p| p.grid).collect();
    let vision = (!imgs.is_empty()).then(|| model.encode_images(&imgs.iter().collect::<Vec<_>>()).unwrap());
    let ids: Vec<u32> = case.t["input_ids"].to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect();
    (ids, g, vision)
}

#[test]
fn logits_at_every_prompt_position_match_transformers() {
    let (folder, model, _) = load();
    for case in cases() {
        let (ids, g, vision) = prefill_case(&model, &folder, &case);
        let prompt = PromptInput { ids: &ids, grids: &g, vision: vision.as_ref() };
        let mut cache = model.new_cache();
        let out = model.prefill(&prompt, &mut cache, LogitsFor::All).unwrap();
        let e = rel_err(&out.hidden, &case.t["final_hidden"]);
        assert!(e < ACT_TOL, "{}: final hidden states rel err {e}", case.name);
        check_logits(&case.name, "prompt logits", &vec2(&out.logits), &case.t, "prompt_");
    }
}

#[test]
fn twelve_greedy_tokens_with_kv_cache_match_transformers() {
    let (folder, model, _) = load();
    for case in cases() {
        let (ids, g, vision) = prefill_case(&model, &folder, &case);
        let prompt = PromptInput { ids: &ids, grids: &g, vision: vision.as_ref() };
        let mut cache = model.new_cache();
        let ref_ids: Vec<i64> = case.t["generated_ids"].to_vec1().unwrap();
        let (ours, rows) = common::greedy(&model, &prompt, &mut cache, ref_ids.len());
        assert_eq!(ours, ref_ids, "{}: greedy ids", case.name);
        assert_eq!(cache.len(), ids.len() + ref_ids.len() - 1);
        check_logits(&case.name, "decode logits", &rows, &case.t, "gen_");
    }
}
