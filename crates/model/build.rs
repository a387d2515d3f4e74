//! With the `cuda` feature, compiles kernels/{flash_attn,fused}.cu to PTX for compute capability 8.0 (any GPU
//! from Ampere on can JIT it; older ones fall back to candle's kernels at run time), and
//! kernels/flash_attn_sm90.cu for compute_90a (Hopper's wgmma; loaded only on such GPUs).
//! fused.cu only includes the kernel families (norm.cu, rope.cu, ...): one PTX module each.
//! Needs `nvcc` (or $NVCC) only when the feature is on.

use std::{env, path::PathBuf, process::Command};

/// (kernel file, PTX target, required). The Hopper kernel is optional: a toolkit without
/// compute_90a (before CUDA 12) gets an empty module, which fails to load, and Hopper GPUs then
/// run the compute_80 kernels.
const KERNELS: [(&str, &str, bool); 3] =
    [("flash_attn", "compute_80", true), ("fused", "compute_80", true), ("flash_attn_sm90", "compute_90a", false)];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // The whole folder: the modules above include the other .cu files and the headers (abi.h, ...).
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=NVCC");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    for (k, target, required) in KERNELS {
        let out = out_dir.join(format!("{k}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", &format!("-arch={target}"), "-o"])
            .arg(&out)
            .arg(format!("kernels/{k}.cu"))
            .status()
            .unwrap_or_else(|e| panic!("running {nvcc} (needed by the cuda feature; see scripts/cuda-env.sh): {e}"));
        if !status.success() && !required {
            println!("cargo:warning={nvcc} cannot build kernels/{k}.cu for {target}; those GPUs use the compute_80 kernels");
            std::fs::write(&out, "").expect("writing an empty PTX module");
            continue;
        }
        assert!(status.success(), "{nvcc} failed on kernels/{k}.cu");
    }
}
