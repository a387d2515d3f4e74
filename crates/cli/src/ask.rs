//! `screenpilot ask`: stream an answer about images, or print it as one JSON object.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use screenpilot_model::generate::{generate, Flow};
use screenpilot_model::preprocess::{load_image, preprocess};
use screenpilot_model::prompt::{render, Message, Part, Role};
use screenpilot_model::{GridThw, PromptInput};
use serde_json::json;

use crate::args::AskArgs;
use crate::load::{load, sampling};

pub fn run(a: AskArgs) -> anyhow::Result<ExitCode> {
    let l = load(&a.model)?;
    let params = sampling(&a.sampling, &l.folder);

    let t0 = Instant::now();
    let mut images = Vec::with_capacity(a.image.len());
    for p in &a.image {
        let img = load_image(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        images.push(preprocess(&img, &l.preprocess).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?);
    }
    let preprocess_ms = ms(t0);

    let t1 = Instant::now();
    let vision = if images.is_empty() { None } else { Some(l.model.encode_images(&images.iter().collect::<Vec<_>>())?) };
    if let Some(v) = &vision {
        v.embeds.device().synchronize()?;
    }
    let vision_ms = ms(t1);

    let merge = l.model.merge_size();
    let mut msgs = Vec::new();
    if let Some(s) = &a.system {
        msgs.push(Message::text(Role::System, s.clone()));
    }
    let mut parts: Vec<Part> = images.iter().map(|i| Part::Image { tokens: i.grid.num_tokens(merge) }).collect();
    parts.push(Part::Text(a.question.clone()));
    msgs.push(Message { role: Role::User, parts });
    let ids = l.tok.encode(&render(&msgs, &[], true))?;
    let grids: Vec<GridThw> = images.iter().map(|i| i.grid).collect();
    let prompt = PromptInput { ids: &ids, grids: &grids, vision: vision.as_ref() };

    let mut cache = l.model.new_cache();
    let stream = !a.json;
    let mut out = std::io::stdout().lock();
    let mut on_text = |piece: &str| {
        if stream && (out.write_all(piece.as_bytes()).is_err() || out.flush().is_err()) {
            return Flow::Stop; // stdout closed (e.g. piped into `head`): stop quietly
        }
        Flow::Continue
    };
    let g = generate(&l.model, &l.tok, &prompt, &params, &mut cache, &mut on_text)?;
    if let Some(path) = &a.dump_logits {
        let bytes: Vec<u8> = g.first_logits.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    let mut timings = serde_json::to_value(&g.timings)?;
    timings["preprocess_ms"] = json!(preprocess_ms);
    timings["vision_ms"] = json!(vision_ms);
    timings["ttft_ms"] = json!(preprocess_ms + vision_ms + g.timings.ttft_ms);
    timings["load_ms"] = json!(l.load_ms);
    if a.json {
        let steps: Vec<_> = g.steps.iter().map(|s| json!({"id": s.id, "top": s.top})).collect();
        let obj = json!({"prompt_token_ids": ids, "steps": steps, "text": g.text,
                         "finish_reason": g.finish, "timings": timings});
        println!("{obj}");
    } else {
        println!();
        eprintln!(
            "[{} prompt tokens, {} images] preprocess {:.1} ms | vision {:.1} ms | prefill {:.1} ms | \
             first token {:.1} ms | decode {} tokens at {:.1} tok/s",
            ids.len(),
            images.len(),
            preprocess_ms,
            vision_ms,
            g.timings.prefill_ms,
            preprocess_ms + vision_ms + g.timings.ttft_ms,
            g.timings.decode_tokens,
            g.timings.decode_tokens_per_s
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
