//! The kernel choice is a value each loaded model keeps: the tiny model loaded twice in one
//! process, once with every kernel and once with candle's ops only, reports each its own config
//! and (on the CPU, where no kernel applies) computes the same logits. On a GPU
//! `tests/cuda_parity.rs` compares the two where the kernels do run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use screenpilot_model::{CublasLt, DType, Device, FusedKernels, KernelConfig, ModelFolder, Qwen3Vl};

#[test]
fn two_models_in_one_process_keep_their_own_kernel_config() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny");
    let folder = ModelFolder::open(&dir).expect("run scripts/setup.sh to fetch the tokenizer");
    let flash_only = KernelConfig { fused: FusedKernels::FlashOnly, cublaslt: CublasLt::Off, cuda_graphs: false, quant: None };
    let a = Qwen3Vl::load(&folder, DType::F32, &Device::Cpu).unwrap();
    let b = Qwen3Vl::load_with(&folder, DType::F32, &Device::Cpu, flash_only).unwrap();
    let c = Qwen3Vl::load_with(&folder, DType::F32, &Device::Cpu, KernelConfig::candle_only()).unwrap();
    assert_eq!(*a.kernel_config(), KernelConfig::default());
    assert_eq!(*b.kernel_config(), flash_only);
    assert_eq!(*c.kernel_config(), KernelConfig::candle_only());
    let logits = |m: &Qwen3Vl| {
        let mut cache = m.new_cache();
        [9707u32, 11, 1879].iter().map(|&t| m.decode_step(t, &mut cache).unwrap().to_vec1::<f32>().unwrap()).collect::<Vec<_>>()
    };
    let want = logits(&a);
    assert_eq!(logits(&b), want);
    assert_eq!(logits(&c), want);
}
