//! What quantizing costs in quality, measured the way llama.cpp's `llama-perplexity
//! --kl-divergence` does: the reference (unquantized) model's next-token distributions are kept,
//! then another model is run on the same tokens and compared position by position: the KL
//! divergence KL(reference || other), and whether both put the same token first. Besides, each
//! model decodes greedily on its own and the tokens identical to the reference's are counted.
//!
//! The reference is computed once and kept ([`Reference`], log-probabilities of the compared
//! positions only), so the two models never have to be in memory together.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::ops::log_softmax;

use image::DynamicImage;

use crate::error::Result;
use crate::generate::argmax;
use crate::model::{LogitsFor, PromptInput, Qwen3Vl};
use crate::preprocess::{preprocess, GridThw, PreprocessConfig, PreprocessedImage};
use crate::prompt::{render, Message, Part, Role};
use crate::text::KvCache;
use crate::tokenizer::Tokenizer;
use crate::vision::VisionOutput;

/// The questions of the fixed evaluation set: about a screen, each with one image (in turn from
/// the images given), then one without an image.
pub const QUESTIONS: [&str; 4] = [
    "Describe this screen in detail, then list every button you can see.",
    "What application is open, and what is the user doing? Answer in two sentences.",
    "Where is the search box? Answer with its coordinates.",
    "Read all the text in the title bar and the menu, word for word.",
];
/// The question without an image.
pub const TEXT_QUESTION: &str =
    "Write a short note explaining how to take a screenshot on Linux, step by step.";

/// One prompt of the evaluation: token ids and the images its image runs stand for.
pub struct EvalCase {
    pub ids: Vec<u32>,
    pub images: Vec<PreprocessedImage>,
}

impl EvalCase {
    /// The fixed evaluation set: each of [`QUESTIONS`] with one of `images` (in turn), then
    /// [`TEXT_QUESTION`] alone, as chat prompts with the generation prompt.
    pub fn standard(
        tok: &Tokenizer,
        images: &[DynamicImage],
        pcfg: &PreprocessConfig,
        merge: usize,
    ) -> Result<Vec<Self>> {
        let mut cases = Vec::new();
        for (i, q) in QUESTIONS.iter().enumerate() {
            let Some(img) = images.get(i % images.len().max(1)) else {
                break;
            };
            let pre = preprocess(img, pcfg)?;
            let parts = vec![
                Part::Image {
                    tokens: pre.grid.num_tokens(merge),
                },
                Part::Text((*q).into()),
            ];
            let ids = tok.encode(&render(
                &[Message {
                    role: Role::User,
                    parts,
                }],
                &[],
                true,
            ))?;
            cases.push(Self {
                ids,
                images: vec![pre],
            });
        }
        let ids = tok.encode(&render(
            &[Message::text(Role::User, TEXT_QUESTION)],
            &[],
            true,
        ))?;
        cases.push(Self {
            ids,
            images: Vec::new(),
        });
        Ok(cases)
    }
}

/// The reference's side of one case.
struct RefCase {
    /// Log-probabilities (positions, vocab) on the CPU: the prompt's text positions, then the
    /// positions of the greedy continuation.
    logprobs: Tensor,
    /// Which prompt positions were kept (those whose next token is text).
    prompt_rows: Vec<u32>,
    /// The reference's greedy continuation.
    greedy: Vec<u32>,
}

/// The reference model's distributions over every case (see the module doc).
pub struct Reference {
    cases: Vec<RefCase>,
}

/// How close a model came to the reference, over all cases.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityReport {
    /// Positions compared.
    pub positions: usize,
    pub mean_kl: f64,
    /// 99th percentile of the per-position KL divergence.
    pub p99_kl: f64,
    pub max_kl: f64,
    /// Share of positions where both models' most likely token is the same (0..1).
    pub top1_agreement: f64,
    /// Greedy tokens identical to the reference's, before the first difference, summed over cases.
    pub greedy_same: usize,
    /// Greedy tokens generated (per case times cases).
    pub greedy_total: usize,
}

fn encode(model: &Qwen3Vl, case: &EvalCase) -> Result<Option<VisionOutput>> {
    if case.images.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        model.encode_images(&case.images.iter().collect::<Vec<_>>())?,
    ))
}

/// Prompt rows whose next token is text (the prediction at a row followed by an image token is
/// not a choice the model makes), and the last row.
fn text_rows(model: &Qwen3Vl, ids: &[u32]) -> Vec<u32> {
    let visual = model.visual_tokens();
    (0..ids.len())
        .filter(|&i| i + 1 == ids.len() || !visual.contains(&ids[i + 1]))
        .map(|i| i as u32)
        .collect()
}

/// A case prefilled into a cache: the log-probabilities at the kept prompt rows (on the CPU),
/// and the logits after the last prompt token.
#[derive(Clone)]
struct Prefilled {
    cache: KvCache,
    rows: Tensor,
    last: Vec<f32>,
}

fn prefill(model: &Qwen3Vl, case: &EvalCase, rows: &[u32]) -> Result<Prefilled> {
    let vision = encode(model, case)?;
    let grids: Vec<GridThw> = case.images.iter().map(|i| i.grid).collect();
    let prompt = PromptInput { ids: &case.ids, grids: &grids, vision: vision.as_ref() };
    let mut cache = model.new_cache();
    let all = model.prefill(&prompt, &mut cache, LogitsFor::All)?.logits;
    let idx = Tensor::new(rows, all.device())?;
    let rows = log_softmax(&all.index_select(&idx, 0)?.to_dtype(DType::F32)?, D::Minus1)?.to_device(&Device::Cpu)?;
    let last = all.get(all.dim(0)? - 1)?.to_dtype(DType::F32)?.to_vec1()?;
    Ok(Prefilled { cache, rows, last })
}

/// Decodes after a prefill, feeding `forced` (or, if `None`, the model's own greedy choices, `n`
/// of them). Returns the prefill's rows followed by one row per fed token but the last (on the
/// CPU), and the tokens fed.
fn decode(model: &Qwen3Vl, p: Prefilled, forced: Option<&[u32]>, n: usize) -> Result<(Tensor, Vec<u32>)> {
    let Prefilled { mut cache, rows, mut last } = p;
    let mut out = vec![rows];
    let mut fed = Vec::new();
    let steps = forced.map_or(n, |f| f.len());
    for step in 0..steps {
        let token = forced.map_or_else(|| argmax(&last), |f| f[step]);
        fed.push(token);
        // The row after the last fed token is not needed.
        if step + 1 == steps {
            break;
        }
        let logits = model.decode_step(token, &mut cache)?.to_dtype(DType::F32)?;
        out.push(log_softmax(&logits.unsqueeze(0)?, D::Minus1)?.to_device(&Device::Cpu)?);
        last = logits.to_vec1()?;
    }
    Ok((Tensor::cat(&out, 0)?, fed))
}

impl Reference {
    /// The reference `model`'s distributions on `cases`, with a greedy continuation of `n`
    /// tokens each (n >= 1).
    pub fn compute(model: &Qwen3Vl, cases: &[EvalCase], n: usize) -> Result<Self> {
        let cases = cases
            .iter()
            .map(|c| {
                let prompt_rows = text_rows(model, &c.ids);
                let (logprobs, greedy) = decode(model, prefill(model, c, &prompt_rows)?, None, n.max(1))?;
                Ok(RefCase {
                    logprobs,
                    prompt_rows,
                    greedy,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { cases })
    }

    /// `model` against this reference on the same `cases` (those given to [`Self::compute`]).
    pub fn compare(&self, model: &Qwen3Vl, cases: &[EvalCase]) -> Result<QualityReport> {
        let (mut kls, mut same_top1, mut greedy_same, mut greedy_total) =
            (Vec::new(), 0usize, 0usize, 0usize);
        for (r, c) in self.cases.iter().zip(cases) {
            // One prefill for both runs: the greedy one decodes from a copy-on-write clone of its cache.
            let p = prefill(model, c, &r.prompt_rows)?;
            let own_run = p.clone();
            let (lq, _) = decode(model, p, Some(&r.greedy), 0)?;
            let lp = &r.logprobs;
            let kl: Vec<f32> = (lp.exp()? * (lp - &lq)?)?.sum(D::Minus1)?.to_vec1()?;
            kls.extend(kl.iter().map(|&k| k.max(0.0) as f64));
            let top_p: Vec<u32> = lp.argmax(D::Minus1)?.to_vec1()?;
            let top_q: Vec<u32> = lq.argmax(D::Minus1)?.to_vec1()?;
            same_top1 += top_p.iter().zip(&top_q).filter(|(a, b)| a == b).count();
            let (_, own) = decode(model, own_run, None, r.greedy.len())?;
            greedy_same += own
                .iter()
                .zip(&r.greedy)
                .take_while(|(a, b)| a == b)
                .count();
            greedy_total += r.greedy.len();
        }
        Ok(QualityReport::new(
            kls,
            same_top1,
            greedy_same,
            greedy_total,
        ))
    }
}

impl QualityReport {
    fn new(mut kls: Vec<f64>, same_top1: usize, greedy_same: usize, greedy_total: usize) -> Self {
        let n = kls.len();
        kls.sort_by(f64::total_cmp);
        let p99 = if n == 0 {
            0.0
        } else {
            kls[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1]
        };
        Self {
            positions: n,
            mean_kl: if n == 0 {
                0.0
            } else {
                kls.iter().sum::<f64>() / n as f64
            },
            p99_kl: p99,
            max_kl: kls.last().copied().unwrap_or(0.0),
            top1_agreement: if n == 0 {
                1.0
            } else {
                same_top1 as f64 / n as f64
            },
            greedy_same,
            greedy_total,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_report_takes_the_mean_and_the_99th_percentile() {
        let kls: Vec<f64> = (1..=200).map(|i| i as f64 / 1000.0).collect();
        let r = QualityReport::new(kls, 150, 20, 32);
        assert_eq!(r.positions, 200);
        assert!((r.mean_kl - 0.1005).abs() < 1e-12, "{}", r.mean_kl);
        assert_eq!(r.p99_kl, 0.198);
        assert_eq!(r.max_kl, 0.2);
        assert_eq!(r.top1_agreement, 0.75);
    }
}
