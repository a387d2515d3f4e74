//! `screenpilot ask`: stream an answer about images, or print it as one JSON object.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use screenpilot_model::generate::{generate, Flow};
use screenpilot_model::preprocess::{load_image, preprocess};
use screenpilot_model::prompt::{Message, Part, Role};
use screenpilot_model::{Generation, GridThw, PreprocessedImage, PromptInput, SamplingParams};
use std::path::PathBuf;
use serde_json::json;

use crate::args::AskArgs;
use crate::load::{load, sampling, Loaded};

pub fn run(a: AskArgs) -> anyhow::Result<ExitCode> {
    check_max_tokens(a.sampling.max_tokens)?;
    let l = load(&a.model)?;
    let params = sampling(&a.sampling, &l.folder);
    let stream = !a.json;
    let mut out = std::io::stdout().lock();
    let mut on_text = |piece: &str| {
        if stream && (out.write_all(piece.as_bytes()).is_err() || out.flush().is_err()) {
            return Flow::Stop; // stdout closed (e.g. piped into `head`): stop quietly
        }
        Flow::Continue
    };
    let ans = answer(&l, &a.image, a.system.as_deref(), &a.question, &params, &mut on_text)?;
    let g = &ans.generation;
    if let Some(path) = &a.dump_logits {
        let bytes: Vec<u8> = g.first_logits.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    let timings = ans.timings_json(l.load_ms)?;
    if a.json {
        let steps: Vec<_> = g.steps.iter().map(|s| json!({"id": s.id, "top": s.top})).collect();
        let obj = json!({"prompt_token_ids": ans.prompt_ids, "steps": steps, "text": g.text,
                         "finish_reason": g.finish, "timings": timings});
        crate::out_line(&obj.to_string())?;
    } else {
        crate::out_line("")?;
        eprintln!(
            "[{} prompt tokens, {} images] preprocess {:.1} ms | vision {:.1} ms | prefill {:.1} ms | \
             first token {:.1} ms | decode {} tokens at {:.1} tok/s",
            ans.prompt_ids.len(),
            ans.images.len(),
            ans.preprocess_ms,
            ans.vision_ms,
            g.timings.prefill_ms,
            ans.preprocess_ms + ans.vision_ms + g.timings.ttft_ms,
            g.timings.decode_tokens,
            g.timings.decode_tokens_per_s
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses `--max-tokens 0` before the model is loaded: it would answer nothing and exit 0.
/// Too large a value is refused once the context length is known (see `generate`).
pub fn check_max_tokens(n: usize) -> anyhow::Result<()> {
    if n == 0 {
        anyhow::bail!("--max-tokens must be at least 1");
    }
    Ok(())
}

/// One answered question: what the prompt was, the images as preprocessed, and the answer.
pub struct Answer {
    pub prompt_ids: Vec<u32>,
    pub images: Vec<PreprocessedImage>,
    pub preprocess_ms: f64,
    pub vision_ms: f64,
    pub generation: Generation,
}

impl Answer {
    /// Timings with the stages before the prompt included in the time to first token.
    pub fn timings_json(&self, load_ms: f64) -> anyhow::Result<serde_json::Value> {
        let mut t = serde_json::to_value(&self.generation.timings)?;
        t["preprocess_ms"] = json!(self.preprocess_ms);
        t["vision_ms"] = json!(self.vision_ms);
        t["ttft_ms"] = json!(self.preprocess_ms + self.vision_ms + self.generation.timings.ttft_ms);
        t["load_ms"] = json!(load_ms);
        Ok(t)
    }
}

/// Asks `question` about `image_paths` (in order) in one user turn, after an optional system turn.
pub fn answer(
    l: &Loaded,
    image_paths: &[PathBuf],
    system: Option<&str>,
    question: &str,
    params: &SamplingParams,
    on_text: &mut dyn FnMut(&str) -> Flow,
) -> anyhow::Result<Answer> {
    let t0 = Instant::now();
    let mut images = Vec::with_capacity(image_paths.len());
    for p in image_paths {
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
    if let Some(s) = system {
        msgs.push(Message::text(Role::System, s));
    }
    let mut parts: Vec<Part> = images.iter().map(|i| Part::Image { tokens: i.grid.num_tokens(merge) }).collect();
    parts.push(Part::Text(question.to_string()));
    msgs.push(Message { role: Role::User, parts });
    // encode_chat: control tokens typed in the question or the system text stay text.
    let prompt_ids = l.tok.encode_chat(&msgs, &[], true)?;
    let grids: Vec<GridThw> = images.iter().map(|i| i.grid).collect();
    let prompt = PromptInput { ids: &prompt_ids, grids: &grids, vision: vision.as_ref() };
    let mut cache = l.model.new_cache();
    let generation = generate(&l.model, &l.tok, &prompt, params, &mut cache, on_text)?;
    Ok(Answer { prompt_ids, images, preprocess_ms, vision_ms, generation })
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
