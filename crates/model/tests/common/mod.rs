//! What the exactness tests share: where the fixtures are, the tolerances, and the comparisons
//! of activations and logits against the reference summaries tools/make_fixtures.py writes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use screenpilot_model::generate::argmax;
use screenpilot_model::{DType, KvCache, LogitsFor, PromptInput, Qwen3Vl, Tensor};

/// Prefills `prompt` into `cache` and decodes greedily until `n` tokens are chosen: the ids and
/// each step's full logits row.
pub fn greedy(model: &Qwen3Vl, prompt: &PromptInput, cache: &mut KvCache, n: usize) -> (Vec<i64>, Vec<Vec<f32>>) {
    let mut logits = model.prefill(prompt, cache, LogitsFor::Last).unwrap().logits;
    let (mut ids, mut rows) = (Vec::new(), Vec::new());
    for step in 0..n {
        let row: Vec<f32> = logits.to_vec1().unwrap();
        let id = argmax(&row);
        ids.push(id as i64);
        rows.push(row);
        if step + 1 < n {
            logits = model.decode_step(id, cache).unwrap();
        }
    }
    (ids, rows)
}

/// Logit tolerance: relative to the largest magnitude in the row.
pub const LOGIT_TOL: f32 = 1e-4;
/// Tolerance of intermediate activations, relative to the largest reference magnitude.
pub const ACT_TOL: f32 = 1e-4;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn vec2(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2().unwrap()
}

/// max |a - b| / max(|b|, 1e-6) over the whole tensor.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6);
    diff / scale
}

/// Compares full logits rows (ours) against the reference summaries with `prefix` (prompt_/gen_).
pub fn check_logits(case: &str, what: &str, ours: &[Vec<f32>], t: &HashMap<String, Tensor>, prefix: &str) {
    let top_ids: Vec<Vec<i64>> = t[&format!("{prefix}top_ids")].to_vec2().unwrap();
    let top_vals = vec2(&t[&format!("{prefix}top_vals")]);
    let strided = vec2(&t[&format!("{prefix}strided")]);
    let lse: Vec<f32> = t[&format!("{prefix}lse")].to_vec1().unwrap();
    assert_eq!(ours.len(), top_ids.len(), "{case}: {what}: number of rows");
    for (i, row) in ours.iter().enumerate() {
        let scale = top_vals[i].iter().chain(strided[i].iter()).fold(1e-6f32, |m, x| m.max(x.abs()));
        let tol = LOGIT_TOL * scale;
        for (j, r) in strided[i].iter().enumerate() {
            let o = row[j * 37];
            assert!((o - r).abs() <= tol, "{case}: {what} row {i} id {}: ours {o} ref {r}", j * 37);
        }
        for (k, (&id, &v)) in top_ids[i].iter().zip(&top_vals[i]).enumerate() {
            let o = row[id as usize];
            assert!((o - v).abs() <= tol, "{case}: {what} row {i} top{k} id {id}: ours {o} ref {v}");
        }
        assert_eq!(argmax(row) as i64, top_ids[i][0], "{case}: {what} row {i}: top-1 differs");
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let ours_lse = (row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m) as f32;
        assert!((ours_lse - lse[i]).abs() <= tol, "{case}: {what} row {i} logsumexp: ours {ours_lse} ref {}", lse[i]);
    }
}
