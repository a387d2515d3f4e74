//! `screenpilot bench`: the speed workload (one image + text, then greedy tokens) on random
//! weights at a named shape or on a real model folder, through the engine (the one generation
//! loop, with its caches as the server has them). Reports preprocessing, vision, prefill, time
//! to first token, decode tokens/s (median and spread over repetitions) from the engine's
//! [`RequestTimings`], peak GPU memory, and a second question on the same image in a new
//! request (its vision features and the shared prefix's KV come from the caches). Each
//! repetition starts with empty caches. With `--batch N` it then measures N such requests
//! through the engine's worker, batched and one at a time ([`crate::bench_batch`]). With
//! `--rewind SECONDS` the visual input is a rewind of a synthetic screen sent as a video, and
//! the follow-up asks about the same clip.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use screenpilot_engine::{
    ChatMessage, Clip, ContentPart, Engine, EngineConfig, GenerationOptions, ImageSource, Request, RequestLimits,
    RequestTimings, Role, ValidRequest, VideoSource,
};
use screenpilot_model::preprocess::VideoConfig;
use screenpilot_model::config::named_shape;
use screenpilot_model::preprocess::preprocess;
use screenpilot_model::profile;
use screenpilot_model::{Device, PreprocessConfig, Qwen3Vl, Tokenizer};
use serde_json::json;

use crate::args::{BenchArgs, ModelArgs};
use crate::bench_batch::{self, text_of, word_pool, BatchWorkload};
use crate::load::{device, dtype, load};

/// Tokens the chat template puts around a question: `<|im_end|>\n<|im_start|>assistant\n`.
const TAIL_TOKENS: usize = 5;

/// One repetition's measurements, in milliseconds unless named otherwise.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Run {
    preprocess_ms: f64,
    vision_ms: f64,
    prefill_ms: f64,
    ttft_ms: f64,
    decode_tokens_per_s: f64,
    followup_ttft_ms: f64,
    prompt_tokens: usize,
    followup_prefill_tokens: usize,
}

pub(crate) fn synthetic_screen(w: u32, h: u32) -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7 + y) as u8, (y * 3) as u8, ((x ^ y) * 5) as u8])
    }))
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

/// `secs` seconds of a `w` x `h` screen at `fps`: every frame differs (the pattern moves), the
/// worst case for a rewind (which stores a frame that did not change once).
fn synthetic_rewind(w: u32, h: u32, secs: f64, fps: f64) -> anyhow::Result<Clip> {
    let n = (secs * fps).round() as usize;
    if n < 2 || !fps.is_finite() || fps <= 0.0 {
        bail!("--rewind {secs} at --rewind-fps {fps} makes {n} frames; a video needs at least 2");
    }
    let frames = (0..n as u32)
        .map(|k| {
            Arc::new(image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
                let x = x + 3 * k;
                image::Rgb([(x * 7 + y) as u8, (y * 3 + k) as u8, ((x ^ y) * 5) as u8])
            })))
        })
        .collect();
    Ok(Clip { frames, indices: (0..n).collect(), fps: Some(fps) })
}

/// Qwen3-VL's published video_preprocessor_config.json bounds (4096..=25165824 pixels over
/// all frames), the rest the class defaults: the settings of random weights (a model folder
/// brings its own).
fn qwen3_vl_video() -> VideoConfig {
    let mut v = VideoConfig::default();
    (v.frame.min_pixels, v.frame.max_pixels) = (4096, 25_165_824);
    v
}

/// The two requests of one repetition: the question, then the follow-up on the same image.
struct Workload {
    first: ValidRequest,
    followup: ValidRequest,
}

impl Workload {
    fn new(tok: &Tokenizer, a: &BenchArgs, visual: ContentPart, new_tokens: usize) -> anyhow::Result<Self> {
        let words = word_pool(tok)?;
        let ask = |words_n: usize, salt: usize, max_tokens: usize| -> anyhow::Result<ValidRequest> {
            let mut messages = Vec::new();
            if a.system_tokens > 0 {
                messages.push(ChatMessage::text(Role::System, text_of(&words, a.system_tokens, 0)));
            }
            let question = text_of(&words, words_n, salt);
            let n = tok.encode(&question)?.len();
            if n != words_n {
                bail!("the benchmark question has {n} tokens instead of {words_n}");
            }
            messages.push(ChatMessage {
                role: Role::User,
                parts: vec![visual.clone(), ContentPart::Text(question)],
            });
            let options = GenerationOptions { max_tokens, ignore_eos: true, ..Default::default() };
            let limits = RequestLimits { max_text_bytes: usize::MAX, ..Default::default() };
            Ok(ValidRequest::new(Request { messages, options, tools: Vec::new() }, &limits)?)
        };
        // The follow-up's new tokens include the template's tail, as the first question's do not.
        let followup = ask(a.followup_tokens.saturating_sub(TAIL_TOKENS), 1000, 1)?;
        Ok(Self { first: ask(a.text_tokens, 1, new_tokens)?, followup })
    }
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

/// One request through the engine, to its end; with `prof`, the stages of its start (images
/// and prefill) and of its decoding are printed apart.
fn request(engine: &mut Engine, req: &ValidRequest, prof: Option<&str>) -> anyhow::Result<RequestTimings> {
    let on = prof.is_some();
    let title = prof.unwrap_or("");
    let mut seq = engine.start(req, Instant::now())?;
    report_stages(&format!("{title}preprocessing, vision and prefill"), on)?;
    while seq.finished().is_none() {
        engine.step(&mut seq)?;
    }
    report_stages(&format!("{title}decode"), on && req.options().max_tokens > 1)?;
    Ok(engine.finish(seq, &mut |_| {}).timings)
}

/// One repetition: the question with empty caches, then the follow-up.
fn one_run(engine: &mut Engine, w: &Workload, prof: bool) -> anyhow::Result<Run> {
    engine.clear_caches();
    if prof {
        profile::enable();
    }
    let t = request(engine, &w.first, prof.then_some(""))?;
    let f = request(engine, &w.followup, prof.then_some("follow-up: "))?;
    if prof {
        profile::take();
    }
    Ok(Run {
        preprocess_ms: t.preprocess_ms,
        vision_ms: t.vision_ms,
        prefill_ms: t.prefill_ms,
        ttft_ms: t.ttft_ms,
        decode_tokens_per_s: t.decode_tokens_per_s,
        followup_ttft_ms: f.ttft_ms,
        prompt_tokens: t.prompt_tokens,
        followup_prefill_tokens: f.prefill_tokens,
    })
}

pub(crate) fn stats(xs: &[f64]) -> serde_json::Value {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let med = if v.is_empty() { f64::NAN } else { v[v.len() / 2] };
    json!({"median": med, "min": v.first(), "max": v.last(), "n": v.len()})
}

/// Where bench finds a tokenizer for random weights when `--tokenizer` is not given (the
/// repository's copy, relative to the current folder).
const DEFAULT_TOKENIZER: &str = "tests/fixtures/tokenizer/tokenizer.json";

/// The tokenizer: `--tokenizer`, else the model folder's, else the repository's.
fn tokenizer(a: &BenchArgs, folder_tok: Option<Tokenizer>) -> anyhow::Result<Tokenizer> {
    let path = match (&a.tokenizer, folder_tok) {
        (None, Some(t)) => return Ok(t),
        (Some(p), _) => p.clone(),
        (None, None) => std::path::PathBuf::from(DEFAULT_TOKENIZER),
    };
    if !path.is_file() {
        bail!("bench needs a tokenizer: {} is missing (give --tokenizer FILE)", path.display());
    }
    Ok(Tokenizer::from_file(&path)?)
}

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let (model, label, folder_tok, mut pcfg, folder_video) = match (&a.model, &a.shape) {
        (Some(_), Some(_)) => bail!("give either --model or --shape, not both"),
        (Some(dir), None) => {
            let l = load(&ModelArgs { model: dir.clone(), runtime: a.runtime.clone() })?;
            (l.model, l.folder.dir.display().to_string(), Some(l.tok), l.preprocess, Some(l.folder.video))
        }
        (None, shape) => {
            let shape = shape.as_deref().unwrap_or("2b");
            let cfg = named_shape(shape).with_context(|| format!("unknown shape {shape:?} (2b, 4b, 8b)"))?;
            let dev = device(a.runtime.device)?;
            let dt = dtype(a.runtime.dtype, &dev);
            (Qwen3Vl::random_with(&cfg, dt, &dev, crate::load::kernels(&a.runtime))?, format!("random {shape}"), None, PreprocessConfig::default(), None)
        }
    };
    let tok = tokenizer(&a, folder_tok)?;
    let dev = model.device().clone();
    pcfg.max_image_tokens = a.runtime.max_image_tokens.or(pcfg.max_image_tokens);
    let img = synthetic_screen(a.image_size, a.image_size);
    let new_tokens = a.new_tokens.max(2);
    let merge = model.merge_size();
    let (visual, visual_tokens, video, shown) = match a.rewind {
        Some(secs) => {
            if a.batch > 1 {
                bail!("--batch measures screenshots; leave it out with --rewind");
            }
            let (sw, sh) = a.screen;
            let clip = Arc::new(synthetic_rewind(sw, sh, secs, a.rewind_fps)?);
            let video = folder_video.clone().unwrap_or_else(qwen3_vl_video);
            let pre = screenpilot_engine::video::preprocess(&clip, &video)?;
            let tokens = pre.clip.grid.num_tokens(merge);
            let shown = json!({"screen": [sw, sh], "seconds": secs, "fps": a.rewind_fps, "frames": clip.frames.len(),
                               "resized": [pre.clip.resized_width, pre.clip.resized_height], "temporal_patches": pre.clip.grid.t});
            (ContentPart::Video(VideoSource::Clip(clip)), tokens, video, Some(shown))
        }
        None => {
            let tokens = preprocess(&img, &pcfg)?.grid.num_tokens(merge);
            (ContentPart::Image(ImageSource::Image(Arc::new(img.clone()))), tokens, VideoConfig::default(), None)
        }
    };
    let w = Workload::new(&tok, &a, visual, new_tokens)?;
    let mut engine = Engine::new(model, tok, pcfg, EngineConfig::default()).with_video(video);
    let base_mem = gpu_used_bytes(&dev);
    tensor_peak_bytes(&dev, true);
    let mut runs = Vec::new();
    let mut peak = base_mem;
    for i in 0..a.reps + 1 {
        let r = one_run(&mut engine, &w, false)?;
        peak = peak.max(gpu_used_bytes(&dev));
        if i > 0 || a.reps == 0 {
            runs.push(r);
        }
    }
    let tensor_peak = tensor_peak_bytes(&dev, false);
    let graphs = engine.model().decode_counts();
    if a.profile {
        one_run(&mut engine, &w, true)?;
    }
    let col = |f: fn(&Run) -> f64| stats(&runs.iter().map(f).collect::<Vec<_>>());
    let dtype = engine.model().dtype();
    let mut report = json!({
        "model": label, "device": format!("{:?}", dev), "dtype": format!("{:?}", dtype),
        "image": [a.image_size, a.image_size], "visual_tokens": visual_tokens, "rewind": shown,
        "prompt_tokens": runs.last().map(|r| r.prompt_tokens), "new_tokens": new_tokens,
        "followup_tokens": runs.last().map(|r| r.followup_prefill_tokens),
        "reps": runs.len(),
        "how": "through the engine (caches on, emptied before each repetition); the follow-up is a new request \
                with the same image: its TTFT includes preprocessing the image again, the vision-cache hit \
                and the prefill of the tokens after the cached prefix",
        "preprocess_ms": col(|r| r.preprocess_ms), "vision_ms": col(|r| r.vision_ms),
        "prefill_ms": col(|r| r.prefill_ms), "ttft_ms": col(|r| r.ttft_ms),
        "decode_tokens_per_s": col(|r| r.decode_tokens_per_s),
        "followup_ttft_ms": col(|r| r.followup_ttft_ms),
        "peak_gpu_mem_gib": peak.map(|p| p as f64 / (1u64 << 30) as f64),
        "gpu_mem_before_gib": base_mem.map(|p| p as f64 / (1u64 << 30) as f64),
        "peak_tensor_mem_gib": tensor_peak.map(|p| p as f64 / (1u64 << 30) as f64),
        "decode_steps_on_device": graphs,
        "quant": engine.model().kernel_config().quant.map(|q| q.name()),
        "projections": engine.model().text.quant_summary().to_string(),
        "peak_rss_gib": peak_rss_bytes().map(|p| p as f64 / (1u64 << 30) as f64),
    });
    if a.batch > 1 {
        let bw = BatchWorkload {
            requests: a.batch,
            image: &img,
            system_tokens: a.system_tokens,
            text_tokens: a.text_tokens,
            new_tokens,
            reps: a.reps,
        };
        let (model, tok, pcfg) = engine.into_parts();
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
    let input = match r["rewind"].as_object() {
        Some(v) => format!(
            "rewind {}s of {}x{} at {} fps = {} frames, resized {}x{}",
            v["seconds"], v["screen"][0], v["screen"][1], v["fps"], v["frames"], v["resized"][0], v["resized"][1]
        ),
        None => format!("image {}x{}", r["image"][0], r["image"][1]),
    };
    crate::out_line(&format!(
        "{} on {} ({}) | {input} = {} visual tokens | prompt {} tokens | {} new tokens | {} reps",
        r["model"].as_str().unwrap_or(""), r["device"].as_str().unwrap_or(""), r["dtype"].as_str().unwrap_or(""),
        r["visual_tokens"], r["prompt_tokens"], r["new_tokens"], r["reps"]
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

/// This process's peak resident memory (Linux: `VmHWM` of /proc/self/status), `None` elsewhere.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
