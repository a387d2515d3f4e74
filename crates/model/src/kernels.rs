//! Fused attention on CUDA: our own FlashAttention-2 style kernel (kernels/flash_attn.cu) for
//! bf16 with head dim 64 or 128. Scores stay in registers (f32), so the vision tower no longer
//! materialises (heads, seq, seq) score and probability tensors, and causal prefill skips the
//! masked half. Everything else (CPU, Metal, f32/f16, other head dims, GPUs older than
//! compute capability 8.0) keeps the unfused path, which is what the exactness tests run.
//!
//! `SCREENPILOT_FLASH=0` turns the kernel off (to measure it against the unfused path).

use candle_core::Tensor;

use crate::error::Result;

/// Attention of `q` (b, heads, sq, d) over `k`, `v` (b, kv_heads, skv, d), scaled by `scale`;
/// causal means query i sees keys 0..=i + (skv - sq). Returns (b, sq, heads, d), or `None` when
/// the fused kernel does not apply here (then the caller computes it the unfused way).
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32, causal: bool) -> Result<Option<Tensor>> {
    imp::attention(q, k, v, scale, causal)
}

fn enabled_by_env() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SCREENPILOT_FLASH").map(|v| v != "0").unwrap_or(true))
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;

    pub(super) fn attention(_: &Tensor, _: &Tensor, _: &Tensor, _: f32, _: bool) -> Result<Option<Tensor>> {
        let _ = enabled_by_env;
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use super::*;
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CpuStorage, CudaStorage, CustomOp3, DType, Layout, Shape};
    use half::bf16;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_attn.ptx"));
    const MODULE: &str = "screenpilot_flash_attn";
    const BLOCK_M: usize = 64;
    const THREADS: u32 = 128;

    pub(super) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32, causal: bool) -> Result<Option<Tensor>> {
        let candle_core::Device::Cuda(dev) = q.device() else { return Ok(None) };
        if !enabled_by_env() || !usable(dev) {
            return Ok(None);
        }
        if [q, k, v].iter().any(|t| t.dtype() != DType::BF16 || t.rank() != 4 || !aligned(t.layout())) {
            return Ok(None);
        }
        let (b, h, sq, d) = q.dims4()?;
        let (kb, hkv, skv, kd) = k.dims4()?;
        if !matches!(d, 64 | 128) || kd != d || kb != b || v.dims() != k.dims() || hkv == 0 || h % hkv != 0 {
            return Ok(None);
        }
        if sq == 0 || skv == 0 || (causal && skv < sq) {
            return Ok(None);
        }
        Ok(Some(q.apply_op3_no_bwd(k, v, &FlashAttn { scale, causal })?))
    }

    /// Whether the kernel loads on this GPU (compute capability 8.0 or newer); checked once.
    fn usable(dev: &candle_core::CudaDevice) -> bool {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| dev.get_or_load_custom_func("sp_flash_attn_bf16_d64", MODULE, PTX).is_ok())
    }

    /// 16-byte loads need the last dim contiguous and every row start on a multiple of 8 elements.
    fn aligned(l: &Layout) -> bool {
        let s = l.stride();
        s.last() == Some(&1) && l.start_offset() % 8 == 0 && s.iter().rev().skip(1).all(|x| x % 8 == 0)
    }

    struct FlashAttn {
        scale: f32,
        causal: bool,
    }

    impl CustomOp3 for FlashAttn {
        fn name(&self) -> &'static str {
            "screenpilot-flash-attn"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("the fused attention kernel is CUDA-only")
        }

        fn cuda_fwd(
            &self,
            qs: &CudaStorage,
            ql: &Layout,
            ks: &CudaStorage,
            kl: &Layout,
            vs: &CudaStorage,
            vl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = qs.device().clone();
            let (b, h, sq, d) = ql.shape().dims4()?;
            let (_, hkv, skv, _) = kl.shape().dims4()?;
            let q = qs.as_cuda_slice::<bf16>()?.slice(ql.start_offset()..);
            let k = ks.as_cuda_slice::<bf16>()?.slice(kl.start_offset()..);
            let v = vs.as_cuda_slice::<bf16>()?.slice(vl.start_offset()..);
            let func = dev.get_or_load_custom_func(&format!("sp_flash_attn_bf16_d{d}"), MODULE, PTX)?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(b * sq * h * d)? };
            let st = |l: &Layout| -> [i64; 3] {
                let s = l.stride();
                [s[0] as i64, s[1] as i64, s[2] as i64]
            };
            let (qst, kst, vst) = (st(ql), st(kl), st(vl));
            // o is (b, sq, h, d): batch, row and head strides.
            let ost = [(sq * h * d) as i64, (h * d) as i64, d as i64];
            let (sq_i, skv_i, h_i, hkv_i) = (sq as i32, skv as i32, h as i32, hkv as i32);
            let causal = i32::from(self.causal);
            let past = (skv as i64 - sq as i64).max(0) as i32;
            let mut lb = func.builder();
            lb.arg(&q).arg(&k).arg(&v).arg(&out);
            lb.arg(&sq_i).arg(&skv_i).arg(&h_i).arg(&hkv_i).arg(&causal).arg(&past).arg(&self.scale);
            for x in qst.iter().chain(kst.iter()).chain(vst.iter()).chain(ost.iter()) {
                lb.arg(x);
            }
            let cfg = LaunchConfig {
                grid_dim: (sq.div_ceil(BLOCK_M) as u32, h as u32, b as u32),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the argument list matches the kernel's signature; shapes were checked by
            // `attention` and the layouts by `aligned`.
            unsafe { lb.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((b, sq, h, d))))
        }
    }
}
