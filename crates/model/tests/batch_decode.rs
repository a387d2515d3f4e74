//! Batched decode (`Qwen3Vl::decode_batch`) against one sequence at a time (`decode_step`) on
//! the tiny model in f32 on the CPU: three prompts of different lengths (one with an image, so
//! its MRoPE positions are offset by a rope delta) give the same greedy tokens and the same
//! logits to 1e-5, also when a sequence leaves the batch; a batch of one is decode_step exactly;
//! bad batches are errors that leave every cache as it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use screenpilot_model::generate::argmax;
use screenpilot_model::preprocess::{load_image, preprocess};
use screenpilot_model::prompt::{render, Message, Part, Role};
use screenpilot_model::{DType, Device, KvCache, LogitsFor, ModelError, ModelFolder, PromptInput, Qwen3Vl};

const STEPS: usize = 6;
const TOL: f32 = 1e-5;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The tiny model and three prefilled sequences: (cache, first greedy token, prompt length).
fn setup() -> (Qwen3Vl, Vec<(KvCache, u32, usize)>) {
    let folder = ModelFolder::open(fixtures().join("tiny")).expect("run scripts/setup.sh to fetch the tokenizer");
    let model = Qwen3Vl::load(&folder, DType::F32, &Device::Cpu).unwrap();
    let tok = screenpilot_model::Tokenizer::from_file(&folder.tokenizer).unwrap();
    let pre = preprocess(&load_image(&fixtures().join("images/small_50x40.png")).unwrap(), &folder.preprocess).unwrap();
    let vision = model.encode_images(&[&pre]).unwrap();
    let n_img = pre.grid.num_tokens(model.merge_size());
    let prompts = [
        vec![Message { role: Role::User, parts: vec![Part::Image { tokens: n_img }, Part::Text("What is in the corner?".into())] }],
        vec![Message::text(Role::User, "Hi.")],
        vec![
            Message::text(Role::System, "You answer in long, careful sentences about what you see on screens."),
            Message::text(Role::User, "Write a haiku about screens, then explain each line of it."),
        ],
    ];
    let mut seqs = Vec::new();
    for (i, msgs) in prompts.iter().enumerate() {
        let ids = tok.encode(&render(msgs, &[], true)).unwrap();
        let grids = if i == 0 { vec![pre.grid] } else { vec![] };
        let prompt = PromptInput { ids: &ids, grids: &grids, vision: (i == 0).then_some(&vision) };
        let mut cache = model.new_cache();
        let logits = model.prefill(&prompt, &mut cache, LogitsFor::Last).unwrap().logits;
        seqs.push((cache, argmax(&logits.to_vec1::<f32>().unwrap()), ids.len()));
    }
    let lens: Vec<usize> = seqs.iter().map(|s| s.2).collect();
    assert!(lens[0] != lens[1] && lens[1] != lens[2] && lens[0] != lens[2], "prompt lengths differ: {lens:?}");
    assert_ne!(seqs[0].0.rope_delta, 0, "the image prompt has a rope delta");
    (model, seqs)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Greedy tokens and logits rows of one sequence decoded alone for `steps` steps.
fn alone(model: &Qwen3Vl, mut cache: KvCache, first: u32, steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let (mut ids, mut rows) = (vec![first], Vec::new());
    for _ in 0..steps {
        let row: Vec<f32> = model.decode_step(*ids.last().unwrap(), &mut cache).unwrap().to_vec1().unwrap();
        ids.push(argmax(&row));
        rows.push(row);
    }
    (ids, rows)
}

#[test]
fn batched_decode_gives_the_tokens_and_logits_of_one_sequence_at_a_time() {
    let (model, seqs) = setup();
    // Sequence 1 leaves the batch after 3 steps; the others decode all STEPS together.
    let steps_of = |i: usize| if i == 1 { 3 } else { STEPS };
    let mut caches: Vec<KvCache> = seqs.iter().map(|s| s.0.clone()).collect();
    let mut ids: Vec<Vec<u32>> = seqs.iter().map(|s| vec![s.1]).collect();
    let mut rows: Vec<Vec<Vec<f32>>> = vec![Vec::new(); 3];
    for step in 0..STEPS {
        let members: Vec<usize> = (0..3).filter(|&i| step < steps_of(i)).collect();
        let tokens: Vec<u32> = members.iter().map(|&i| *ids[i].last().unwrap()).collect();
        let mut batch: Vec<&mut KvCache> =
            caches.iter_mut().enumerate().filter(|(i, _)| members.contains(i)).map(|(_, c)| c).collect();
        let logits = model.decode_batch(&tokens, &mut batch).unwrap();
        assert_eq!(logits.dims(), [members.len(), model.text.params().vocab_size]);
        for (row, &i) in logits.to_vec2::<f32>().unwrap().into_iter().zip(&members) {
            ids[i].push(argmax(&row));
            rows[i].push(row);
        }
    }
    let mut worst = 0f32;
    for (i, (cache, first, len)) in seqs.into_iter().enumerate() {
        let (want_ids, want_rows) = alone(&model, cache, first, steps_of(i));
        assert_eq!(ids[i], want_ids, "sequence {i}: greedy tokens");
        for (step, (a, b)) in rows[i].iter().zip(&want_rows).enumerate() {
            let d = max_abs_diff(a, b);
            assert!(d <= TOL, "sequence {i} step {step}: logits differ by {d}");
            worst = worst.max(d);
        }
        assert_eq!(caches[i].len(), len + steps_of(i), "sequence {i}: cache length");
    }
    eprintln!("largest logit difference, batched vs one at a time: {worst:e}");
}

#[test]
fn a_batch_of_one_is_decode_step_bit_for_bit() {
    let (model, seqs) = setup();
    for (cache, first, _) in seqs {
        let (mut a, mut b) = (cache.clone(), cache);
        let one = model.decode_batch(&[first], &mut [&mut a]).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        let step = model.decode_step(first, &mut b).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(one, step);
        assert_eq!((a.len(), a.bytes()), (b.len(), b.bytes()));
    }
}

/// Length, bytes and the next logits: what a cache holds, as far as decoding can tell.
fn fingerprint(model: &Qwen3Vl, cache: &KvCache, token: u32) -> (usize, usize, Vec<f32>) {
    let mut c = cache.clone();
    let row = model.decode_step(token, &mut c).unwrap().to_vec1().unwrap();
    (cache.len(), cache.bytes(), row)
}

#[test]
fn bad_batches_are_errors_that_leave_every_cache_unchanged() {
    let (mut model, seqs) = setup();
    let mut caches: Vec<KvCache> = seqs.iter().map(|s| s.0.clone()).collect();
    let before: Vec<_> = caches.iter().zip(&seqs).map(|(c, s)| fingerprint(&model, c, s.1)).collect();
    let tokens: Vec<u32> = seqs.iter().map(|s| s.1).collect();

    let empty = model.decode_batch(&[], &mut []);
    assert!(matches!(empty, Err(ModelError::Input(_))), "empty batch: {:?}", empty.err());
    let mut two: Vec<&mut KvCache> = caches.iter_mut().take(2).collect();
    assert!(matches!(model.decode_batch(&tokens, &mut two), Err(ModelError::Input(_))), "3 tokens, 2 caches");

    // A cache that fails in the second layer: the first layer was already appended to the
    // others and must be dropped again.
    let mut broken = KvCache::new(1);
    let mut with_broken: Vec<&mut KvCache> = caches.iter_mut().chain(std::iter::once(&mut broken)).collect();
    assert!(model.decode_batch(&[tokens[0], tokens[1], tokens[2], 0], &mut with_broken).is_err());
    assert_eq!((broken.len(), broken.bytes()), (0, 0));

    // A full context: the same error as decode_step gives.
    let longest = caches.iter().map(|c| c.len()).max().unwrap();
    model.max_context = longest;
    let mut all: Vec<&mut KvCache> = caches.iter_mut().collect();
    match model.decode_batch(&tokens, &mut all) {
        Err(ModelError::PromptTooLong { tokens, max }) => assert_eq!((tokens, max), (longest + 1, longest)),
        other => panic!("expected PromptTooLong, got {:?}", other.map(|t| t.dims().to_vec())),
    }
    let full = caches.iter_mut().find(|c| c.len() == longest).unwrap();
    assert!(matches!(model.decode_step(tokens[0], full), Err(ModelError::PromptTooLong { .. })));
    model.max_context = longest + 1;

    for (i, (c, s)) in caches.iter().zip(&seqs).enumerate() {
        let after = fingerprint(&model, c, s.1);
        assert_eq!((after.0, after.1), (before[i].0, before[i].1), "cache {i}: length and bytes");
        assert_eq!(after.2, before[i].2, "cache {i}: next logits");
    }
}
