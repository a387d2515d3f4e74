//! Model folders in every layout we accept load to the same model: a sharded checkpoint with
//! model.safetensors.index.json, and the transformers 4.57 config layout (rope_scaling).

use std::collections::HashMap;
use std::path::PathBuf;

use screenpilot_model::{DType, Device, LogitsFor, ModelFolder, PromptInput, Qwen3Vl, Tensor};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("screenpilot-loading-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "preprocessor_config.json"] {
        std::fs::copy(tiny().join(f), dir.join(f)).expect("run scripts/setup.sh to fetch the tokenizer");
    }
    dir
}

fn logits(dir: &PathBuf) -> Vec<f32> {
    let folder = ModelFolder::open(dir).unwrap();
    let model = Qwen3Vl::load(&folder, DType::F32, &Device::Cpu).unwrap();
    let ids = [151644u32, 872, 198, 9707, 11, 1879, 0, 151645, 198, 151644, 77091, 198];
    let prompt = PromptInput { ids: &ids, grids: &[], vision: None };
    let out = model.prefill(&prompt, &mut model.new_cache(), LogitsFor::All).unwrap();
    out.logits.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn sharded_checkpoint_loads_to_the_same_model() {
    let dir = scratch("sharded");
    let all = candle_core::safetensors::load(tiny().join("model.safetensors"), &Device::Cpu).unwrap();
    let (mut a, mut b): (HashMap<String, Tensor>, HashMap<String, Tensor>) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (name, t) in all {
        let (shard, file) = if name.contains("visual") { (&mut a, "model-00001-of-00002.safetensors") } else { (&mut b, "model-00002-of-00002.safetensors") };
        map.insert(name.clone(), serde_json::Value::String(file.into()));
        shard.insert(name, t);
    }
    candle_core::safetensors::save(&a, dir.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, dir.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(ModelFolder::open(&dir).unwrap().weights.len(), 2);
    assert_eq!(logits(&dir), logits(&tiny()));

    // A shard named in the index but absent is reported by name.
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let e = ModelFolder::open(&dir).unwrap_err().to_string();
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
}

#[test]
fn transformers_4_57_config_layout_loads_to_the_same_model() {
    let dir = scratch("v457");
    std::fs::copy(tiny().join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tiny().join("config.json")).unwrap()).unwrap();
    let text = cfg["text_config"].as_object_mut().unwrap();
    let rope = text.remove("rope_parameters").expect("the fixture uses the 5.x layout");
    text.insert("rope_theta".into(), rope["rope_theta"].clone());
    text.insert(
        "rope_scaling".into(),
        serde_json::json!({"rope_type": "default", "mrope_section": rope["mrope_section"], "mrope_interleaved": true}),
    );
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    assert_eq!(logits(&dir), logits(&tiny()));
}

#[test]
fn parameter_count_reads_every_tensor_shape_from_the_headers() {
    let all = candle_core::safetensors::load(tiny().join("model.safetensors"), &Device::Cpu).unwrap();
    let want: usize = all.values().map(|t| t.elem_count()).sum();
    assert_eq!(ModelFolder::open(tiny()).unwrap().parameter_count().unwrap(), want as u64);
}
