//! Each op with our CUDA kernel against the same op with candle's fallback, on the GPU: the
//! kernel must apply to these shapes (checked) and agree with the fallback within bf16 rounding.
//! Runs with `--features cuda` on a machine with a GPU (bench/gpu_parity.sh); skipped nowhere:
//! without a GPU the first test fails at `cuda_device`.

use candle_core::{DType, Device, Tensor, D};

use super::rope::{QkNorm, RopeRef};
use super::{Act, KernelConfig, LayerNorm, Ops, RmsNorm};

fn gpu() -> Device {
    crate::cuda_device(0).unwrap_or_else(|e| panic!("these tests need a CUDA GPU: {e}"))
}

fn both(dev: &Device) -> (Ops, Ops) {
    (Ops::new(dev, KernelConfig::default()), Ops::new(dev, KernelConfig::candle_only()))
}

fn randn(shape: &[usize], dev: &Device) -> Tensor {
    Tensor::randn(0f32, 1f32, shape, dev).and_then(|t| t.to_dtype(DType::BF16)).unwrap_or_else(|e| panic!("{e}"))
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).unwrap_or_else(|e| panic!("{e}"))
}

/// Largest |a - b| relative to the largest |b|, and the cosine of the two.
fn close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let (a, b) = (f32s(a), f32s(b));
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    let diff = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let cos = dot / (norm(&a) * norm(&b)).max(1e-30);
    println!("{what}: max |diff| / max |ref| = {:.2e}, cosine {cos:.6}", diff / scale);
    assert!(a.iter().all(|x| x.is_finite()), "{what}: kernel output not finite");
    assert!(diff / scale <= tol && cos > 0.9999, "{what}: off by {:.3e} (tolerance {tol:.1e}), cosine {cos}", diff / scale);
}

fn ones(n: usize, dev: &Device) -> Tensor {
    Tensor::ones(n, DType::BF16, dev).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn norms_match_candle() {
    let dev = gpu();
    let (k, c) = both(&dev);
    let (x, y) = (randn(&[2, 37, 2048], &dev), randn(&[2, 37, 2048], &dev));
    let rms = RmsNorm { weight: (randn(&[2048], &dev) * 0.1).and_then(|w| w + 1.0).unwrap_or_else(|e| panic!("{e}")), eps: 1e-6 };
    assert!(k.kernels().add_rms_norm(&x, &y, &rms.weight, 1e-6).unwrap_or_else(|e| panic!("{e}")).is_some(), "kernel applies");
    let (ks, kn) = k.add_rms_norm(&x, &y, &rms).unwrap_or_else(|e| panic!("{e}"));
    let (cs, cn) = c.add_rms_norm(&x, &y, &rms).unwrap_or_else(|e| panic!("{e}"));
    close("add_rms_norm sum", &ks, &cs, 0.0);
    close("add_rms_norm norm", &kn, &cn, 1e-2);

    let vb = candle_nn::VarBuilder::from_tensors(
        [("weight".to_string(), randn(&[1024], &dev)), ("bias".to_string(), randn(&[1024], &dev))].into_iter().collect(),
        DType::BF16,
        &dev,
    );
    let ln = LayerNorm::new(1024, vb).unwrap_or_else(|e| panic!("{e}"));
    let (x, y) = (randn(&[300, 1024], &dev), randn(&[300, 1024], &dev));
    close("layer_norm", &k.layer_norm(&x, &ln).unwrap_or_else(|e| panic!("{e}")), &c.layer_norm(&x, &ln).unwrap_or_else(|e| panic!("{e}")), 1e-2);
    let (ks, kn) = k.add_layer_norm(&x, Some(&y), &ln).unwrap_or_else(|e| panic!("{e}"));
    let (cs, cn) = c.add_layer_norm(&x, Some(&y), &ln).unwrap_or_else(|e| panic!("{e}"));
    close("add_layer_norm sum", &ks, &cs, 0.0);
    close("add_layer_norm norm", &kn, &cn, 1e-2);
}

#[test]
fn linears_match_candle() {
    let dev = gpu();
    let (k, c) = both(&dev);
    let w = (randn(&[4096, 1024], &dev) * (1.0 / 32.0)).unwrap_or_else(|e| panic!("{e}"));
    let lin = candle_nn::Linear::new(w.clone(), Some(randn(&[4096], &dev)));
    let x = randn(&[256, 1024], &dev);
    assert!(k.kernels().linear(&x, &w, lin.bias(), Act::GeluTanh).unwrap_or_else(|e| panic!("{e}")).is_some(), "cuBLASLt applies");
    for act in [Act::None, Act::GeluTanh, Act::GeluErf] {
        let (a, b) = (k.linear(&lin, &x, act).unwrap_or_else(|e| panic!("{e}")), c.linear(&lin, &x, act).unwrap_or_else(|e| panic!("{e}")));
        close(&format!("linear {act:?}"), &a, &b, 2e-2);
    }
    let x3 = randn(&[1, 100, 1024], &dev);
    close("project (prefill rows)", &k.project(&lin, &x3).unwrap_or_else(|e| panic!("{e}")), &c.project(&lin, &x3).unwrap_or_else(|e| panic!("{e}")), 2e-2);
    let mm = x.matmul(&w.t().unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"));
    let bias = lin.bias().unwrap_or_else(|| panic!("bias"));
    close("bias_act gelu_erf", &k.bias_act(&mm, bias, Act::GeluErf).unwrap_or_else(|e| panic!("{e}")), &c.bias_act(&mm, bias, Act::GeluErf).unwrap_or_else(|e| panic!("{e}")), 2e-2);
}

fn causal_mask(q: usize, past: usize, dev: &Device) -> Tensor {
    let kv = past + q;
    let m: Vec<f32> = (0..q).flat_map(|i| (0..kv).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(m, (q, kv), dev).and_then(|t| t.to_dtype(DType::BF16)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn attention_matches_candle() {
    let dev = gpu();
    let (k, c) = both(&dev);
    let scale = 128f64.powf(-0.5);
    // A prefill of 100 tokens after 50 cached ones, 16 query heads over 8 key heads.
    let (q, kk, v) = (randn(&[1, 16, 100, 128], &dev), randn(&[1, 8, 150, 128], &dev), randn(&[1, 8, 150, 128], &dev));
    let mask = causal_mask(100, 50, &dev);
    let a = k.causal_attention(&q, &kk, &v, scale, || Ok(Some(&mask))).unwrap_or_else(|e| panic!("{e}"));
    let b = c.causal_attention(&q, &kk, &v, scale, || Ok(Some(&mask))).unwrap_or_else(|e| panic!("{e}"));
    close("causal attention (prefill)", &a, &b, 2e-2);
    // One new token over 1546 cached keys.
    let (q, kk, v) = (randn(&[1, 16, 1, 128], &dev), randn(&[1, 8, 1546, 128], &dev), randn(&[1, 8, 1546, 128], &dev));
    assert!(k.kernels().decode_attention(&q, &kk, &v, scale as f32).unwrap_or_else(|e| panic!("{e}")).is_some(), "decode kernel applies");
    let a = k.causal_attention(&q, &kk, &v, scale, || Ok(None)).unwrap_or_else(|e| panic!("{e}"));
    let b = c.causal_attention(&q, &kk, &v, scale, || Ok(None)).unwrap_or_else(|e| panic!("{e}"));
    close("causal attention (decode)", &a, &b, 2e-2);
    // The vision tower: two images of 64 and 196 patches, 16 heads of 64.
    let (q, kk, v) = (randn(&[16, 260, 64], &dev), randn(&[16, 260, 64], &dev), randn(&[16, 260, 64], &dev));
    let chunks = [(0, 64), (64, 196)];
    let a = k.windowed_attention(&q, &kk, &v, &chunks, 0.125).unwrap_or_else(|e| panic!("{e}"));
    let b = c.windowed_attention(&q, &kk, &v, &chunks, 0.125).unwrap_or_else(|e| panic!("{e}"));
    close("windowed attention", &a, &b, 2e-2);
}

#[test]
fn ropes_match_candle() {
    let dev = gpu();
    let (k, c) = both(&dev);
    let (s, hd) = (37, 128);
    let angles: Vec<f32> = (0..s).flat_map(|p| (0..hd / 2).map(move |i| p as f32 * 10000f32.powf(-((2 * i) as f32) / hd as f32))).collect();
    let a = Tensor::from_vec(angles, (s, hd / 2), &dev).unwrap_or_else(|e| panic!("{e}"));
    let (cos, sin) = (a.cos().and_then(|t| t.to_dtype(DType::BF16)).unwrap_or_else(|e| panic!("{e}")), a.sin().and_then(|t| t.to_dtype(DType::BF16)).unwrap_or_else(|e| panic!("{e}")));
    let cos_sin = Tensor::cat(&[&cos, &sin], D::Minus1).unwrap_or_else(|e| panic!("{e}"));
    let norm = QkNorm::new(RmsNorm { weight: ones(hd, &dev), eps: 1e-6 }, RmsNorm { weight: (ones(hd, &dev) * 0.5).unwrap_or_else(|e| panic!("{e}")), eps: 1e-6 })
        .unwrap_or_else(|e| panic!("{e}"));
    let qk = randn(&[1, s, 16 + 8, hd], &dev);
    let (kq, kk) = k.qk_norm_rope(&qk, 16, &norm, &RopeRef { cos: &cos, sin: &sin, cos_sin: Some(&cos_sin) }).unwrap_or_else(|e| panic!("{e}"));
    let (cq, ck) = c.qk_norm_rope(&qk, 16, &norm, &RopeRef { cos: &cos, sin: &sin, cos_sin: None }).unwrap_or_else(|e| panic!("{e}"));
    close("qk_norm_rope q", &kq, &cq, 2e-2);
    close("qk_norm_rope k", &kk, &ck, 2e-2);

    // The vision rope: f32 half tables, 16 heads of 64, q scaled by 1/8.
    let a32 = a.narrow(1, 0, 32).unwrap_or_else(|e| panic!("{e}"));
    let (cos, sin) = (a32.cos().unwrap_or_else(|e| panic!("{e}")), a32.sin().unwrap_or_else(|e| panic!("{e}")));
    let qkv = randn(&[s, 3 * 16 * 64], &dev);
    let (kq, kk) = k.vision_rope(&qkv, 16, &cos, &sin, Some(0.125)).unwrap_or_else(|e| panic!("{e}"));
    let (cq, ck) = c.vision_rope(&qkv, 16, &cos, &sin, Some(0.125)).unwrap_or_else(|e| panic!("{e}"));
    close("vision_rope q", &kq, &cq, 1e-2);
    close("vision_rope k", &kk, &ck, 1e-2);
}

#[test]
fn elementwise_ops_match_candle() {
    let dev = gpu();
    let (k, c) = both(&dev);
    let gu = randn(&[1, 37, 2 * 3072], &dev);
    assert!(k.kernels().swiglu(&gu).unwrap_or_else(|e| panic!("{e}")).is_some(), "swiglu kernel applies");
    close("swiglu", &k.swiglu(&gu).unwrap_or_else(|e| panic!("{e}")), &c.swiglu(&gu).unwrap_or_else(|e| panic!("{e}")), 0.0);
    let x = randn(&[50, 2048], &dev);
    let rows = Tensor::new(&[3u32, 7, 8, 49], &dev).unwrap_or_else(|e| panic!("{e}"));
    let feat = randn(&[4, 2048], &dev);
    close("rows_add", &k.rows_add(&x, &rows, &feat).unwrap_or_else(|e| panic!("{e}")), &c.rows_add(&x, &rows, &feat).unwrap_or_else(|e| panic!("{e}")), 0.0);
    // A prefill's keys (a strided view, as the projection gives them) into a cache with room.
    let src = randn(&[1, 20, 8, 128], &dev).transpose(1, 2).unwrap_or_else(|e| panic!("{e}"));
    let (dk, dc) = (Tensor::zeros((1, 8, 256, 128), DType::BF16, &dev).unwrap_or_else(|e| panic!("{e}")), Tensor::zeros((1, 8, 256, 128), DType::BF16, &dev).unwrap_or_else(|e| panic!("{e}")));
    k.kv_write(&dk, &src, 30).unwrap_or_else(|e| panic!("{e}"));
    c.kv_write(&dc, &src, 30).unwrap_or_else(|e| panic!("{e}"));
    close("kv_write", &dk, &dc, 0.0);
}
