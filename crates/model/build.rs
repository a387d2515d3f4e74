//! With the `cuda` feature, compiles kernels/*.cu to PTX for compute capability 8.0 (any GPU
//! from Ampere on can JIT it; older ones fall back to candle's kernels at run time).
//! Needs `nvcc` (or $NVCC) only when the feature is on.

use std::{env, path::PathBuf, process::Command};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels/flash_attn.cu");
    println!("cargo:rerun-if-env-changed=NVCC");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("flash_attn.ptx");
    let nvcc = env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-arch=compute_80", "-o"])
        .arg(&out)
        .arg("kernels/flash_attn.cu")
        .status()
        .unwrap_or_else(|e| panic!("running {nvcc} (needed by the cuda feature; see scripts/cuda-env.sh): {e}"));
    assert!(status.success(), "{nvcc} failed on kernels/flash_attn.cu");
}
