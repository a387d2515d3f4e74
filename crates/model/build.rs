//! With the `cuda` feature, compiles kernels/{flash_attn,fused}.cu to PTX for compute capability 8.0 (any GPU
//! from Ampere on can JIT it; older ones fall back to candle's kernels at run time), and
//! kernels/flash_attn_sm90.cu for compute_90a (Hopper's wgmma; loaded only on such GPUs).
//! Needs `nvcc` (or $NVCC) only when the feature is on.

use std::{env, path::PathBuf, process::Command};

/// (kernel file, PTX target).
const KERNELS: [(&str, &str); 3] = [("flash_attn", "compute_80"), ("fused", "compute_80"), ("flash_attn_sm90", "compute_90a")];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for (k, _) in KERNELS {
        println!("cargo:rerun-if-changed=kernels/{k}.cu");
    }
    println!("cargo:rerun-if-changed=kernels/attn_common.cuh");
    println!("cargo:rerun-if-env-changed=NVCC");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    for (k, target) in KERNELS {
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", &format!("-arch={target}"), "-o"])
            .arg(out_dir.join(format!("{k}.ptx")))
            .arg(format!("kernels/{k}.cu"))
            .status()
            .unwrap_or_else(|e| panic!("running {nvcc} (needed by the cuda feature; see scripts/cuda-env.sh): {e}"));
        assert!(status.success(), "{nvcc} failed on kernels/{k}.cu");
    }
}
