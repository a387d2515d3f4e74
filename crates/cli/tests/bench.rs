//! `screenpilot bench` on the tiny model (CPU, a small image): the single-run report keeps its
//! fields, and `--batch N` adds N concurrent requests through the engine, decoded in batches,
//! against the same requests one at a time.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bench(extra: &[&str], json: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_screenpilot"))
        .args(["bench", "--model"])
        .arg(root().join("tests/fixtures/tiny"))
        .args(["--device", "cpu", "--image-size", "64", "--text-tokens", "16", "--new-tokens", "6"])
        .args(["--followup-tokens", "12", "--reps", "1", "--json-out"])
        .arg(json)
        .args(extra)
        .output()
        .expect("run screenpilot")
}

#[test]
fn batch_bench_reports_batched_and_one_at_a_time_throughput_next_to_the_single_run() {
    let json = std::env::temp_dir().join(format!("screenpilot-bench-{}.json", std::process::id()));
    let out = bench(&["--batch", "3"], &json);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for k in ["preprocess_ms", "vision_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s", "followup_ttft_ms"] {
        assert!(v[k]["median"].as_f64().is_some(), "{k} missing");
    }
    for k in ["model", "device", "dtype", "image", "visual_tokens", "prompt_tokens", "new_tokens", "reps"] {
        assert!(!v[k].is_null(), "{k} missing");
    }
    let b = &v["batch"];
    assert_eq!(b["requests"], 3);
    assert_eq!(b["prompt_tokens"], v["prompt_tokens"], "each request is the single run's workload");
    assert_eq!(b["same_tokens_as_one_at_a_time"], true);
    assert!(b["batched"]["mean_batch"]["median"].as_f64().unwrap() > 1.5, "{b}");
    assert_eq!(b["one_at_a_time"]["mean_batch"]["median"].as_f64(), Some(1.0));
    for k in ["decode_ratio", "throughput_ratio"] {
        assert!(b[k]["median"].as_f64().unwrap() > 0.0, "{k}");
    }
    assert_eq!(b["batched_request_timings"].as_array().unwrap().len(), 3);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("batch of 3") && table.contains("throughput_tokens_per_s"), "{table}");
    let _ = std::fs::remove_file(&json);
}

#[test]
fn batch_zero_is_one_clear_error() {
    let json = std::env::temp_dir().join(format!("screenpilot-bench0-{}.json", std::process::id()));
    let out = bench(&["--batch", "0"], &json);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: ") && err.contains("--batch"), "{err}");
}
