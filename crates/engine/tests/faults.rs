//! Faults under a running engine (issue 17): the weights file truncated or replaced while the
//! model is loaded, and the model folder deleted while serving. The weights are copied out of
//! the memory map while loading, so no mapping of the file is left to fault (SIGBUS) on, and
//! the answers stay the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use screenpilot_engine::{Engine, EngineConfig};
use screenpilot_model::{DType, Device};

/// A private copy of the tiny model folder.
fn copy_of_tiny(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("screenpilot-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(fixtures().join("tiny")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
    }
    dir
}

/// Whether this process still maps `path` (Linux: /proc/self/maps).
fn mapped(path: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().any(|l| l.ends_with(&*path.to_string_lossy()))
}

fn answer(engine: &mut Engine) -> Vec<u32> {
    let pic = image(5, 96, 64);
    let req = engine.validate(request(vec![user(vec![img(&pic), text("What is on the screen?")])], 6)).unwrap();
    engine.run(&req, &mut |_| {}).unwrap().token_ids
}

#[test]
fn truncating_or_replacing_the_weights_while_loaded_changes_nothing() {
    let dir = copy_of_tiny("truncate");
    let weights = dir.join("model.safetensors");
    let mut engine = Engine::load(&dir, DType::F32, &Device::Cpu, EngineConfig::default().without_caches()).unwrap();
    assert!(!mapped(&weights), "the weights file is still memory-mapped after loading");
    let before = answer(&mut engine);
    // Truncated in place (a SIGBUS on any page still mapped), then replaced by other bytes.
    std::fs::OpenOptions::new().write(true).open(&weights).unwrap().set_len(0).unwrap();
    assert_eq!(answer(&mut engine), before);
    std::fs::write(&weights, vec![0x5a; 4096]).unwrap();
    assert_eq!(answer(&mut engine), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn deleting_the_model_folder_while_serving_changes_nothing() {
    let dir = copy_of_tiny("delete");
    let mut engine = Engine::load(&dir, DType::F32, &Device::Cpu, EngineConfig::default().without_caches()).unwrap();
    let before = answer(&mut engine);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(answer(&mut engine), before);
    // Loading it again now is one clear error naming the folder.
    let err = Engine::load(&dir, DType::F32, &Device::Cpu, EngineConfig::default()).err().expect("gone");
    assert!(err.to_string().contains(&*dir.to_string_lossy()), "{err}");
}
