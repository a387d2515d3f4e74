//! Our CUDA kernels (crates/model/kernels/*.cu, compiled to PTX by build.rs under the `cuda`
//! feature), for bf16 on GPUs of compute capability 8.0 or newer:
//! - [`attention`]: fused FlashAttention-2 style attention (head dim 64, 72 or 128) for the vision
//!   tower and causal prefill; scores stay in registers (f32).
//! - [`decode_attention_norm`]: one decode step of a batch: QK-norm + rope of the new token, its
//!   KV row written into each sequence's cache, attention with keys split over blocks; lengths,
//!   positions and KV buffer addresses are read from device memory, so a CUDA graph replays it
//!   ([`crate::graph`]).
//! - [`decode_attention`]: one new token per sequence over given cached keys (the fallback).
//! - [`norm_rope`]: QK-norm + rotary embedding + head transpose in one pass.
//! - [`add_rms_norm`], [`layer_norm`]: residual add + the norm after it.
//! - [`swiglu`]: silu(gate) * up.
//! - [`linear`]: a cuBLASLt matmul with the bias (and tanh GELU) in its epilogue.
//! - [`bias_act`], [`vision_rope`]: a linear layer's bias + activation; the vision tower's rope.
//! - [`rows_add`], [`kv_write`]: DeepStack's injection; a prefill's keys and values into the cache.
//! - [`patch_rows`]: the vision tower's input rows from the uploaded 8-bit image.
//!
//! Each returns `None` where it does not apply (CPU, Metal, f32/f16, other shapes, older GPUs,
//! or turned off by `SCREENPILOT_FUSED`); the caller then runs the plain candle ops, which are what the
//! exactness tests run on the CPU.

use candle_core::Tensor;

use crate::error::Result;

/// Attention of `q` (b, heads, sq, d) over `k`, `v` (b, kv_heads, skv, d) (d = 64, 72 or 128),
/// scaled by `scale`; causal means query i sees keys 0..=i + (skv - sq). Returns (b, sq, heads, d).
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32, causal: bool) -> Result<Option<Tensor>> {
    imp::attention(q, k, v, scale, causal)
}

/// Attention of one query per sequence: `q` (b, heads, 1, d) over `k`, `v` (b, kv_heads, len, d)
/// (views into a larger cache are fine). Returns (b, 1, heads * d).
pub(crate) fn decode_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Option<Tensor>> {
    imp::decode_attention(q, k, v, scale)
}

/// Most sequences one [`decode_attention_norm`] call takes (SP_MAX_BATCH).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) const MAX_BATCH: usize = 16;

/// u32 words of one layer's KV table (SpKvTable of fused.cu: MAX_BATCH key addresses, value
/// addresses and head strides, 8 bytes each).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) const KV_TABLE_WORDS: usize = 3 * 2 * MAX_BATCH;

/// RMSNorm over the last axis of `x` (b, s, heads, d) with `weights` (2, d) (row 0 for heads
/// below `split`, row 1 for the rest: q and k heads at once), then rotary embedding with
/// `cos_sin` ((s, d) or (b, s, d): cos then sin of the d/2 frequencies), returned as
/// (b, heads, s, d). Rounds like RmsNorm + rope do.
///
/// With `cache`, `x` is the whole projection (b, s, split + 2 kv_heads, d): the query heads are
/// returned (b, split, s, d), the key heads written normed and rotated, and the value heads
/// copied, into rows [offset, offset + s) of the cache's buffers (the layer's KV append, in the
/// same pass).
pub(crate) fn norm_rope(x: &Tensor, weights: &Tensor, split: usize, cos_sin: &Tensor, eps: f32, cache: Option<KvTarget>) -> Result<Option<Tensor>> {
    imp::norm_rope(x, weights, split, cos_sin, eps, cache)
}

/// Where [`norm_rope`] writes a prefill's keys and values: rows from `offset` of a layer's
/// buffers `k`, `v` (b, kv_heads, capacity, d), contiguous and the cache's own.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct KvTarget<'a> {
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub offset: usize,
}

/// One decode step of a batch in one launch (plus a merge of the key splits): `qkv` (b, 1,
/// (heads + 2 kv_heads) * d) is the raw projection of the new tokens; the kernel norms and rotates the q
/// and k heads (`weights` (2, d), `cos_sin` a table of positions 0.., `step.pos` (b,) u32 on the
/// device) exactly as [`norm_rope`] does, writes each sequence's new key and value at row
/// `step.lens[i]` of the buffers in `step.kv_table` ([`kv_table`]; they must have room for one
/// more) and returns the attention output (b, 1, heads * d), keys spread over `step.splits`
/// blocks per sequence and key head. The caller then counts the token as held.
pub(crate) fn decode_attention_norm(qkv: &Tensor, heads: usize, weights: &Tensor, cos_sin: &Tensor, eps: f32, step: &DecodeStep) -> Result<Option<Tensor>> {
    imp::decode_attention_norm(qkv, heads, weights, cos_sin, eps, step)
}

/// What a decode kernel reads per step from device memory: each sequence's rope position and
/// length ((b,) u32 each), this layer's KV table ([`kv_table`]), and the key splits.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct DecodeStep<'a> {
    pub pos: &'a Tensor,
    pub lens: &'a Tensor,
    pub kv_table: &'a Tensor,
    pub splits: usize,
    pub scale: f32,
}

/// `x + y` and the RMSNorm of it with `weight`, as (2, ..) = [sum, normed]; `x`, `y` (.., n).
pub(crate) fn add_rms_norm(x: &Tensor, y: &Tensor, weight: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    imp::add_rms_norm(x, y, weight, eps)
}

/// LayerNorm of `x` (rows, n) (or of `x + y`, rounded like a bf16 add) with `wb` (2, n) =
/// [weight; bias]: the norm, or (2, rows, n) = [sum, norm] when `y` is given. f32 statistics,
/// one rounding, as the reference's bf16 LayerNorm.
pub(crate) fn layer_norm(x: &Tensor, y: Option<&Tensor>, wb: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    imp::layer_norm(x, y, wb, eps)
}

/// `x` (rows, n) with `feat[k]` added to row `rows[k]` (`rows` (r,) u32, `feat` (r, n)), each sum
/// rounded like a bf16 add: DeepStack's injection of visual features. Row indices past the end
/// are skipped.
pub(crate) fn rows_add(x: &Tensor, rows: &Tensor, feat: &Tensor) -> Result<Option<Tensor>> {
    imp::rows_add(x, rows, feat)
}

/// Writes `src` (1, heads, s, d) (any strides, last dim contiguous) into rows `offset..offset + s`
/// of the KV buffer `dst` (1, heads, cap, d) contiguous, in place: a prefill's keys or values
/// into the cache in one pass. `false` where it does not apply (the caller copies with candle).
pub(crate) fn kv_write(dst: &Tensor, src: &Tensor, offset: usize) -> Result<bool> {
    imp::kv_write(dst, src, offset)
}

/// How many blocks share the keys of one sequence and key head in a batched decode of `b`
/// sequences of at most `max_len` tokens: about four waves of an H100's SMs, one block per ~64
/// keys at most, rounded down to a power of two (few distinct values: each is a recorded graph).
/// Measured on an H100 (tools/check_kernels.py, 1546 keys): one sequence 12.9 us a layer at 16
/// splits against 14.4 us at 32 and 19.2 us at 4; eight sequences 30.8 us at 8, 34.5 us at 4.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn decode_splits(kv_heads: usize, b: usize, max_len: usize) -> usize {
    let want = 528usize.div_ceil((kv_heads * b).max(1)).min(max_len.div_ceil(64)).clamp(1, 64);
    1 << want.ilog2()
}

/// The vision tower's bf16 input rows (gh gw, 3 t p p) from `rgb`, an image of (gh p, gw p) pixels
/// uploaded as bytes (rgb order), and `lut` (3, 256) f32: what
/// [`crate::preprocess::PreprocessedImage::to_tensor`] builds, rounded to bf16, in one launch.
pub(crate) fn patch_rows(rgb: &Tensor, lut: &Tensor, grid: (usize, usize), p: usize, m: usize, t: usize) -> Result<Option<Tensor>> {
    imp::patch_rows(rgb, lut, grid, p, m, t)
}

/// `silu(gate) * up` for `gate_up` (.., 2n) = [gate | up]: (.., n).
pub(crate) fn swiglu(gate_up: &Tensor) -> Result<Option<Tensor>> {
    imp::swiglu(gate_up)
}

/// The activation [`bias_act`] applies after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    None = 0,
    GeluTanh = 1,
    GeluErf = 2,
}

/// `act(x + bias)` for `x` (.., n) and `bias` (n): a linear layer's bias and activation in one
/// pass after its matmul.
pub(crate) fn bias_act(x: &Tensor, bias: &Tensor, act: Act) -> Result<Option<Tensor>> {
    imp::bias_act(x, bias, act)
}

/// `act(x w^T + bias)` for `x` (.., k) and `w` (n, k) by cuBLASLt, the bias (and the tanh GELU)
/// applied to the f32 accumulator in the matmul's epilogue and rounded once, as transformers'
/// `F.linear` does on CUDA. `act` may be [`Act::None`] or [`Act::GeluTanh`]. `None` where it does
/// not apply, or with `SCREENPILOT_LT=0`; `SCREENPILOT_LT=bias` keeps the GELU out of the epilogue
/// (`None` for it: the caller then applies the activation after a matmul with `Act::None`,
/// rounding twice like the reference's separate GELU).
pub(crate) fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Act) -> Result<Option<Tensor>> {
    imp::linear(x, w, bias, act)
}

/// Rotary embedding of the vision tower's q and k read from its qkv output (seq, 3 * heads * d),
/// in f32 with tables `cos`, `sin` (seq, d / 2) (f32), q multiplied by `q_scale`: (2, heads, seq,
/// d) = [q, k].
pub(crate) fn vision_rope(qkv: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize, q_scale: f32) -> Result<Option<Tensor>> {
    imp::vision_rope(qkv, cos, sin, heads, q_scale)
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

#[cfg(feature = "cuda")]
pub(crate) use imp::{address, kv_table, upload_u32, usable};

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;

    pub(super) fn attention(_: &Tensor, _: &Tensor, _: &Tensor, _: f32, _: bool) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn decode_attention(_: &Tensor, _: &Tensor, _: &Tensor, _: f32) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn norm_rope(_: &Tensor, _: &Tensor, _: usize, _: &Tensor, _: f32, _: Option<KvTarget>) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn add_rms_norm(_: &Tensor, _: &Tensor, _: &Tensor, _: f32) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn swiglu(_: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn layer_norm(_: &Tensor, _: Option<&Tensor>, _: &Tensor, _: f32) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn rows_add(_: &Tensor, _: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn patch_rows(_: &Tensor, _: &Tensor, _: (usize, usize), _: usize, _: usize, _: usize) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn kv_write(_: &Tensor, _: &Tensor, _: usize) -> Result<bool> {
        Ok(false)
    }
    pub(super) fn bias_act(_: &Tensor, _: &Tensor, _: Act) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn linear(_: &Tensor, _: &Tensor, _: Option<&Tensor>, _: Act) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn vision_rope(_: &Tensor, _: &Tensor, _: &Tensor, _: usize, _: f32) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn decode_attention_norm(_: &Tensor, _: usize, _: &Tensor, _: &Tensor, _: f32, _: &DecodeStep) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use super::*;
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape};
    use half::bf16;

    const FLASH_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_attn.ptx"));
    const FUSED_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
    const FLASH90_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_attn_sm90.ptx"));

    /// A flash-attention kernel: entry point, query rows a block, threads a block, whether it is
    /// in the Hopper module, dynamic shared memory (bytes).
    struct FlashVariant {
        name: &'static str,
        rows: usize,
        threads: u32,
        sm90: bool,
        smem: u32,
    }

    /// The flash-attention variant for each head dim (measured by tools/check_kernels.py on an
    /// H100: vision layer 0.18 ms with wgmma against 0.29, prefill layer 0.050 against 0.084).
    fn flash_variant(d: usize, hopper: bool) -> FlashVariant {
        let v = |name, rows, threads, sm90, smem| FlashVariant { name, rows, threads, sm90, smem };
        match d {
            // flash_attn_sm90.cu: three (d 64) or two (d 128) stages of d / 4 KB of key/value tiles.
            64 if hopper => v("sp_flash_attn_wg_bf16_d64", 128, 256, true, 3 * 64 * 256),
            128 if hopper => v("sp_flash_attn_wg1_bf16_d128", 64, 128, true, 2 * 128 * 256),
            64 => v("sp_flash_attn_bf16_d64_w4_m2_n64_s2", 128, 128, false, 0),
            72 => v("sp_flash_attn_bf16_d72_w4_m2_n64_s2", 128, 128, false, 0),
            _ => v("sp_flash_attn_bf16_d128_w4_m1_n64_s1", 64, 128, false, 0),
        }
    }

    /// Whether `dev` is a Hopper GPU (compute capability 9.0) whose driver loads the wgmma kernel
    /// (flash_attn_sm90.cu); checked once.
    fn hopper(dev: &CudaDevice) -> bool {
        use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute as A;
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            let ctx = dev.cuda_stream().context().clone();
            let cc = (ctx.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR), ctx.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR));
            matches!(cc, (Ok(9), Ok(0))) && dev.get_or_load_custom_func(flash_variant(64, true).name, "screenpilot_flash_attn_sm90", FLASH90_PTX).is_ok()
        })
    }
    /// Warps of the decode attention kernel (SP_DEC_WARPS).
    const DECODE_WARPS: u32 = 4;

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
        usable(t.device(), t.dtype(), is_flash)
    }

    /// [`device_for`] by device and dtype.
    pub(crate) fn usable(dev: &candle_core::Device, dtype: DType, is_flash: bool) -> Option<CudaDevice> {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let candle_core::Device::Cuda(dev) = dev else { return None };
        let ok = enabled_by_env(is_flash)
            && dtype == DType::BF16
            && *OK.get_or_init(|| {
                flash!(dev, flash_variant(64, false).name).is_ok() && fused!(dev, "sp_swiglu_bf16").is_ok()
            });
        ok.then(|| dev.clone())
    }

    /// How many key splits give the GPU enough blocks: `base` blocks without splitting, `keys`
    /// keys, splits of at least `min_keys` in multiples of `step`. Returns (splits, chunk).
    fn key_splits(base: usize, keys: usize, min_keys: usize, step: usize) -> (usize, usize) {
        const TARGET_BLOCKS: usize = 264; // two waves of an H100's 132 SMs
        let want = TARGET_BLOCKS.div_ceil(base.max(1)).min(keys.div_ceil(min_keys)).max(1);
        let chunk = keys.div_ceil(want).next_multiple_of(step);
        (keys.div_ceil(chunk).max(1), chunk)
    }

    /// Scratch for split results and the launch that merges them into `out` (rows, d).
    struct Partials {
        o: CudaSlice<f32>,
        ml: CudaSlice<f32>,
    }

    impl Partials {
        fn new(dev: &CudaDevice, rows: usize, splits: usize, d: usize) -> candle_core::Result<Option<Self>> {
            if splits == 1 {
                return Ok(None);
            }
            // SAFETY: every element is written by the attention kernel before the merge reads it.
            Ok(Some(Self { o: unsafe { dev.alloc::<f32>(rows * splits * d)? }, ml: unsafe { dev.alloc::<f32>(rows * splits * 2)? } }))
        }

        fn combine(&self, dev: &CudaDevice, out: &CudaSlice<bf16>, rows: usize, splits: usize, d: usize) -> candle_core::Result<()> {
            let func = flash!(dev, "sp_attn_combine")?;
            let (splits, d_i) = (splits as i32, d as i32);
            let mut lb = func.builder();
            lb.arg(&self.o).arg(&self.ml).arg(out).arg(&splits).arg(&d_i);
            let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (d as u32, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature.
            unsafe { lb.launch(cfg) }.w()?;
            Ok(())
        }
    }

    /// Pushes the partial buffers, or two null pointers when there is a single split.
    fn push_partials<'a>(lb: &mut candle_core::cuda_backend::cudarc::driver::LaunchArgs<'a>, p: &'a Option<Partials>) {
        static NULL: u64 = 0;
        match p {
            Some(p) => {
                lb.arg(&p.o).arg(&p.ml);
            }
            None => {
                lb.arg(&NULL).arg(&NULL);
            }
        }
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
        (two inputs) => {
            fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
                candle_core::bail!("{} is CUDA-only", self.name())
            }
        };
    }

    /// CUDA-only CustomOp2 and CustomOp3 impls for an op whose third input is optional: both
    /// call `run(x, x_layout, second, second_layout, third)` with `third` None or Some.
    macro_rules! optional_third_input {
        ($ty:ty, $name2:literal, $name3:literal) => {
            impl CustomOp2 for $ty {
                fn name(&self) -> &'static str {
                    $name2
                }

                fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
                    candle_core::bail!("{} is CUDA-only", $name2)
                }

                fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, s2: &CudaStorage, l2: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
                    self.run(xs, xl, s2, l2, None)
                }
            }

            impl CustomOp3 for $ty {
                fn name(&self) -> &'static str {
                    $name3
                }

                fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
                    candle_core::bail!("{} is CUDA-only", $name3)
                }

                fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, s2: &CudaStorage, l2: &Layout, s3: &CudaStorage, l3: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
                    self.run(xs, xl, s2, l2, Some((s3, l3)))
                }
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
        if !matches!(d, 64 | 72 | 128) || kd != d || kb != b || v.dims() != k.dims() || hkv == 0 || h % hkv != 0 {
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
            let FlashVariant { name, rows: block_m, threads, sm90, smem } = flash_variant(d, hopper(&dev));
            let func = if sm90 { dev.get_or_load_custom_func(name, "screenpilot_flash_attn_sm90", FLASH90_PTX)? } else { flash!(&dev, name)? };
            // Past 48 KB a block (dynamic plus the kernel's own: the d-64 kernel's mbarriers,
            // padded to 1 KB) the launch needs the opt-in.
            if smem >= 48 * 1024 {
                use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute as F;
                func.set_attribute(F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32).w()?;
            }
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(b * sq * h * d)? };
            let (qst, kst, vst) = (strides3(ql), strides3(kl), strides3(vl));
            // o is (b, sq, h, d): batch, row and head strides.
            let ost = [(sq * h * d) as i64, (h * d) as i64, d as i64];
            let (sq_i, skv_i, h_i, hkv_i) = (sq as i32, skv as i32, h as i32, hkv as i32);
            let causal = i32::from(self.causal);
            let past = (skv as i64 - sq as i64).max(0) as i32;
            let m_blocks = sq.div_ceil(block_m);
            let (splits, chunk) = key_splits(m_blocks * h * b, skv, 128, 64);
            let partials = Partials::new(&dev, b * sq * h, splits, d)?;
            let (splits_i, chunk_i) = (splits as i32, chunk as i32);
            let mut lb = func.builder();
            lb.arg(&q).arg(&k).arg(&v).arg(&out);
            lb.arg(&sq_i).arg(&skv_i).arg(&h_i).arg(&hkv_i).arg(&causal).arg(&past).arg(&self.scale);
            for x in qst.iter().chain(kst.iter()).chain(vst.iter()).chain(ost.iter()) {
                lb.arg(x);
            }
            lb.arg(&splits_i).arg(&chunk_i);
            push_partials(&mut lb, &partials);
            let cfg = LaunchConfig { grid_dim: (m_blocks as u32, h as u32, (b * splits) as u32), block_dim: (threads, 1, 1), shared_mem_bytes: smem };
            // SAFETY: the arguments match the kernel's signature; shapes and layouts were checked.
            unsafe { lb.launch(cfg) }.w()?;
            if let Some(p) = &partials {
                p.combine(&dev, &out, b * sq * h, splits, d)?;
            }
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
            // Keys per warp step: DECODE_WARPS warps x 8 keys.
            let (splits, chunk) = key_splits(hkv * b, len, 64, 8 * DECODE_WARPS as usize);
            let partials = Partials::new(&dev, b * h, splits, d)?;
            let chunk_i = chunk as i32;
            let mut lb = func.builder();
            lb.arg(&q).arg(&k).arg(&v).arg(&out).arg(&len_i).arg(&self.scale);
            let (kst, vst) = (strides3(kl), strides3(vl));
            for x in kst.iter().chain(vst.iter()) {
                lb.arg(x);
            }
            lb.arg(&chunk_i);
            push_partials(&mut lb, &partials);
            let cfg = LaunchConfig { grid_dim: (hkv as u32, splits as u32, b as u32), block_dim: (32 * DECODE_WARPS, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature; shapes and layouts were checked.
            unsafe { lb.launch(cfg) }.w()?;
            if let Some(p) = &partials {
                p.combine(&dev, &out, b * h, splits, d)?;
            }
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((b, 1, h * d))))
        }
    }

    // ---- QK-norm + rope ----

    pub(super) fn norm_rope(x: &Tensor, weights: &Tensor, split: usize, cos_sin: &Tensor, eps: f32, cache: Option<KvTarget>) -> Result<Option<Tensor>> {
        if device_for(x, false).is_none() || x.rank() != 4 || x.stride()[3] != 1 || weights.dtype() != DType::BF16 || cos_sin.dtype() != DType::BF16 {
            return Ok(None);
        }
        let (b, s, heads, d) = x.dims4()?;
        let target = match cache {
            None => None,
            Some(KvTarget { k, v, offset }) => {
                let fits = |t: &Tensor| {
                    t.dtype() == DType::BF16 && t.is_contiguous() && t.rank() == 4 && t.dims()[0] == b && t.dims()[3] == d && t.dims() == k.dims()
                };
                let (kv, cap) = (k.dim(1)?, k.dim(2)?);
                if !fits(k) || !fits(v) || split + 2 * kv != heads || offset + s > cap {
                    return Ok(None);
                }
                Some(CacheRows { k: address(k)?, v: address(v)?, kv_heads: kv as i32, cap: cap as i32, offset: offset as i32 })
            }
        };
        let rows_ok = match cos_sin.dims() {
            [rs, cd] => *rs == s && *cd == d,
            [cb, rs, cd] => *cb == b && *rs == s && *cd == d,
            _ => false,
        };
        if !rows_ok || !matches!(d, 64 | 128) || weights.dims() != [2, d] {
            return Ok(None);
        }
        let (weights, cos_sin) = (weights.contiguous()?, cos_sin.contiguous()?);
        Ok(Some(x.apply_op3_no_bwd(&weights, &cos_sin, &NormRope { eps, split: split as i32, target })?))
    }

    /// A layer's KV buffers as the norm-rope kernel writes them (device addresses).
    struct CacheRows {
        k: u64,
        v: u64,
        kv_heads: i32,
        cap: i32,
        offset: i32,
    }

    struct NormRope {
        eps: f32,
        split: i32,
        target: Option<CacheRows>,
    }

    impl CustomOp3 for NormRope {
        fn name(&self) -> &'static str {
            "screenpilot-norm-rope"
        }

        cpu_unsupported!();

        fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, ws: &CudaStorage, wl: &Layout, cs: &CudaStorage, cl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = xs.device().clone();
            let (b, s, all, d) = xl.shape().dims4()?;
            // The heads normed: all of x, or with a cache target the query and key heads (the
            // value heads after them are copied); the heads returned: those, or the query heads.
            let (h, out_h) = match &self.target {
                Some(t) => (all - t.kv_heads as usize, self.split as usize),
                None => (all, all),
            };
            let (x, w, c) = (view(xs, xl)?, view(ws, wl)?, view(cs, cl)?);
            let func = fused!(&dev, "sp_norm_rope_bf16")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(b * out_h * s * d)? };
            let [x_bs, x_rs, x_hs] = strides3(xl);
            let cs_bs = if cl.dims().len() == 3 { (s * d) as i64 } else { 0 };
            // Per-row tables: no device positions (the kernel's `pos` mode, which the decode kernel
            // replicates and tools/check_kernels.py uses as its reference, takes a null pointer).
            static NO_POS: u64 = 0;
            let (s_i, h_i, d_i) = (s as i32, h as i32, d as i32);
            let mut lb = func.builder();
            lb.arg(&x).arg(&w).arg(&self.split).arg(&c).arg(&out).arg(&s_i).arg(&h_i).arg(&d_i).arg(&self.eps);
            lb.arg(&x_bs).arg(&x_rs).arg(&x_hs).arg(&cs_bs).arg(&NO_POS);
            let (kdst, vdst, cap, offset) = match &self.target {
                Some(t) => (t.k, t.v, t.cap, t.offset),
                None => (0, 0, 0, 0),
            };
            lb.arg(&kdst).arg(&vdst).arg(&cap).arg(&offset);
            // A block per token, its 8 warps sharing the heads.
            let cfg = LaunchConfig { grid_dim: (s as u32, 1, b as u32), block_dim: (32, 8, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature; shapes were checked. With a
            // target, the kernel also writes rows [offset, offset + s) of the cache's own key and
            // value buffers (norm_rope checked their shapes and the room), which nothing else
            // reads or writes until this launch is done (one stream).
            unsafe { lb.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((b, out_h, s, d))))
        }
    }

    // ---- prefill KV writes, DeepStack injection ----

    pub(super) fn kv_write(dst: &Tensor, src: &Tensor, offset: usize) -> Result<bool> {
        let (Ok((1, heads, cap, d)), Ok((1, sh, s, sd))) = (dst.dims4(), src.dims4()) else { return Ok(false) };
        let st = src.stride();
        let ok = device_for(dst, false).is_some()
            && src.dtype() == DType::BF16
            && dst.is_contiguous()
            && dst.layout().start_offset() % 8 == 0
            && (sh, sd) == (heads, d)
            && d % 8 == 0
            && offset + s <= cap
            && st[3] == 1
            && st[1] % 8 == 0
            && st[2] % 8 == 0
            && src.layout().start_offset() % 8 == 0;
        if !ok {
            return Ok(false);
        }
        dst.inplace_op2(src, &KvWrite { offset })?;
        Ok(true)
    }

    struct KvWrite {
        offset: usize,
    }

    impl candle_core::InplaceOp2 for KvWrite {
        fn name(&self) -> &'static str {
            "screenpilot-kv-write"
        }

        fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<()> {
            candle_core::bail!("screenpilot-kv-write is CUDA-only")
        }

        fn cuda_fwd(&self, ds: &mut CudaStorage, dl: &Layout, ss: &CudaStorage, sl: &Layout) -> candle_core::Result<()> {
            let dev = ds.device().clone();
            let (_, heads, cap, d) = dl.shape().dims4()?;
            let s = sl.shape().dims()[2];
            let st = sl.stride();
            let src = view(ss, sl)?;
            let mut dst = ds.as_cuda_slice_mut::<bf16>()?.slice_mut(dl.start_offset()..);
            let func = fused!(&dev, "sp_kv_write_bf16")?;
            let (s_hs, s_rs) = (st[1] as i64, st[2] as i64);
            let (h_i, s_i, d_i, cap_i, off_i) = (heads as i32, s as i32, d as i32, cap as i32, self.offset as i32);
            let mut lb = func.builder();
            lb.arg(&src).arg(&s_hs).arg(&s_rs).arg(&mut dst).arg(&h_i).arg(&s_i).arg(&d_i).arg(&cap_i).arg(&off_i);
            let blocks = (s * d / 8).div_ceil(256).max(1) as u32;
            let cfg = LaunchConfig { grid_dim: (blocks, heads as u32, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature; sizes and alignment were checked.
            unsafe { lb.launch(cfg) }.w()?;
            Ok(())
        }
    }

    pub(super) fn rows_add(x: &Tensor, rows: &Tensor, feat: &Tensor) -> Result<Option<Tensor>> {
        let Ok((_, n)) = x.dims2() else { return Ok(None) };
        if device_for(x, false).is_none() || n % 2 != 0 || rows.dtype() != DType::U32 || rows.rank() != 1 || feat.dtype() != DType::BF16 || feat.dims() != [rows.dim(0)?, n] {
            return Ok(None);
        }
        let (x, feat) = (x.contiguous()?, feat.contiguous()?);
        if x.layout().start_offset() % 2 != 0 || feat.layout().start_offset() % 2 != 0 {
            return Ok(None); // the kernel's 4-byte loads
        }
        Ok(Some(x.apply_op3_no_bwd(&rows.contiguous()?, &feat, &RowsAdd)?))
    }

    struct RowsAdd;

    impl CustomOp3 for RowsAdd {
        fn name(&self) -> &'static str {
            "screenpilot-rows-add"
        }

        cpu_unsupported!();

        fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, rs: &CudaStorage, rl: &Layout, fs: &CudaStorage, fl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = xs.device().clone();
            let (total, n) = xl.shape().dims2()?;
            let n_rows = rl.shape().elem_count();
            let x = xs.as_cuda_slice::<bf16>()?.slice(xl.start_offset()..xl.start_offset() + total * n);
            let rows = rs.as_cuda_slice::<u32>()?.slice(rl.start_offset()..);
            let feat = view(fs, fl)?;
            // SAFETY: filled by the copy below.
            let mut out = unsafe { dev.alloc::<bf16>(total * n)? };
            dev.memcpy_dtod(&x, &mut out)?;
            if n_rows > 0 {
                let func = fused!(&dev, "sp_rows_add_bf16")?;
                let (r_i, n_i, t_i) = (n_rows as i32, n as i32, total as i32);
                let mut lb = func.builder();
                lb.arg(&out).arg(&rows).arg(&feat).arg(&r_i).arg(&n_i).arg(&t_i);
                let blocks = (n_rows * n / 2).div_ceil(256).clamp(1, 8192) as u32;
                let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
                // SAFETY: the arguments match the kernel's signature; the kernel skips rows out of range.
                unsafe { lb.launch(cfg) }.w()?;
            }
            Ok((CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
        }
    }

    // ---- residual add + LayerNorm / RMSNorm ----

    pub(super) fn layer_norm(x: &Tensor, y: Option<&Tensor>, wb: &Tensor, eps: f32) -> Result<Option<Tensor>> {
        let n = x.dim(candle_core::D::Minus1)?;
        // Four 8-element chunks per thread of a 128-thread block.
        if device_for(x, false).is_none() || x.rank() != 2 || n % 8 != 0 || n > 8 * 4 * 128 || wb.dtype() != DType::BF16 || wb.dims() != [2, n] {
            return Ok(None);
        }
        if y.is_some_and(|y| y.dims() != x.dims() || y.dtype() != DType::BF16) {
            return Ok(None);
        }
        let (x, wb) = (x.contiguous()?, wb.contiguous()?);
        let y = y.map(Tensor::contiguous).transpose()?;
        // The kernel's 16-byte loads.
        if [Some(&x), y.as_ref(), Some(&wb)].into_iter().flatten().any(|t| t.layout().start_offset() % 8 != 0) {
            return Ok(None);
        }
        let op = LayerNormOp { eps };
        Ok(Some(match y {
            Some(y) => x.apply_op3_no_bwd(&wb, &y, &op)?,
            None => x.apply_op2_no_bwd(&wb, &op)?,
        }))
    }

    struct LayerNormOp {
        eps: f32,
    }

    impl LayerNormOp {
        /// `x` (or `x + y`) normed with `wb` = [weight; bias].
        fn run(&self, xs: &CudaStorage, xl: &Layout, ws: &CudaStorage, wl: &Layout, y: Option<(&CudaStorage, &Layout)>) -> candle_core::Result<(CudaStorage, Shape)> {
            static NULL: u64 = 0;
            let dev = xs.device().clone();
            let (rows, n) = xl.shape().dims2()?;
            let (x, wb) = (view(xs, xl)?, view(ws, wl)?);
            let y = y.map(|(s, l)| view(s, l)).transpose()?;
            let parts = if y.is_some() { 2 } else { 1 };
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(parts * rows * n)? };
            let func = fused!(&dev, "sp_add_layernorm_bf16")?;
            let (rows_i, n_i) = (rows as i32, n as i32);
            let mut lb = func.builder();
            lb.arg(&x);
            match &y {
                Some(y) => lb.arg(y),
                None => lb.arg(&NULL),
            };
            lb.arg(&wb).arg(&out).arg(&rows_i).arg(&n_i).arg(&self.eps);
            let cfg = LaunchConfig { grid_dim: (norm_blocks(rows, n, 128, 4), 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature; inputs are contiguous, n % 8 == 0.
            unsafe { lb.launch(cfg) }.w()?;
            let shape = if parts == 2 { Shape::from((2, rows, n)) } else { Shape::from((rows, n)) };
            Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
        }
    }

    optional_third_input!(LayerNormOp, "screenpilot-layer-norm", "screenpilot-add-layer-norm");

    /// Blocks of `threads` for the LayerNorm kernel over (rows, n): a block a row, or a warp a row
    /// where fused.cu's SP_NORM_WARP_ROWS(n, max_u) holds (n = 256 u, 1 <= u <= max_u).
    fn norm_blocks(rows: usize, n: usize, threads: usize, max_u: usize) -> u32 {
        let warp_rows = n % 256 == 0 && (1..=max_u).contains(&(n / 256));
        (if warp_rows { rows.div_ceil(threads / 32) } else { rows }).max(1) as u32
    }

    pub(super) fn add_rms_norm(x: &Tensor, y: &Tensor, weight: &Tensor, eps: f32) -> Result<Option<Tensor>> {
        let n = x.dim(candle_core::D::Minus1)?;
        if device_for(x, false).is_none() || y.dims() != x.dims() || y.dtype() != DType::BF16 || weight.dtype() != DType::BF16 || weight.dims() != [n] {
            return Ok(None);
        }
        let (x, y, w) = (x.contiguous()?, y.contiguous()?, weight.contiguous()?);
        if [&x, &y, &w].iter().any(|t| t.layout().start_offset() % 8 != 0) {
            return Ok(None); // the kernel's 16-byte loads
        }
        Ok(Some(x.apply_op3_no_bwd(&y, &w, &AddRmsNorm { eps })?))
    }

    struct AddRmsNorm {
        eps: f32,
    }

    impl CustomOp3 for AddRmsNorm {
        fn name(&self) -> &'static str {
            "screenpilot-add-rmsnorm"
        }

        cpu_unsupported!();

        fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, ys: &CudaStorage, yl: &Layout, ws: &CudaStorage, wl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = xs.device().clone();
            let n = xl.dims().last().copied().unwrap_or(1);
            let rows = xl.shape().elem_count() / n.max(1);
            let (x, y, w) = (view(xs, xl)?, view(ys, yl)?, view(ws, wl)?);
            let func = fused!(&dev, "sp_add_rmsnorm_bf16")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(2 * rows * n)? };
            let (rows_i, n_i) = (rows as i32, n as i32);
            let mut lb = func.builder();
            lb.arg(&x).arg(&y).arg(&w).arg(&out).arg(&rows_i).arg(&n_i).arg(&self.eps);
            let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature; x, y, w are contiguous.
            unsafe { lb.launch(cfg) }.w()?;
            let mut dims = vec![2];
            dims.extend_from_slice(xl.dims());
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(dims)))
        }
    }

    // ---- SwiGLU ----

    pub(super) fn patch_rows(rgb: &Tensor, lut: &Tensor, grid: (usize, usize), p: usize, m: usize, t: usize) -> Result<Option<Tensor>> {
        let (gh, gw) = grid;
        let fits = rgb.dtype() == DType::U8 && rgb.elem_count() == gh * p * gw * p * 3 && lut.dtype() == DType::F32 && lut.elem_count() == 3 * 256;
        if usable(rgb.device(), DType::BF16, false).is_none() || !fits || m == 0 || gh % m != 0 || gw % m != 0 || t == 0 {
            return Ok(None);
        }
        let op = PatchRows { gh, gw, p, m, t };
        Ok(Some(rgb.contiguous()?.apply_op2_no_bwd(&lut.contiguous()?, &op)?))
    }

    struct PatchRows {
        gh: usize,
        gw: usize,
        p: usize,
        m: usize,
        t: usize,
    }

    impl CustomOp2 for PatchRows {
        fn name(&self) -> &'static str {
            "screenpilot-patch-rows"
        }

        cpu_unsupported!(two inputs);

        fn cuda_fwd(&self, rs: &CudaStorage, rl: &Layout, ls: &CudaStorage, ll: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = rs.device().clone();
            let rgb = rs.as_cuda_slice::<u8>()?.slice(rl.start_offset()..);
            let lut = ls.as_cuda_slice::<f32>()?.slice(ll.start_offset()..);
            let (n, row) = (self.gh * self.gw, 3 * self.t * self.p * self.p);
            let func = fused!(&dev, "sp_patch_rows_bf16")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(n * row)? };
            let [gh, gw, p, m, t] = [self.gh, self.gw, self.p, self.m, self.t].map(|v| v as i32);
            let mut lb = func.builder();
            lb.arg(&rgb).arg(&lut).arg(&out).arg(&gh).arg(&gw).arg(&p).arg(&m).arg(&t);
            let cfg = LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature; sizes were checked.
            unsafe { lb.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((n, row))))
        }
    }

    pub(super) fn swiglu(gate_up: &Tensor) -> Result<Option<Tensor>> {
        if device_for(gate_up, false).is_none() || gate_up.rank() == 0 || gate_up.dim(candle_core::D::Minus1)? % 2 != 0 {
            return Ok(None);
        }
        let gate_up = gate_up.contiguous()?;
        if gate_up.layout().start_offset() % 8 != 0 {
            return Ok(None); // the kernel's 16-byte loads
        }
        Ok(Some(gate_up.apply_op1_no_bwd(&SwiGlu)?))
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
            let per_row = if n % 8 == 0 { n / 8 } else { n };
            let cfg = LaunchConfig { grid_dim: (per_row.div_ceil(256) as u32, rows.clamp(1, 65535) as u32, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature; the input starts 16-byte aligned.
            unsafe { lb.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(dims)))
        }
    }

    // ---- vision: bias + activation, rope ----

    pub(super) fn bias_act(x: &Tensor, bias: &Tensor, act: Act) -> Result<Option<Tensor>> {
        let n = x.dim(candle_core::D::Minus1)?;
        if device_for(x, false).is_none() || bias.dtype() != DType::BF16 || bias.dims() != [n] {
            return Ok(None);
        }
        Ok(Some(x.contiguous()?.apply_op2_no_bwd(&bias.contiguous()?, &BiasAct { act })?))
    }

    struct BiasAct {
        act: Act,
    }

    impl CustomOp2 for BiasAct {
        fn name(&self) -> &'static str {
            "screenpilot-bias-act"
        }

        cpu_unsupported!(two inputs);

        fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, bs: &CudaStorage, bl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = xs.device().clone();
            let n = xl.dims().last().copied().unwrap_or(1);
            let total = xl.shape().elem_count();
            let (x, b) = (view(xs, xl)?, view(bs, bl)?);
            let func = fused!(&dev, "sp_bias_act_bf16")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(total)? };
            let (rows_i, n_i, act) = ((total / n.max(1)) as i32, n as i32, self.act as i32);
            let mut lb = func.builder();
            lb.arg(&x).arg(&b).arg(&out).arg(&rows_i).arg(&n_i).arg(&act);
            let blocks = total.div_ceil(256).clamp(1, 8192) as u32;
            let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature; inputs are contiguous.
            unsafe { lb.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
        }
    }

    // ---- cuBLASLt matmul with a bias (+ GELU) epilogue ----

    use candle_core::cuda_backend::cudarc::cublaslt::{Activation, CudaBlasLT, Matmul, MatmulConfig};

    /// One cuBLASLt handle (and its 32 MiB workspace) per stream, made on first use and dropped
    /// once nothing but the handle holds its stream (the device it served is gone: a model
    /// reloaded in the app gets a new device and stream).
    fn blas_lt(dev: &CudaDevice) -> candle_core::Result<std::sync::Arc<CudaBlasLT>> {
        use candle_core::cuda_backend::cudarc::cublaslt::MatmulShared;
        static HANDLES: std::sync::Mutex<Vec<(usize, std::sync::Arc<CudaBlasLT>)>> = std::sync::Mutex::new(Vec::new());
        let stream = dev.cuda_stream();
        let key = stream.cu_stream() as usize;
        let mut handles = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
        handles.retain(|(k, h)| *k == key || std::sync::Arc::strong_count(h.stream()) > 1);
        if let Some((_, h)) = handles.iter().find(|(k, _)| *k == key) {
            return Ok(h.clone());
        }
        let h = std::sync::Arc::new(CudaBlasLT::new(stream).map_err(candle_core::Error::wrap)?);
        handles.push((key, h.clone()));
        Ok(h)
    }

    fn lt_mode() -> &'static str {
        static MODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        MODE.get_or_init(|| std::env::var("SCREENPILOT_LT").unwrap_or_default())
    }

    pub(super) fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Act) -> Result<Option<Tensor>> {
        let gelu = match act {
            Act::None => false,
            Act::GeluTanh if lt_mode() != "bias" => true,
            _ => return Ok(None),
        };
        if device_for(x, false).is_none() || lt_mode() == "0" || x.rank() == 0 || w.dtype() != DType::BF16 || !w.is_contiguous() {
            return Ok(None);
        }
        let k = x.dim(candle_core::D::Minus1)?;
        let (n, wk) = w.dims2()?;
        if wk != k || k == 0 || n == 0 || bias.is_some_and(|b| b.dtype() != DType::BF16 || b.dims() != [n]) {
            return Ok(None);
        }
        let mut dims = x.dims().to_vec();
        let x = x.contiguous()?;
        let op = LtLinear { gelu };
        let out = match bias {
            Some(b) => x.apply_op3_no_bwd(w, &b.contiguous()?, &op)?,
            None => x.apply_op2_no_bwd(w, &op)?,
        };
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        Ok(Some(out.reshape(dims)?))
    }

    struct LtLinear {
        gelu: bool,
    }

    impl LtLinear {
        /// (m, n) = x (m, k) w^T (w: (n, k)), + bias (n) and GELU in the epilogue.
        fn run(&self, xs: &CudaStorage, xl: &Layout, ws: &CudaStorage, wl: &Layout, bias: Option<(&CudaStorage, &Layout)>) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = xs.device().clone();
            let (n, k) = wl.shape().dims2()?;
            let m = xl.shape().elem_count() / k;
            let (x, w) = (view(xs, xl)?, view(ws, wl)?);
            let b = bias.map(|(s, l)| view(s, l)).transpose()?;
            // SAFETY: every element is written by the matmul.
            let mut out = unsafe { dev.alloc::<bf16>(m * n)? };
            // Column-major view: out^T (n, m) = w (k, n)^T x^T (k, m).
            let cfg = MatmulConfig {
                transa: true,
                transb: false,
                transc: false,
                m: n as u64,
                n: m as u64,
                k: k as u64,
                alpha: 1.0,
                lda: k as i64,
                ldb: k as i64,
                beta: 0.0,
                ldc: n as i64,
                stride_a: None,
                stride_b: None,
                stride_c: None,
                stride_bias: None,
                batch_size: None,
            };
            let act = self.gelu.then_some(Activation::Gelu);
            let lt = blas_lt(&dev)?;
            // SAFETY: the sizes above match the buffers (x, w contiguous; checked by `linear`).
            unsafe { lt.matmul(cfg, &w, &x, &mut out, b.as_ref(), act.as_ref()) }.map_err(candle_core::Error::wrap)?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((m, n))))
        }
    }

    optional_third_input!(LtLinear, "screenpilot-lt-linear", "screenpilot-lt-linear-bias");

    pub(super) fn vision_rope(qkv: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize, q_scale: f32) -> Result<Option<Tensor>> {
        if device_for(qkv, false).is_none() || cos.dtype() != DType::F32 || sin.dtype() != DType::F32 || qkv.rank() != 2 {
            return Ok(None);
        }
        let (seq, width) = qkv.dims2()?;
        let d = width / (3 * heads.max(1));
        if heads == 0 || width != 3 * heads * d || d % 4 != 0 || cos.dims() != [seq, d / 2] || sin.dims() != cos.dims() {
            return Ok(None);
        }
        let op = VisionRope { heads, q_scale };
        let (qkv, cos, sin) = (qkv.contiguous()?, cos.contiguous()?, sin.contiguous()?);
        if [&qkv, &cos, &sin].iter().any(|t| t.layout().start_offset() % 2 != 0) {
            return Ok(None); // the kernel's 4- and 8-byte loads
        }
        Ok(Some(qkv.apply_op3_no_bwd(&cos, &sin, &op)?))
    }

    struct VisionRope {
        heads: usize,
        q_scale: f32,
    }

    impl CustomOp3 for VisionRope {
        fn name(&self) -> &'static str {
            "screenpilot-vision-rope"
        }

        cpu_unsupported!();

        fn cuda_fwd(&self, qs: &CudaStorage, ql: &Layout, cs: &CudaStorage, cl: &Layout, ss: &CudaStorage, sl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = qs.device().clone();
            let (seq, width) = ql.shape().dims2()?;
            let d = width / (3 * self.heads);
            let qkv = view(qs, ql)?;
            let cos = cs.as_cuda_slice::<f32>()?.slice(cl.start_offset()..);
            let sin = ss.as_cuda_slice::<f32>()?.slice(sl.start_offset()..);
            let func = fused!(&dev, "sp_vision_rope_bf16")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(2 * seq * width / 3)? };
            let (seq_i, h_i, d_i) = (seq as i32, self.heads as i32, d as i32);
            let mut lb = func.builder();
            lb.arg(&qkv).arg(&cos).arg(&sin).arg(&out).arg(&seq_i).arg(&h_i).arg(&d_i).arg(&self.q_scale);
            // A thread per 8 pairs when d % 16 == 0 (and aligned: the kernel checks), else per 2.
            let threads = seq * 2 * self.heads * d / if d % 16 == 0 { 16 } else { 4 };
            let cfg = LaunchConfig { grid_dim: (threads.div_ceil(256).clamp(1, 65535) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature; inputs are contiguous.
            unsafe { lb.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((2, self.heads, seq, d))))
        }
    }

    // ---- batched decode attention ----

    /// The KV table of one layer for [`decode_attention_norm`]: `buffers[i]` = sequence i's
    /// (keys, values), (1, kv_heads, capacity, d) bf16 contiguous each, as KV_TABLE_WORDS u32
    /// (SpKvTable's layout). Checks what the kernel relies on, except the room for one more token
    /// (the caller's: see KvCache::fits_one_in_place).
    pub(crate) fn kv_table(buffers: &[(&Tensor, &Tensor)], kv_heads: usize, d: usize) -> Result<Vec<u32>> {
        if buffers.is_empty() || buffers.len() > MAX_BATCH {
            return Err(crate::error::ModelError::Input(format!("{} sequences for the batched decode kernel (1..={MAX_BATCH})", buffers.len())));
        }
        let mut k = [0u64; MAX_BATCH];
        let mut v = [0u64; MAX_BATCH];
        let mut stride = [0u64; MAX_BATCH];
        for (i, (kt, vt)) in buffers.iter().enumerate() {
            let ok = |t: &Tensor| t.dtype() == DType::BF16 && t.is_contiguous() && t.rank() == 4 && t.dims()[..2] == [1, kv_heads] && t.dims()[3] == d;
            if !ok(kt) || !ok(vt) || kt.dims() != vt.dims() {
                return Err(crate::error::ModelError::Input(format!("KV buffers {:?} / {:?} do not fit the decode kernel", kt.dims(), vt.dims())));
            }
            k[i] = address(kt)?;
            v[i] = address(vt)?;
            stride[i] = (kt.dims()[2] * d) as u64;
        }
        Ok(k.iter().chain(&v).chain(&stride).flat_map(|x| [*x as u32, (*x >> 32) as u32]).collect())
    }

    // ---- decode attention with QK-norm + rope ----

    pub(super) fn decode_attention_norm(qkv: &Tensor, heads: usize, weights: &Tensor, cos_sin: &Tensor, eps: f32, step: &DecodeStep) -> Result<Option<Tensor>> {
        let DecodeStep { pos, lens, kv_table: table, splits, scale } = *step;
        if device_for(qkv, false).is_none() || qkv.rank() != 3 || !qkv.is_contiguous() || qkv.dim(1)? != 1 {
            return Ok(None);
        }
        let (b, _, width) = qkv.dims3()?;
        let d = 128;
        let hkv = (width / d).saturating_sub(heads) / 2;
        let rep = if hkv == 0 { 0 } else { heads / hkv };
        if width != (heads + 2 * hkv) * d || hkv * rep != heads || !matches!(rep, 1 | 2 | 4) || b == 0 || b > MAX_BATCH || splits == 0 {
            return Ok(None);
        }
        let words = |t: &Tensor, n: usize| t.dims() == [n] && t.dtype() == DType::U32 && t.is_contiguous();
        let bf = |t: &Tensor| t.dtype() == DType::BF16 && t.is_contiguous();
        if !words(lens, b) || !words(pos, b) || !words(table, KV_TABLE_WORDS) || !bf(weights) || weights.dims() != [2, d] || !bf(cos_sin) || cos_sin.dim(1)? != d {
            return Ok(None);
        }
        let op = DecodeNorm {
            heads,
            hkv,
            scale,
            eps,
            splits,
            weights: address(weights)?,
            cos_sin: address(cos_sin)?,
            pos: address(pos)?,
            table: address(table)?,
            lens: address(lens)?,
        };
        Ok(Some(qkv.apply_op1_no_bwd(&op)?))
    }

    struct DecodeNorm {
        heads: usize,
        hkv: usize,
        scale: f32,
        eps: f32,
        splits: usize,
        /// Device addresses: norm weights, the positions' cos/sin table, each sequence's
        /// position, the KV table, the tokens each sequence holds.
        weights: u64,
        cos_sin: u64,
        pos: u64,
        table: u64,
        lens: u64,
    }

    impl CustomOp1 for DecodeNorm {
        fn name(&self) -> &'static str {
            "screenpilot-decode-attn-norm"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("{} is CUDA-only", self.name())
        }

        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = s.device().clone();
            let (b, _, width) = l.shape().dims3()?;
            let d = 128;
            let qkv = view(s, l)?;
            let func = fused!(&dev, &format!("sp_decode_attn_norm_bf16_d{d}_r{}", self.heads / self.hkv))?;
            let partials = Partials::new(&dev, b * self.heads, self.splits, d)?;
            // SAFETY: every element is written by the kernel (or the merge).
            let out = unsafe { dev.alloc::<bf16>(b * self.heads * d)? };
            let qkv_bs = width as i64;
            let mut lb = func.builder();
            lb.arg(&qkv).arg(&qkv_bs).arg(&self.weights).arg(&self.cos_sin).arg(&self.pos).arg(&self.eps);
            lb.arg(&out).arg(&self.scale).arg(&self.lens);
            push_partials(&mut lb, &partials);
            lb.arg(&self.table);
            let cfg = LaunchConfig { grid_dim: (self.hkv as u32, self.splits as u32, b as u32), block_dim: (32 * DECODE_WARPS, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match the kernel's signature; every address is of a live tensor
            // checked for dtype and length (the positions lie in the table: the caller sized it);
            // the KV buffers were checked by kv_table and have room for row lens[i].
            unsafe { lb.launch(cfg) }.w()?;
            if let Some(p) = &partials {
                p.combine(&dev, &out, b * self.heads, self.splits, d)?;
            }
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((b, 1, self.heads * d))))
        }
    }

    // ---- device addresses and uploads (decode inputs read by kernels and captured graphs) ----

    /// Device address of the first element of a CUDA tensor (bf16 or u32).
    pub(crate) fn address(t: &Tensor) -> Result<u64> {
        use candle_core::cuda_backend::cudarc::driver::DevicePtr;
        let (storage, layout) = t.storage_and_layout();
        let candle_core::Storage::Cuda(cs) = &*storage else {
            return Err(crate::error::ModelError::Input("tensor is not on the GPU".into()));
        };
        let base = match t.dtype() {
            DType::BF16 => {
                let s = cs.as_cuda_slice::<bf16>()?;
                s.device_ptr(s.stream()).0
            }
            DType::U32 => {
                let s = cs.as_cuda_slice::<u32>()?;
                s.device_ptr(s.stream()).0
            }
            other => return Err(crate::error::ModelError::Input(format!("no device address for {other:?}"))),
        };
        Ok(base + (layout.start_offset() * t.dtype().size_in_bytes()) as u64)
    }

    /// Copies `data` into the contiguous u32 CUDA tensor `t` in place (same length), in stream
    /// order: kernels launched before still see the old values, later ones the new.
    pub(crate) fn upload_u32(t: &Tensor, data: &[u32]) -> Result<()> {
        if t.dtype() != DType::U32 || !t.is_contiguous() || t.elem_count() != data.len() {
            return Err(crate::error::ModelError::Input("upload_u32 needs a contiguous u32 tensor of the same length".into()));
        }
        let candle_core::Device::Cuda(dev) = t.device() else {
            return Err(crate::error::ModelError::Input("tensor is not on the GPU".into()));
        };
        let dst = address(t)?;
        let stream = dev.cuda_stream();
        // SAFETY: `dst` addresses data.len() u32 of a live tensor; the driver stages the pageable
        // source before returning, so `data` may go away after the call.
        unsafe { candle_core::cuda_backend::cudarc::driver::result::memcpy_htod_async(dst, data, stream.cu_stream()) }.w()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::decode_splits;

    #[test]
    fn decode_splits_are_powers_of_two_sized_by_batch_and_length() {
        // The measured best cases (8 key heads): one sequence of 1547 tokens, eight of ~1600.
        assert_eq!(decode_splits(8, 1, 1547), 16);
        assert_eq!(decode_splits(8, 8, 1600), 8);
        // Short caches: a split for every ~64 keys.
        assert_eq!(decode_splits(8, 1, 1), 1);
        assert_eq!(decode_splits(8, 1, 200), 4);
        assert_eq!(decode_splits(8, 1, 120), 2);
        // Many sequences: fewer splits each, never zero.
        assert_eq!(decode_splits(8, 16, 100_000), 4);
        assert_eq!(decode_splits(64, 16, 100_000), 1);
        for b in 1..=16 {
            for len in [1, 63, 64, 65, 1000, 5000, 300_000] {
                let s = decode_splits(8, b, len);
                assert!(s.is_power_of_two() && s <= 64, "b {b} len {len}: {s}");
            }
        }
    }
}
