//! End to end on the GPU (`--features cuda`, bench/gpu_parity.sh): a small random model at head
//! dims our kernels take (text 128, vision 64) loaded twice in one process, once with every kernel
//! and once with candle's ops only, on the same weights (same seed). An image prompt's prefill and
//! teacher-forced decode steps agree within bf16 rounding (cosine of the logits, same top token),
//! and decode steps replayed as CUDA graphs give exactly what eager launches give.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use screenpilot_model::generate::argmax;
use screenpilot_model::preprocess::{preprocess, PreprocessConfig};
use screenpilot_model::prompt::{render, Message, Part, Role};
use screenpilot_model::{cuda_device, DType, KernelConfig, LogitsFor, PromptInput, Qwen3Vl, Qwen3VlConfig, Tensor};

/// The tiny fixture's config widened to head dims 128 (text) and 64 (vision).
fn config() -> Qwen3VlConfig {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny/config.json");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let t = &mut c["text_config"];
    (t["hidden_size"], t["head_dim"], t["num_attention_heads"], t["num_key_value_heads"]) = (512.into(), 128.into(), 8.into(), 2.into());
    (t["intermediate_size"], t["num_hidden_layers"]) = (1024.into(), 4.into());
    t["rope_parameters"]["mrope_section"] = serde_json::json!([24, 20, 20]);
    let v = &mut c["vision_config"];
    (v["hidden_size"], v["num_heads"], v["intermediate_size"], v["out_hidden_size"]) = (256.into(), 4.into(), 512.into(), 512.into());
    (v["depth"], v["num_position_embeddings"]) = (3.into(), 2304.into());
    v["deepstack_visual_indexes"] = serde_json::json!([0, 1]);
    Qwen3VlConfig::from_json(&c.to_string()).unwrap()
}

fn model(cfg: &Qwen3VlConfig, kernels: KernelConfig) -> Qwen3Vl {
    let dev = cuda_device(0).expect("a CUDA GPU");
    dev.set_seed(7).unwrap();
    Qwen3Vl::random_with(cfg, DType::BF16, &dev, kernels).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn rows(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// A synthetic screenshot: 448x336 of bands and a button.
fn screenshot() -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(448, 336, |x, y| {
        if (100..220).contains(&x) && (200..240).contains(&y) { image::Rgb([30, 110, 230]) } else { image::Rgb([(x / 3) as u8, (y / 2) as u8, 200]) }
    }))
}

/// Prefill logits of an image prompt, then the logits of `steps` teacher-forced decode steps.
fn run(m: &Qwen3Vl, forced: &[u32]) -> Vec<Vec<f32>> {
    let pre = preprocess(&screenshot(), &PreprocessConfig::qwen3_vl_default()).unwrap();
    let vision = m.encode_images(&[&pre]).unwrap();
    let n = pre.grid.num_tokens(m.merge_size());
    let msgs = [Message { role: Role::User, parts: vec![Part::Image { tokens: n }, Part::Text("Where is the button?".into())] }];
    let tok = screenpilot_model::Tokenizer::from_file(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny/tokenizer.json"))).unwrap();
    let ids = tok.encode(&render(&msgs, &[], true)).unwrap();
    let mut cache = m.new_cache();
    let prompt = PromptInput { ids: &ids, grids: &[pre.grid], vision: Some(&vision) };
    let mut out = vec![rows(&m.prefill(&prompt, &mut cache, LogitsFor::Last).unwrap().logits)];
    for &t in forced {
        out.push(rows(&m.decode_batch(&[t], &mut [&mut cache]).unwrap()));
    }
    out
}

#[test]
fn kernels_and_candle_agree_end_to_end_and_graphs_replay_exactly() {
    let cfg = config();
    let fused = model(&cfg, KernelConfig::default());
    let eager = model(&cfg, KernelConfig { cuda_graphs: false, ..KernelConfig::default() });
    let candle = model(&cfg, KernelConfig::candle_only());
    let first = run(&fused, &[]);
    let forced: Vec<u32> = (0..12).map(|i| (argmax(&first[0]) + 97 * i) % 151_000).collect();
    let (f, e, c) = (run(&fused, &forced), run(&eager, &forced), run(&candle, &forced));
    assert!(fused.decode_counts().is_some_and(|g| g.replayed + g.recorded > 0), "decode ran as CUDA graphs: {:?}", fused.decode_counts());
    assert_eq!(f, e, "graph replays give what eager launches give");
    for (i, (a, b)) in f.iter().zip(&c).enumerate() {
        let cos = cosine(a, b);
        println!("pass {i}: cosine {cos:.6}, top {} vs {}", argmax(a), argmax(b));
        assert!(cos > 0.999, "pass {i}: cosine {cos}");
        assert_eq!(argmax(a), argmax(b), "pass {i}: top token");
    }
}
