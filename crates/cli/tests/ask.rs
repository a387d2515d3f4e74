//! The `screenpilot ask` binary end to end: its --json output against the transformers
//! reference of the tiny model, streaming, and one clear error line for bad input.

use std::process::{Command, Output};

#[path = "support/cli.rs"]
mod cli;
use cli::{ask, assert_one_clear_error, root};


fn reference(case: &str) -> serde_json::Value {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/reference/cases.json")).unwrap())
            .unwrap();
    meta["cases"][case].clone()
}

fn image(name: &str) -> String {
    root().join("tests/fixtures/images").join(name).to_string_lossy().into_owned()
}

#[test]
fn json_output_matches_the_transformers_reference() {
    let case = reference("two_images");
    let out = ask(&[
        "--image", &image("a_120x90.png"), "--image", &image("b_200x300_rgba.png"),
        "--system", case["system"].as_str().unwrap(),
        "--greedy", "--max-tokens", "12", "--json", case["text"].as_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    let ids: Vec<u64> = v["steps"].as_array().unwrap().iter().map(|s| s["id"].as_u64().unwrap()).collect();
    let want: Vec<u64> = case["generated_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(ids, want);
    for s in v["steps"].as_array().unwrap() {
        let top = s["top"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        assert_eq!(top[0][0].as_u64().unwrap(), s["id"].as_u64().unwrap(), "greedy takes the top logit");
        let vals: Vec<f64> = top.iter().map(|p| p[1].as_f64().unwrap()).collect();
        assert!(vals.windows(2).all(|w| w[0] >= w[1]), "top logits sorted: {vals:?}");
    }
    let n_prompt = v["prompt_token_ids"].as_array().unwrap().len();
    assert!(n_prompt > 30, "{n_prompt}");
    for k in ["preprocess_ms", "vision_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s"] {
        assert!(v["timings"][k].as_f64().is_some(), "timings.{k} missing");
    }
}

#[test]
fn streams_text_to_stdout_and_timings_to_stderr() {
    let out = ask(&["--greedy", "--max-tokens", "6", "Write a haiku about screens."]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("first token") && err.contains("tok/s"), "{err}");
}


#[test]
fn bad_inputs_exit_with_one_clear_error() {
    assert_one_clear_error(&ask(&["--image", "/no/such.png", "hi"]), "/no/such.png");
    let broken = std::env::temp_dir().join(format!("screenpilot-broken-{}.png", std::process::id()));
    let png = std::fs::read(image("small_50x40.png")).unwrap();
    std::fs::write(&broken, &png[..png.len() / 3]).unwrap();
    assert_one_clear_error(&ask(&["--image", broken.to_str().unwrap(), "hi"]), "decode");
    assert_one_clear_error(&ask(&["--context", "8", "a question longer than eight tokens, surely"]), "context");
    let out = Command::new(env!("CARGO_BIN_EXE_screenpilot"))
        .args(["ask", "--model", "/no/such/model", "hi"])
        .output()
        .unwrap();
    assert_one_clear_error(&out, "/no/such/model");
}

#[test]
fn ground_prints_json_and_exits_3_when_the_answer_has_no_boxes() {
    // The tiny random model writes no boxes: the JSON still comes, with the error and exit code 3.
    let out = Command::new(env!("CARGO_BIN_EXE_screenpilot"))
        .args(["ground", "--model"])
        .arg(root().join("tests/fixtures/tiny"))
        .args(["--image", &image("trap_656x208.png"), "--max-tokens", "4", "--origin=-1920,0", "the OK button"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["image"], serde_json::json!([656, 208]));
    assert!(v["error"].as_str().unwrap().contains("bbox_2d"));
    assert_eq!(v["objects"].as_array().unwrap().len(), 0);
}

#[test]
fn serve_refuses_a_non_loopback_address_without_an_api_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_screenpilot"))
        .args(["serve", "--model"])
        .arg(root().join("tests/fixtures/tiny"))
        .args(["--host", "0.0.0.0", "--port", "0"])
        .output()
        .unwrap();
    assert_one_clear_error(&out, "--api-key");
}

fn ground(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_screenpilot"))
        .args(["ground", "--model"])
        .arg(root().join("tests/fixtures/tiny"))
        .args(["--image", &image("small_50x40.png")])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn token_limits_that_cannot_work_are_clear_errors() {
    let huge = usize::MAX.to_string();
    // Not an overflow panic: the limit and the real prompt length are named.
    let out = ask(&["--max-tokens", &huge, "hi"]);
    assert_one_clear_error(&out, &format!("--max-tokens is {huge}; the context holds 4096"));
    assert_one_clear_error(&ground(&["--max-tokens", &huge, "the OK button"]), "the context holds 4096");
    // Zero would answer nothing and exit 0.
    assert_one_clear_error(&ask(&["--max-tokens", "0", "hi"]), "--max-tokens must be at least 1");
    assert_one_clear_error(&ground(&["--max-tokens", "0", "the OK button"]), "--max-tokens must be at least 1");
    // A context too small names the prompt's length and the context, not their sum.
    let out = ask(&["--context", "8", "--max-tokens", "3", "a question longer than eight tokens, surely"]);
    assert_one_clear_error(&out, "asks for 3 more, but the context holds 8");
    let err = String::from_utf8_lossy(&out.stderr);
    let n: usize = err.split("the prompt has ").nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
    assert!(n > 8 && n < 40, "{err}");
}

#[test]
fn rust_backtrace_adds_no_backtrace_to_the_error_line() {
    // A model folder whose weights have a tensor of the wrong shape: candle builds that error
    // with a captured backtrace when RUST_BACKTRACE is set.
    let dir = std::env::temp_dir().join(format!("screenpilot-cli-backtrace-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tiny = root().join("tests/fixtures/tiny");
    for f in ["config.json", "tokenizer.json", "preprocessor_config.json"] {
        std::fs::copy(tiny.join(f), dir.join(f)).unwrap();
    }
    let dev = candle_core::Device::Cpu;
    let mut tensors = candle_core::safetensors::load(tiny.join("model.safetensors"), &dev).unwrap();
    let name = "model.language_model.layers.1.mlp.up_proj.weight";
    tensors.insert(name.into(), candle_core::Tensor::zeros((48, 32), candle_core::DType::BF16, &dev).unwrap());
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    for args in [vec!["ask", "hi"], vec!["ground", "--image", &image("small_50x40.png"), "the OK button"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_screenpilot"))
            .args(&args[..1])
            .arg("--model")
            .arg(&dir)
            .args(&args[1..])
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "1")
            .output()
            .unwrap();
        assert_one_clear_error(&out, name);
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(!err.contains("backtrace") && !err.contains(" at /"), "{err}");
    }
}
