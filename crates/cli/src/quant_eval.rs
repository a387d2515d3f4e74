//! `screenpilot quant-eval`: what each quantization costs in quality on a model folder, the
//! way llama.cpp's `llama-perplexity --kl-divergence` reports it (mean and 99th-percentile KL
//! divergence of the next-token distribution against the unquantized model, top-1 agreement),
//! plus greedy agreement, over the fixed evaluation set of `screenpilot_model::quality`
//! (its questions about four synthetic screens, and one without an image). One JSON line per
//! quantization, then a table on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use screenpilot_model::quality::{EvalCase, Reference};
use screenpilot_model::{KernelConfig, ModelFolder, QuantType, Qwen3Vl, Tokenizer};
use serde_json::json;

use crate::args::RuntimeArgs;
use crate::load::{device, dtype, kernels};

#[derive(Args, Debug)]
pub struct QuantEvalArgs {
    /// The model folder (its unquantized weights are the reference).
    #[arg(long)]
    pub model: PathBuf,
    /// Quantizations to measure, comma-separated (q8_0, q6_k, q5_k, q4_k, q4_0).
    #[arg(long, value_delimiter = ',', default_value = "q8_0,q4_k")]
    pub quants: Vec<String>,
    /// Greedy tokens after each prompt (compared positions and greedy agreement).
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    /// Side of the synthetic screens' longer edge (the four are 4:3, 16:9, 1:1 and 16:10).
    #[arg(long, default_value_t = 640)]
    pub screen: u32,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// The four screens of the evaluation set, `side` pixels on their longer edge.
fn screens(side: u32) -> Vec<image::DynamicImage> {
    [(4, 3), (16, 9), (1, 1), (16, 10)]
        .iter()
        .map(|&(w, h)| crate::bench::synthetic_screen(side, side * h / w))
        .collect()
}

pub fn run(a: QuantEvalArgs) -> anyhow::Result<ExitCode> {
    if a.runtime.quant.is_some() {
        bail!("give the quantizations with --quants; the reference is the unquantized model");
    }
    let quants = a
        .quants
        .iter()
        .map(|q| q.parse::<QuantType>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if quants.is_empty() || a.tokens == 0 {
        bail!("give at least one quantization and --tokens of at least 1");
    }
    let folder =
        ModelFolder::open(&a.model).with_context(|| format!("opening {}", a.model.display()))?;
    let tok = Tokenizer::from_file(&folder.tokenizer)?;
    let dev = device(a.runtime.device)?;
    let dt = dtype(a.runtime.dtype, &dev);
    let base = kernels(&a.runtime);
    let load = |quant| Qwen3Vl::load_with(&folder, dt, &dev, KernelConfig { quant, ..base });

    let t = Instant::now();
    let reference_model = load(None)?;
    let cases = EvalCase::standard(
        &tok,
        &screens(a.screen),
        &folder.preprocess,
        reference_model.merge_size(),
    )?;
    let reference = Reference::compute(&reference_model, &cases, a.tokens)?;
    let dense = reference_model.text.quant_summary();
    drop(reference_model);
    eprintln!(
        "reference ({dt:?}, {dense}): {} prompts in {:.1} s",
        cases.len(),
        t.elapsed().as_secs_f64()
    );

    let mut rows = Vec::new();
    for q in quants {
        let t = Instant::now();
        let model = load(Some(q))?;
        let summary = model.text.quant_summary();
        let r = reference.compare(&model, &cases)?;
        drop(model);
        let line = json!({
            "model": folder.dir.display().to_string(), "dtype": format!("{dt:?}"), "quant": q.name(),
            "projections": summary.to_string(), "projection_bytes": summary.bytes, "dense_projection_bytes": dense.bytes,
            "prompts": cases.len(), "positions": r.positions, "mean_kl": r.mean_kl, "p99_kl": r.p99_kl, "max_kl": r.max_kl,
            "top1_agreement": r.top1_agreement, "greedy_same": r.greedy_same, "greedy_total": r.greedy_total,
            "seconds": t.elapsed().as_secs_f64(),
        });
        crate::out_line(&line.to_string())?;
        rows.push((q, r, summary.bytes));
    }
    eprintln!("\n| quant | LM projections | mean KL | p99 KL | top-1 agreement | greedy tokens identical |");
    eprintln!("|---|---|---|---|---|---|");
    for (q, r, bytes) in rows {
        eprintln!(
            "| {q} | {:.0} MB of {:.0} | {:.5} | {:.5} | {:.2} % | {}/{} |",
            bytes as f64 / 1e6,
            dense.bytes as f64 / 1e6,
            r.mean_kl,
            r.p99_kl,
            100.0 * r.top1_agreement,
            r.greedy_same,
            r.greedy_total
        );
    }
    Ok(ExitCode::SUCCESS)
}
