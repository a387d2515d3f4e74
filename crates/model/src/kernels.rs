//! Our CUDA kernels (crates/model/kernels/*.cu, compiled to PTX by build.rs under the `cuda`
//! feature), for bf16 on GPUs of compute capability 8.0 or newer:
//! - [`attention`]: fused FlashAttention-2 style attention (head dim 64 or 128) for the vision
//!   tower and causal prefill; scores stay in registers (f32).
//! - [`decode_attention`]: one new token per sequence over its cached keys.
//! - [`norm_rope`]: QK-norm + rotary embedding + head transpose in one pass.
//! - [`swiglu`]: silu(gate) * up.
//!
//! Each returns `None` where it does not apply (CPU, Metal, f32/f16, other shapes, older GPUs,
//! or turned off by `SCREENPILOT_FUSED`); the caller then runs the plain candle ops, which are what the
//! exactness tests run on the CPU.

use candle_core::Tensor;

use crate::error::Result;

/// Attention of `q` (b, heads, sq, d) over `k`, `v` (b, kv_heads, skv, d), scaled by `scale`;
/// causal means query i sees keys 0..=i + (skv - sq). Returns (b, sq, heads, d).
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32, causal: bool) -> Result<Option<Tensor>> {
    imp::attention(q, k, v, scale, causal)
}

/// Attention of one query per sequence: `q` (b, heads, 1, d) over `k`, `v` (b, kv_heads, len, d)
/// (views into a larger cache are fine). Returns (b, 1, heads * d).
pub(crate) fn decode_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Option<Tensor>> {
    imp::decode_attention(q, k, v, scale)
}

/// RMSNorm over the last axis of `x` (b, s, heads, d) with `weight` (d), then rotary embedding
/// with `cos_sin` ((s, d) or (b, s, d): cos then sin of the d/2 frequencies), returned as
/// (b, heads, s, d). Rounds like RmsNorm + rope do.
pub(crate) fn norm_rope(x: &Tensor, weight: &Tensor, cos_sin: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    imp::norm_rope(x, weight, cos_sin, eps)
}

/// `silu(gate) * up` for `gate_up` (.., 2n) = [gate | up]: (.., n).
pub(crate) fn swiglu(gate_up: &Tensor) -> Result<Option<Tensor>> {
    imp::swiglu(gate_up)
}

/// Whether the CUDA kernels may be used, to measure them against candle's ops:
/// `SCREENPILOT_FUSED=0` turns all off, `=flash` keeps only [`attention`].
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn enabled_by_env(is_flash: bool) -> bool {
    static ON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    match ON.get_or_init(|| std::env::var("SCREENPILOT_FUSED").unwrap_or_default()).as_str() {
        "0" => false,
        "flash" => is_flash,
        _ => true,
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;

    pub(super) fn attention(_: &Tensor, _: &Tensor, _: &Tensor, _: f32, _: bool) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn decode_attention(_: &Tensor, _: &Tensor, _: &Tensor, _: f32) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn norm_rope(_: &Tensor, _: &Tensor, _: &Tensor, _: f32) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn swiglu(_: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use super::*;
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, CustomOp3, DType, Layout, Shape};
    use half::bf16;

    const FLASH_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_attn.ptx"));
    const FUSED_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
    const BLOCK_M: usize = 64;
    /// Warps of the decode attention kernel (SP_DEC_WARPS).
    const DECODE_WARPS: u32 = 16;

    // (candle does not export the type of a loaded function, hence macros.)
    macro_rules! flash {
        ($dev:expr, $name:expr) => {
            $dev.get_or_load_custom_func($name, "screenpilot_flash_attn", FLASH_PTX)
        };
    }

    macro_rules! fused {
        ($dev:expr, $name:expr) => {
            $dev.get_or_load_custom_func($name, "screenpilot_fused", FUSED_PTX)
        };
    }

    /// The CUDA device of `t` when the kernels apply to it: bf16, enabled, and the PTX loads on
    /// this GPU (compute capability 8.0 or newer; checked once).
    fn device_for(t: &Tensor, is_flash: bool) -> Option<CudaDevice> {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let candle_core::Device::Cuda(dev) = t.device() else { return None };
        let ok = enabled_by_env(is_flash)
            && t.dtype() == DType::BF16
            && *OK.get_or_init(|| {
                flash!(dev, "sp_flash_attn_bf16_d64").is_ok() && fused!(dev, "sp_swiglu_bf16").is_ok()
            });
        ok.then(|| dev.clone())
    }

    /// Vectorised loads need the last dim contiguous and rows starting on multiples of 8 elements.
    fn aligned(l: &Layout) -> bool {
        let s = l.stride();
        s.last() == Some(&1) && l.start_offset() % 8 == 0 && s.iter().rev().skip(1).all(|x| x % 8 == 0)
    }

    fn view<'a>(s: &'a CudaStorage, l: &Layout) -> candle_core::Result<CudaView<'a, bf16>> {
        Ok(s.as_cuda_slice::<bf16>()?.slice(l.start_offset()..))
    }

    fn strides3(l: &Layout) -> [i64; 3] {
        let s = l.stride();
        [s[0] as i64, s[1] as i64, s[2] as i64]
    }

    macro_rules! cpu_unsupported {
        () => {
            fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
                candle_core::bail!("{} is CUDA-only", self.name())
            }
        };
    }

    // ---- fused attention (vision, prefill) ----

    pub(super) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32, causal: bool) -> Result<Option<Tensor>> {
        if device_for(q, true).is_none() || [q, k, v].iter().any(|t| t.dtype() != DType::BF16 || t.rank() != 4 || !aligned(t.layout())) {
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

    struct FlashAttn {
        scale: f32,
        causal: bool,
    }

    impl CustomOp3 for FlashAttn {
        fn name(&self) -> &'static str {
            "screenpilot-flash-attn"
        }

        cpu_unsupported!();

        fn cuda_fwd(&self, qs: &CudaStorage, ql: &Layout, ks: &CudaStorage, kl: &Layout, vs: &CudaStorage, vl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = qs.device().clone();
            let (b, h, sq, d) = ql.shape().dims4()?;
            let (_, hkv, skv, _) = kl.shape().dims4()?;
            let (q, k, v) = (view(qs, ql)?, view(ks, kl)?, view(vs, vl)?);
            let func = flash!(&dev, &format!("sp_flash_attn_bf16_d{d}"))?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(b * sq * h * d)? };
            let (qst, kst, vst) = (strides3(ql), strides3(kl), strides3(vl));
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
            let cfg = LaunchConfig { grid_dim: (sq.div_ceil(BLOCK_M) as u32, h as u32, b as u32), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature; shapes and layouts were checked.
            unsafe { lb.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((b, sq, h, d))))
        }
    }

    // ---- decode attention ----

    pub(super) fn decode_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Option<Tensor>> {
        if device_for(q, false).is_none() || [k, v].iter().any(|t| t.dtype() != DType::BF16 || t.rank() != 4 || !aligned(t.layout())) {
            return Ok(None);
        }
        let (b, h, sq, d) = q.dims4()?;
        let (kb, hkv, len, kd) = k.dims4()?;
        let rep = if hkv == 0 { 0 } else { h / hkv };
        if sq != 1 || !matches!(d, 64 | 128) || kd != d || kb != b || v.dims() != k.dims() || hkv * rep != h || !matches!(rep, 1 | 2 | 4) || len == 0 {
            return Ok(None);
        }
        let q = q.contiguous()?;
        Ok(Some(q.apply_op3_no_bwd(k, v, &DecodeAttn { scale })?))
    }

    struct DecodeAttn {
        scale: f32,
    }

    impl CustomOp3 for DecodeAttn {
        fn name(&self) -> &'static str {
            "screenpilot-decode-attn"
        }

        cpu_unsupported!();

        fn cuda_fwd(&self, qs: &CudaStorage, ql: &Layout, ks: &CudaStorage, kl: &Layout, vs: &CudaStorage, vl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = qs.device().clone();
            let (b, h, _, d) = ql.shape().dims4()?;
            let (_, hkv, len, _) = kl.shape().dims4()?;
            let (q, k, v) = (view(qs, ql)?, view(ks, kl)?, view(vs, vl)?);
            let func = fused!(&dev, &format!("sp_decode_attn_bf16_d{d}_r{}", h / hkv))?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(b * h * d)? };
            let len_i = len as i32;
            let mut lb = func.builder();
            lb.arg(&q).arg(&k).arg(&v).arg(&out).arg(&len_i).arg(&self.scale);
            let (kst, vst) = (strides3(kl), strides3(vl));
            for x in kst.iter().chain(vst.iter()) {
                lb.arg(x);
            }
            let cfg = LaunchConfig { grid_dim: (hkv as u32, b as u32, 1), block_dim: (32 * DECODE_WARPS, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature; shapes and layouts were checked.
            unsafe { lb.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((b, 1, h * d))))
        }
    }

    // ---- QK-norm + rope ----

    pub(super) fn norm_rope(x: &Tensor, weight: &Tensor, cos_sin: &Tensor, eps: f32) -> Result<Option<Tensor>> {
        if device_for(x, false).is_none() || x.rank() != 4 || x.stride()[3] != 1 || weight.dtype() != DType::BF16 || cos_sin.dtype() != DType::BF16 {
            return Ok(None);
        }
        let (b, s, _, d) = x.dims4()?;
        let rows_ok = match cos_sin.dims() {
            [rs, cd] => *rs == s && *cd == d,
            [cb, rs, cd] => *cb == b && *rs == s && *cd == d,
            _ => false,
        };
        if !rows_ok || d % 64 != 0 || d > 512 || weight.dims() != [d] {
            return Ok(None);
        }
        let (weight, cos_sin) = (weight.contiguous()?, cos_sin.contiguous()?);
        Ok(Some(x.apply_op3_no_bwd(&weight, &cos_sin, &NormRope { eps })?))
    }

    struct NormRope {
        eps: f32,
    }

    impl CustomOp3 for NormRope {
        fn name(&self) -> &'static str {
            "screenpilot-norm-rope"
        }

        cpu_unsupported!();

        fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, ws: &CudaStorage, wl: &Layout, cs: &CudaStorage, cl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = xs.device().clone();
            let (b, s, h, d) = xl.shape().dims4()?;
            let (x, w, c) = (view(xs, xl)?, view(ws, wl)?, view(cs, cl)?);
            let func = fused!(&dev, "sp_norm_rope_bf16")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(b * h * s * d)? };
            let [x_bs, x_rs, x_hs] = strides3(xl);
            let cs_bs = if cl.dims().len() == 3 { (s * d) as i64 } else { 0 };
            let (s_i, h_i, d_i) = (s as i32, h as i32, d as i32);
            let mut lb = func.builder();
            lb.arg(&x).arg(&w).arg(&c).arg(&out).arg(&s_i).arg(&h_i).arg(&d_i).arg(&self.eps);
            lb.arg(&x_bs).arg(&x_rs).arg(&x_hs).arg(&cs_bs);
            let cfg = LaunchConfig { grid_dim: (s as u32, h as u32, b as u32), block_dim: (d as u32 / 2, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature; shapes were checked.
            unsafe { lb.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((b, h, s, d))))
        }
    }

    // ---- SwiGLU ----

    pub(super) fn swiglu(gate_up: &Tensor) -> Result<Option<Tensor>> {
        if device_for(gate_up, false).is_none() || gate_up.rank() == 0 || gate_up.dim(candle_core::D::Minus1)? % 2 != 0 {
            return Ok(None);
        }
        Ok(Some(gate_up.contiguous()?.apply_op1_no_bwd(&SwiGlu)?))
    }

    struct SwiGlu;

    impl CustomOp1 for SwiGlu {
        fn name(&self) -> &'static str {
            "screenpilot-swiglu"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("{} is CUDA-only", self.name())
        }

        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = s.device().clone();
            let mut dims = l.dims().to_vec();
            let n = dims.last().copied().unwrap_or(0) / 2;
            let rows = l.shape().elem_count() / (2 * n).max(1);
            if let Some(last) = dims.last_mut() {
                *last = n;
            }
            let x = view(s, l)?;
            let func = fused!(&dev, "sp_swiglu_bf16")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(rows * n)? };
            let (rows_i, n_i) = (rows as i32, n as i32);
            let mut lb = func.builder();
            lb.arg(&x).arg(&out).arg(&rows_i).arg(&n_i);
            let blocks = (rows * n).div_ceil(256).clamp(1, 4096) as u32;
            let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature.
            unsafe { lb.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(dims)))
        }
    }
}
