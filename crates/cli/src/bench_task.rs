//! `screenpilot bench-task`: the cost of each step of a GUI task through the engine, as the
//! agent loop asks it: step k's conversation holds the system prompt with the `computer_use`
//! tool, the task, k screenshots (the first with the task, each later one in a tool result
//! after the previous answer) and k-1 answers. Random weights at a named shape (or `--model`),
//! synthetic screenshots, greedy answers of `--answer-tokens` tokens. Each repetition uses new
//! screenshots; the first is a warm-up. `bench/hf_task_steps.py` is the same in transformers,
//! which re-runs the whole conversation every step.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use screenpilot_agent::computer_use_tool;
use screenpilot_engine::backend::LocalBackend;
use screenpilot_engine::bench_task::{task_steps, TaskStep, TaskStepsCase};
use screenpilot_engine::{Engine, EngineConfig, EngineHandle, ImageSource};
use screenpilot_model::config::named_shape;
use screenpilot_model::{PreprocessConfig, Qwen3Vl, Tokenizer};
use serde_json::json;

use crate::args::{ModelArgs, RuntimeArgs};
use crate::load::{device, dtype, load};

#[derive(Args, Debug)]
pub struct BenchTaskArgs {
    /// A real model folder (otherwise random weights at --shape).
    #[arg(long, conflicts_with = "shape")]
    pub model: Option<PathBuf>,
    /// Random weights at a published shape: 2b, 4b or 8b (default 2b).
    #[arg(long)]
    pub shape: Option<String>,
    /// The tokenizer for random weights.
    #[arg(long, default_value = "tests/fixtures/tokenizer/tokenizer.json")]
    pub tokenizer: PathBuf,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Steps (screenshots) per task.
    #[arg(long, default_value_t = 6)]
    pub steps: usize,
    /// Screenshot size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1920x1080")]
    pub screen: String,
    /// Tokens each answer has.
    #[arg(long, default_value_t = 32)]
    pub answer_tokens: usize,
    /// Measured tasks (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// The prefix cache's budget (default: what `do` uses, 4096 MiB).
    #[arg(long, default_value_t = crate::backend::TASK_PREFIX_CACHE_BYTES >> 20)]
    pub prefix_cache_mib: usize,
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// A synthetic screenshot, different for each `salt`.
fn screen(w: u32, h: u32, salt: u32) -> ImageSource {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7 + y + salt * 31) as u8, (y * 3 + salt * 17) as u8, ((x ^ y) * 5 + salt) as u8])
    });
    ImageSource::Image(std::sync::Arc::new(image::DynamicImage::ImageRgb8(img)))
}

pub fn run(a: BenchTaskArgs) -> anyhow::Result<ExitCode> {
    let (w, h) = a
        .screen
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .with_context(|| format!("--screen must be WIDTHxHEIGHT (given: {})", a.screen))?;
    if a.steps == 0 || a.answer_tokens == 0 {
        bail!("--steps and --answer-tokens must be at least 1");
    }
    let (model, tok, mut pcfg, label) = match &a.model {
        Some(dir) => {
            let l = load(&ModelArgs { model: dir.clone(), runtime: a.runtime.clone() })?;
            (l.model, l.tok, l.preprocess, dir.display().to_string())
        }
        None => {
            let shape = a.shape.as_deref().unwrap_or("2b");
            let cfg = named_shape(shape).with_context(|| format!("unknown shape {shape:?} (2b, 4b, 8b)"))?;
            let dev = device(a.runtime.device)?;
            let model = Qwen3Vl::random_with(&cfg, dtype(a.runtime.dtype, &dev), &dev, crate::load::kernels(&a.runtime))?;
            let tok = Tokenizer::from_file(&a.tokenizer)
                .with_context(|| format!("random weights need a tokenizer: {}", a.tokenizer.display()))?;
            (model, tok, PreprocessConfig::default(), format!("random {shape}"))
        }
    };
    if let Some(n) = a.runtime.max_image_tokens {
        pcfg.max_image_tokens = Some(n);
    }
    let dev = format!("{:?}", model.device());
    let backend = LocalBackend::new(EngineHandle::spawn(Engine::new(model, tok, pcfg, EngineConfig { prefix_cache_bytes: a.prefix_cache_mib << 20, ..EngineConfig::default() }))?);
    let mut reps: Vec<Vec<TaskStep>> = Vec::new();
    for rep in 0..=a.reps {
        let case = TaskStepsCase {
            screens: (0..a.steps).map(|k| screen(w, h, (rep * a.steps + k) as u32 + 1)).collect(),
            system: screenpilot_agent::brain::DEFAULT_SYSTEM_PROMPT.into(),
            tools: vec![computer_use_tool(1000, 1000)],
            task: format!("Task {rep}: open the settings and turn on dark mode."),
            answer_tokens: a.answer_tokens,
        };
        let steps = task_steps(&backend, &case)?;
        if rep > 0 {
            reps.push(steps);
        }
    }
    let per_step: Vec<serde_json::Value> = (0..a.steps)
        .map(|k| {
            let col = |f: fn(&TaskStep) -> f64| crate::bench::stats(&reps.iter().map(|r| f(&r[k])).collect::<Vec<_>>());
            let t = &reps[0][k].timings;
            json!({
                "step": k + 1, "images": k + 1, "prompt_tokens": t.prompt_tokens,
                "cached_prompt_tokens": t.cached_prompt_tokens, "prefill_tokens": t.prefill_tokens,
                "vision_cache_hits": t.vision_cache_hits,
                "preprocess_ms": col(|s| s.timings.preprocess_ms), "vision_ms": col(|s| s.timings.vision_ms),
                "prefill_ms": col(|s| s.timings.prefill_ms), "ttft_ms": col(|s| s.timings.ttft_ms),
            })
        })
        .collect();
    let report = json!({"model": label, "device": dev, "screen": [w, h], "answer_tokens": a.answer_tokens,
                        "prefix_cache_mib": a.prefix_cache_mib,
                        "reps": reps.len(), "steps": per_step});
    println!(
        "{:<6}{:>8}{:>10}{:>11}{:>15}{:>11}{:>12}{:>10}",
        "step", "images", "prompt", "prefilled", "preprocess ms", "vision ms", "prefill ms", "TTFT ms"
    );
    for s in &per_step {
        let m = |k: &str| s[k]["median"].as_f64().unwrap_or(f64::NAN);
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        println!(
            "{:<6}{:>8}{:>10}{:>11}{:>15.2}{:>11.2}{:>12.2}{:>10.2}",
            n("step"), n("images"), n("prompt_tokens"), n("prefill_tokens"),
            m("preprocess_ms"), m("vision_ms"), m("prefill_ms"), m("ttft_ms")
        );
    }
    if let Some(p) = &a.json_out {
        std::fs::write(p, serde_json::to_string_pretty(&report)?).with_context(|| p.display().to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}
