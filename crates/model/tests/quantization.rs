//! Quantized weights (`KernelConfig::quant`) on the tiny model in f32 on the CPU, measured
//! against the unquantized model with `quality::Reference` (KL divergence of the next-token
//! distributions, top-1 agreement, greedy agreement) over the fixed evaluation set: the
//! measure is zero for the model against itself, q8_0 stays within a bound, and 4 bits are
//! measurably worse than 8 (so the measurement can fail).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use screenpilot_model::preprocess::load_image;
use screenpilot_model::quality::{EvalCase, Reference};
use screenpilot_model::{DType, Device, KernelConfig, ModelFolder, QuantType, Qwen3Vl, Tokenizer};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn load(folder: &ModelFolder, quant: Option<QuantType>) -> Qwen3Vl {
    Qwen3Vl::load_with(
        folder,
        DType::F32,
        &Device::Cpu,
        KernelConfig {
            quant,
            ..KernelConfig::candle_only()
        },
    )
    .unwrap()
}

#[test]
fn q8_0_is_close_to_the_unquantized_model_and_4_bits_are_further() {
    let folder = ModelFolder::open(fixtures().join("tiny"))
        .expect("run scripts/setup.sh to fetch the tokenizer");
    let tok = Tokenizer::from_file(&folder.tokenizer).unwrap();
    let images: Vec<_> = [
        "a_120x90.png",
        "b_200x300_rgba.png",
        "small_50x40.png",
        "trap_656x208.png",
    ]
    .iter()
    .map(|f| load_image(&fixtures().join("images").join(f)).unwrap())
    .collect();
    let dense = load(&folder, None);
    let cases = EvalCase::standard(&tok, &images, &folder.preprocess, dense.merge_size()).unwrap();
    assert_eq!(cases.len(), 5);
    let reference = Reference::compute(&dense, &cases, 32).unwrap();

    let same = reference.compare(&dense, &cases).unwrap();
    assert_eq!((same.max_kl, same.top1_agreement), (0.0, 1.0), "{same:?}");
    assert_eq!(same.greedy_same, same.greedy_total);
    assert_eq!(same.greedy_total, 5 * 32);
    drop(dense);

    let q8 = load(&folder, Some(QuantType::Q8_0));
    let s8 = q8.text.quant_summary();
    // 3 layers x (qkv, o, gate_up, down) + the LM head, all in q8_0 (widths 32 and 64).
    assert_eq!(
        (s8.quantized.clone(), s8.dense),
        (vec![("q8_0".to_string(), 13)], 0),
        "{s8}"
    );
    let r8 = reference.compare(&q8, &cases).unwrap();
    drop(q8);
    // Widths of 32 and 64 fit no k-quant block: q4_k falls back to q4_0 everywhere.
    let q4 = load(&folder, Some(QuantType::Q4K));
    let s4 = q4.text.quant_summary();
    assert_eq!(s4.quantized, vec![("q4_0".to_string(), 13)], "{s4}");
    assert!(s4.bytes < s8.bytes, "{s4} vs {s8}");
    let r4 = reference.compare(&q4, &cases).unwrap();
    eprintln!("q8_0: {r8:?}\nq4_k: {r4:?}");

    assert!(
        r8.positions > 5 * 32 && r8.positions == r4.positions,
        "{r8:?}"
    );
    // Measured 2026-12-08: q8_0 mean KL 0.0047, p99 0.024, top-1 93 %; q4_0 mean 0.67, top-1
    // 34 %. The tiny model is harsher on quantization than a real shape (rows of 32 or 64
    // weights share one or two scales, and its random logits are nearly flat, so the top token
    // flips on small changes); BENCHMARKS.md has the 2B shape's numbers.
    assert!(
        r8.mean_kl > 0.0 && r8.mean_kl <= 0.01,
        "q8_0 mean KL {}",
        r8.mean_kl
    );
    assert!(r8.p99_kl <= 0.05, "q8_0 p99 KL {}", r8.p99_kl);
    assert!(
        r8.top1_agreement >= 0.9,
        "q8_0 top-1 agreement {}",
        r8.top1_agreement
    );
    assert!(
        r4.mean_kl > 10.0 * r8.mean_kl,
        "q4 mean KL {} vs q8_0 {}",
        r4.mean_kl,
        r8.mean_kl
    );
    assert!(r4.p99_kl > r8.p99_kl && r4.top1_agreement < r8.top1_agreement);
    assert!(r4.greedy_same < r8.greedy_same);
}
