//! Bad input gets one clear error, never a panic: broken model folders, broken weights, unknown
//! configs, broken images and prompts longer than the context.

use std::path::{Path, PathBuf};

use screenpilot_model::generate::{generate, Flow};
use screenpilot_model::preprocess::{decode_image, load_image, preprocess, PreprocessConfig};
use screenpilot_model::{DType, Device, ModelError, ModelFolder, PromptInput, Qwen3Vl, SamplingParams, Tensor, Tokenizer};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny")
}

/// A scratch copy of the tiny model folder that a test may break.
fn scratch_copy(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("screenpilot-bad-input-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"] {
        std::fs::copy(tiny().join(f), dir.join(f)).expect("run scripts/setup.sh to fetch the tokenizer");
    }
    dir
}

fn load_err(dir: &Path) -> String {
    let err = match ModelFolder::open(dir) {
        Err(e) => e,
        Ok(folder) => match Qwen3Vl::load(&folder, DType::F32, &Device::Cpu) {
            Err(e) => e,
            Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        },
    };
    err.to_string()
}

#[test]
fn folder_without_tokenizer_or_weights_names_the_missing_file() {
    let dir = scratch_copy("missing");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("missing tokenizer.json"), "{e}");
    std::fs::copy(tiny().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("missing model.safetensors"), "{e}");
    assert!(load_err(&dir.join("nope")).contains("not a folder"));
}

#[test]
fn truncated_safetensors_is_reported_as_truncated() {
    let dir = scratch_copy("truncated");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("truncated") && e.contains("model.safetensors"), "{e}");
    std::fs::write(dir.join("model.safetensors"), &bytes[..5]).unwrap();
    assert!(load_err(&dir).contains("too short"));
}

#[test]
fn tensor_of_the_wrong_shape_is_named() {
    let dir = scratch_copy("shape");
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let name = "model.language_model.layers.1.mlp.up_proj.weight";
    assert!(tensors.contains_key(name));
    tensors.insert(name.to_string(), Tensor::zeros((48, 32), DType::BF16, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let e = load_err(&dir);
    assert!(e.contains(name) && e.contains("shape"), "{e}");
}

#[test]
fn unknown_config_is_refused() {
    let dir = scratch_copy("config");
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), cfg.replace("\"qwen3_vl\"", "\"llava\"")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("llava") && e.contains("unsupported"), "{e}");
    std::fs::write(dir.join("config.json"), "{not json").unwrap();
    assert!(load_err(&dir).contains("config"));
}

#[test]
fn broken_images_get_clear_errors() {
    let png = std::fs::read(tiny().join("../images/small_50x40.png")).unwrap();
    let e = decode_image(&png[..png.len() / 2]).unwrap_err().to_string();
    assert!(e.contains("decode"), "{e}");
    assert!(decode_image(b"definitely not an image").is_err());
    let e = load_image(Path::new("/no/such/screen.png")).unwrap_err().to_string();
    assert!(e.contains("/no/such/screen.png"), "{e}");
    let cfg = PreprocessConfig::default();
    let e = preprocess(&image::DynamicImage::new_rgb8(0, 10), &cfg).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let e = preprocess(&image::DynamicImage::new_rgb8(1000, 4), &cfg).unwrap_err().to_string();
    assert!(e.contains("aspect ratio"), "{e}");
}

#[test]
fn prompt_longer_than_the_context_is_refused_and_the_cache_is_untouched() {
    let folder = ModelFolder::open(tiny()).unwrap();
    let mut model = Qwen3Vl::load(&folder, DType::F32, &Device::Cpu).unwrap();
    let tok = Tokenizer::from_file(&folder.tokenizer).unwrap();
    model.max_context = 16;
    let ids: Vec<u32> = (0..20).collect();
    let prompt = PromptInput { ids: &ids, grids: &[], vision: None };
    let mut cache = model.new_cache();
    let params = SamplingParams { max_new_tokens: 4, ..Default::default() };
    let err = generate(&model, &tok, &prompt, &params, &mut cache, &mut |_| Flow::Continue).unwrap_err();
    assert!(
        matches!(err, ModelError::ContextLength { prompt_tokens: 20, max_new_tokens: 4, context: 16 }),
        "{err}"
    );
    assert!(cache.is_empty());
    // A prompt that fits but leaves no room for the answer is refused too.
    let ids: Vec<u32> = (0..14).collect();
    let prompt = PromptInput { ids: &ids, grids: &[], vision: None };
    assert!(generate(&model, &tok, &prompt, &params, &mut cache, &mut |_| Flow::Continue).is_err());
    // One that fits works.
    let ids: Vec<u32> = (0..8).collect();
    let prompt = PromptInput { ids: &ids, grids: &[], vision: None };
    let g = generate(&model, &tok, &prompt, &params, &mut cache, &mut |_| Flow::Continue).unwrap();
    assert_eq!(g.steps.len(), 4);
}

#[test]
fn image_token_count_must_match_the_features() {
    let folder = ModelFolder::open(tiny()).unwrap();
    let model = Qwen3Vl::load(&folder, DType::F32, &Device::Cpu).unwrap();
    let pad = model.config.image_token_id;
    let ids = vec![1, pad, pad, pad, pad, 2];
    let grids = [screenpilot_model::GridThw { t: 1, h: 4, w: 4 }];
    let prompt = PromptInput { ids: &ids, grids: &grids, vision: None };
    let e = model.prefill(&prompt, &mut model.new_cache(), screenpilot_model::LogitsFor::Last).err().unwrap();
    assert!(e.to_string().contains("visual features"), "{e}");
}

/// A pass that fails after some layers took its keys leaves the cache as it was: the next token
/// sees exactly the keys it would have seen without the failed pass.
#[test]
fn a_failed_pass_leaves_the_kv_cache_as_it_was() {
    use screenpilot_model::rope::Positions;
    use screenpilot_model::text::DeepstackInput;
    let folder = ModelFolder::open(&tiny()).unwrap();
    let model = Qwen3Vl::load(&folder, DType::F32, &Device::Cpu).unwrap();
    let text = &model.text;
    let mut cache = text.new_cache();
    let ids = [9707u32, 11, 1879, 0, 13];
    text.forward(&text.embed(&ids).unwrap(), &Positions::text(0, ids.len()), None, &mut cache).unwrap();
    let before = cache.clone();

    // DeepStack features of the wrong width fail after layer 0 has taken the new keys.
    let more = [42u32, 43];
    let rows = Tensor::new(&[0u32], &Device::Cpu).unwrap();
    let bad = [Tensor::zeros((1, 3), DType::F32, &Device::Cpu).unwrap()];
    let ds = DeepstackInput { rows: &rows, features: &bad };
    let pos = Positions::text(ids.len() as i64, more.len());
    assert!(text.forward(&text.embed(&more).unwrap(), &pos, Some(ds), &mut cache).is_err());
    assert_eq!(cache.len(), ids.len());

    let after = model.decode_step(7, &mut cache).unwrap().to_vec1::<f32>().unwrap();
    let expected = model.decode_step(7, &mut before.clone()).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(after, expected);
}
