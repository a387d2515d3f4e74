//! `screenpilot bench`: the speed workload (one image + text, then greedy tokens) on random
//! weights at a named shape or on a real model folder. Reports preprocessing, vision, prefill,
//! time to first token, decode tokens/s (median and spread over repetitions), peak GPU memory,
//! and a second question on the same image that reuses the cached prefix. With `--batch N` it
//! then measures N such requests through the engine, batched and one at a time
//! ([`crate::bench_batch`]).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use screenpilot_model::config::named_shape;
use screenpilot_model::generate::argmax;
use screenpilot_model::profile;
use screenpilot_model::preprocess::preprocess;
use screenpilot_model::{Device, GridThw, LogitsFor, PreprocessConfig, PromptInput, Qwen3Vl, Tensor, Tokenizer};
use serde_json::json;

use crate::args::{BenchArgs, ModelArgs};
use crate::bench_batch::{self, BatchWorkload};
use crate::load::{device, dtype, load};

const IM_START: u32 = 151644;
const IM_END: u32 = 151645;
const VISION_START: u32 = 151652;
const VISION_END: u32 = 151653;
const NEWLINE: u32 = 198;
const USER: u32 = 872;
const ASSISTANT: u32 = 77091;

/// One repetition's measurements, in milliseconds unless named otherwise.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Run {
    preprocess_ms: f64,
    vision_ms: f64,
    prefill_ms: f64,
    ttft_ms: f64,
    decode_tokens_per_s: f64,
    followup_ttft_ms: f64,
}

/// Ordinary text ids (no special tokens), deterministic.
fn text_ids(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| 1000 + (i.wrapping_mul(7919).wrapping_add(salt * 104729)) % 140000).collect()
}

fn synthetic_screen(w: u32, h: u32) -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7 + y) as u8, (y * 3) as u8, ((x ^ y) * 5) as u8])
    }))
}

fn sync(t: &Tensor) -> anyhow::Result<()> {
    Ok(t.device().synchronize()?)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

#[cfg(feature = "cuda")]
fn gpu_used_bytes(dev: &Device) -> Option<u64> {
    if !dev.is_cuda() {
        return None;
    }
    let (free, total) = candle_core::cuda_backend::cudarc::driver::result::mem_get_info().ok()?;
    Some((total - free) as u64)
}

#[cfg(not(feature = "cuda"))]
fn gpu_used_bytes(_dev: &Device) -> Option<u64> {
    None
}

/// The high-water mark of memory held by tensors on CUDA device 0, what
/// `torch.cuda.max_memory_allocated` reports on the reference's side: the stream-ordered pool
/// candle allocates from plus the memory of CUDA graphs. `reset` starts it at what is held now.
/// (The device-wide number also counts the CUDA context, cuBLAS and pool slack.)
#[cfg(feature = "cuda")]
fn tensor_peak_bytes(dev: &Device, reset: bool) -> Option<u64> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    if !dev.is_cuda() {
        return None;
    }
    let mut d: sys::CUdevice = 0;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let (mut pooled, mut graphs) = (0u64, 0u64);
    // SAFETY: plain queries of device 0 (open: `dev` is a CUDA device) writing into locals of the
    // types the driver documents for these attributes (cuuint64_t).
    unsafe {
        sys::cuDeviceGet(&mut d, 0).result().ok()?;
        sys::cuDeviceGetDefaultMemPool(&mut pool, d).result().ok()?;
        let high = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
        let graph_high = sys::CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH;
        if reset {
            sys::cuMemPoolSetAttribute(pool, high, (&mut pooled as *mut u64).cast()).result().ok()?;
            sys::cuDeviceSetGraphMemAttribute(d, graph_high, (&mut graphs as *mut u64).cast()).result().ok()?;
        }
        sys::cuMemPoolGetAttribute(pool, high, (&mut pooled as *mut u64).cast()).result().ok()?;
        sys::cuDeviceGetGraphMemAttribute(d, graph_high, (&mut graphs as *mut u64).cast()).result().ok()?;
    }
    Some(pooled + graphs)
}

#[cfg(not(feature = "cuda"))]
fn tensor_peak_bytes(_dev: &Device, _reset: bool) -> Option<u64> {
    None
}

struct Workload {
    prefix: Vec<u32>,
    question: Vec<u32>,
    followup: Vec<u32>,
    new_tokens: usize,
}

/// Prints the stages recorded since `profile::enable()` (when profiling) under `title`.
fn report_stages(title: &str, on: bool) -> anyhow::Result<()> {
    if !on {
        return Ok(());
    }
    let stages = profile::take();
    let total: f64 = stages.iter().map(|s| s.1.as_secs_f64() * 1000.0).sum();
    crate::out_line(&format!("-- {title}: {total:.2} ms in profiled stages (GPU time between events on CUDA; elsewhere host time, device synchronised around each)"))?;
    for (name, d, n) in stages {
        let ms = d.as_secs_f64() * 1000.0;
        crate::out_line(&format!("   {name:<24}{ms:>10.3} ms {:>6.1}% {n:>7} calls", 100.0 * ms / total.max(1e-9)))?;
    }
    profile::enable();
    Ok(())
}

fn one_run(
    model: &Qwen3Vl,
    cfg: &PreprocessConfig,
    img: &image::DynamicImage,
    w: &Workload,
    prof: bool,
) -> anyhow::Result<Run> {
    if prof {
        profile::enable();
    }
    let mut r = Run::default();
    let t = Instant::now();
    let pre = preprocess(img, cfg)?;
    r.preprocess_ms = ms(t);
    let t = Instant::now();
    let vision = model.encode_images(&[&pre])?;
    sync(&vision.embeds)?;
    r.vision_ms = ms(t);
    report_stages("vision", prof)?;
    let grids: [GridThw; 1] = [pre.grid];
    let mut ids = w.prefix.clone();
    ids.extend(std::iter::repeat_n(model.config.image_token_id, pre.grid.num_tokens(model.merge_size())));
    ids.push(VISION_END);
    let shared = ids.len();
    ids.extend(&w.question);
    let mut cache = model.new_cache();
    let t = Instant::now();
    let prompt = PromptInput { ids: &ids, grids: &grids, vision: Some(&vision) };
    let logits = model.prefill(&prompt, &mut cache, LogitsFor::Last)?.logits;
    let mut next = argmax(&logits.to_vec1::<f32>()?);
    r.prefill_ms = ms(t);
    r.ttft_ms = r.preprocess_ms + r.vision_ms + r.prefill_ms;
    report_stages("prefill", prof)?;
    let t = Instant::now();
    for _ in 1..w.new_tokens {
        // Greedy on the device: one id comes back instead of 151936 logits.
        let l = model.decode_step(next, &mut cache)?;
        next = l.argmax(0)?.to_scalar::<u32>()?;
    }
    r.decode_tokens_per_s = (w.new_tokens - 1) as f64 / t.elapsed().as_secs_f64();
    report_stages("decode", prof)?;
    // Second question on the same screen: the image and everything before it stay cached.
    let t = Instant::now();
    cache.truncate(shared)?;
    let mut ids2 = ids[..shared].to_vec();
    ids2.extend(&w.followup);
    let prompt = PromptInput { ids: &ids2, grids: &grids, vision: Some(&vision) };
    let logits = model.prefill(&prompt, &mut cache, LogitsFor::Last)?.logits;
    argmax(&logits.to_vec1::<f32>()?);
    r.followup_ttft_ms = ms(t);
    report_stages("follow-up prefill", prof)?;
    if prof {
        profile::take();
    }
    Ok(r)
}

pub(crate) fn stats(xs: &[f64]) -> serde_json::Value {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let med = if v.is_empty() { f64::NAN } else { v[v.len() / 2] };
    json!({"median": med, "min": v.first(), "max": v.last(), "n": v.len()})
}

/// Where `--batch` finds a tokenizer for random weights when `--tokenizer` is not given (the
/// repository's copy, relative to the current folder).
const DEFAULT_TOKENIZER: &str = "tests/fixtures/tokenizer/tokenizer.json";

/// The tokenizer for `--batch`: `--tokenizer`, else the model folder's, else the repository's.
fn batch_tokenizer(a: &BenchArgs, folder_tok: Option<Tokenizer>) -> anyhow::Result<Tokenizer> {
    let path = match (&a.tokenizer, folder_tok) {
        (None, Some(t)) => return Ok(t),
        (Some(p), _) => p.clone(),
        (None, None) => std::path::PathBuf::from(DEFAULT_TOKENIZER),
    };
    if !path.is_file() {
        bail!("--batch needs a tokenizer: {} is missing (give --tokenizer FILE)", path.display());
    }
    Ok(Tokenizer::from_file(&path)?)
}

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let (model, label, folder_tok) = match (&a.model, &a.shape) {
        (Some(_), Some(_)) => bail!("give either --model or --shape, not both"),
        (Some(dir), None) => {
            let l = load(&ModelArgs { model: dir.clone(), runtime: a.runtime.clone() })?;
            (l.model, l.folder.dir.display().to_string(), Some(l.tok))
        }
        (None, shape) => {
            let shape = shape.as_deref().unwrap_or("2b");
            let cfg = named_shape(shape).with_context(|| format!("unknown shape {shape:?} (2b, 4b, 8b)"))?;
            let dev = device(a.runtime.device)?;
            let dt = dtype(a.runtime.dtype, &dev);
            (Qwen3Vl::random(&cfg, dt, &dev)?, format!("random {shape}"), None)
        }
    };
    let tok = if a.batch > 1 { Some(batch_tokenizer(&a, folder_tok)?) } else { None };
    let dev = model.device().clone();
    let mut pcfg = PreprocessConfig::default();
    pcfg.max_image_tokens = a.runtime.max_image_tokens;
    let img = synthetic_screen(a.image_size, a.image_size);
    let mut prefix = vec![IM_START, USER, NEWLINE, VISION_START];
    if a.system_tokens > 0 {
        let mut sys = vec![IM_START, 8948, NEWLINE];
        sys.extend(text_ids(a.system_tokens, 3));
        sys.extend([IM_END, NEWLINE]);
        sys.extend(prefix);
        prefix = sys;
    }
    let tail = [IM_END, NEWLINE, IM_START, ASSISTANT, NEWLINE];
    let mut question = text_ids(a.text_tokens, 1);
    question.extend(tail);
    let mut followup = text_ids(a.followup_tokens.saturating_sub(tail.len()), 2);
    followup.extend(tail);
    let w = Workload { prefix, question, followup, new_tokens: a.new_tokens.max(2) };
    let base_mem = gpu_used_bytes(&dev);
    tensor_peak_bytes(&dev, true);
    let mut runs = Vec::new();
    let mut peak = base_mem;
    for i in 0..a.reps + 1 {
        let r = one_run(&model, &pcfg, &img, &w, false)?;
        peak = peak.max(gpu_used_bytes(&dev));
        if i > 0 || a.reps == 0 {
            runs.push(r);
        }
    }
    let tensor_peak = tensor_peak_bytes(&dev, false);
    let graphs = model.decode_counts();
    if a.profile {
        one_run(&model, &pcfg, &img, &w, true)?;
    }
    let col = |f: fn(&Run) -> f64| stats(&runs.iter().map(f).collect::<Vec<_>>());
    let pre = preprocess(&img, &pcfg)?;
    let prompt_tokens = w.prefix.len() + pre.grid.num_tokens(model.merge_size()) + 1 + w.question.len();
    let mut report = json!({
        "model": label, "device": format!("{:?}", dev), "dtype": format!("{:?}", model.dtype()),
        "image": [a.image_size, a.image_size], "visual_tokens": pre.grid.num_tokens(model.merge_size()),
        "prompt_tokens": prompt_tokens, "new_tokens": w.new_tokens, "followup_tokens": w.followup.len(),
        "reps": runs.len(),
        "preprocess_ms": col(|r| r.preprocess_ms), "vision_ms": col(|r| r.vision_ms),
        "prefill_ms": col(|r| r.prefill_ms), "ttft_ms": col(|r| r.ttft_ms),
        "decode_tokens_per_s": col(|r| r.decode_tokens_per_s),
        "followup_ttft_ms": col(|r| r.followup_ttft_ms),
        "peak_gpu_mem_gib": peak.map(|p| p as f64 / (1u64 << 30) as f64),
        "gpu_mem_before_gib": base_mem.map(|p| p as f64 / (1u64 << 30) as f64),
        "peak_tensor_mem_gib": tensor_peak.map(|p| p as f64 / (1u64 << 30) as f64),
        "decode_steps_on_device": graphs,
    });
    if let Some(tok) = tok {
        let bw = BatchWorkload {
            requests: a.batch,
            image: &img,
            system_tokens: a.system_tokens,
            text_tokens: a.text_tokens,
            new_tokens: w.new_tokens,
            reps: a.reps,
        };
        report["batch"] = bench_batch::run(model, tok, pcfg, &bw)?;
    }
    print_table(&report)?;
    if report.get("batch").is_some() {
        bench_batch::print_table(&report["batch"])?;
    }
    if let Some(path) = &a.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("{}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(r: &serde_json::Value) -> std::io::Result<()> {
    crate::out_line(&format!(
        "{} on {} ({}) | image {}x{} = {} visual tokens | prompt {} tokens | {} new tokens | {} reps",
        r["model"].as_str().unwrap_or(""), r["device"].as_str().unwrap_or(""), r["dtype"].as_str().unwrap_or(""),
        r["image"][0], r["image"][1], r["visual_tokens"], r["prompt_tokens"], r["new_tokens"], r["reps"]
    ))?;
    crate::out_line(&format!("{:<26}{:>12}{:>12}{:>12}", "metric", "median", "min", "max"))?;
    for k in ["preprocess_ms", "vision_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s", "followup_ttft_ms"] {
        let s = &r[k];
        let f = |v: &serde_json::Value| v.as_f64().map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
        crate::out_line(&format!("{:<26}{:>12}{:>12}{:>12}", k, f(&s["median"]), f(&s["min"]), f(&s["max"])))?;
    }
    if let Some(p) = r["peak_gpu_mem_gib"].as_f64() {
        crate::out_line(&format!("{:<26}{:>12.2}", "peak_gpu_mem_gib (device)", p))?;
    }
    if let Some(p) = r["peak_tensor_mem_gib"].as_f64() {
        crate::out_line(&format!("{:<26}{:>12.2}", "peak_tensor_mem_gib", p))?;
    }
    let g = &r["decode_steps_on_device"];
    if g.is_object() {
        crate::out_line(&format!(
            "decode steps: {} replayed from CUDA graphs, {} recorded, {} eager",
            g["replayed"], g["recorded"], g["eager"]
        ))?;
        if g["failed"].as_u64().is_some_and(|n| n > 0) {
            crate::out_line(&format!("CUDA graph recordings failed: {} (last: {})", g["failed"], g["last_failure"]))?;
        }
    }
    Ok(())
}
