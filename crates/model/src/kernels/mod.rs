//! Our CUDA kernels (crates/model/kernels/*.cu, compiled to PTX by build.rs under the `cuda`
//! feature), for bf16 on GPUs of compute capability 8.0 or newer. Each is a method of
//! [`DeviceKernels`], the state of the device one model runs on (what loaded on it, its cuBLASLt
//! handles), which that model owns through [`crate::ops::Ops`]: nothing here is process-wide.
//! - [`attention`](DeviceKernels::attention): fused FlashAttention-2 style attention (head dim
//!   64, 72 or 128) for the vision tower and causal prefill; scores stay in registers (f32).
//! - [`decode_attention_norm`](DeviceKernels::decode_attention_norm): one decode step of a
//!   batch: QK-norm + rope of the new token, its KV row written into each sequence's cache,
//!   attention with keys split over blocks; lengths, positions and KV buffer addresses are read
//!   from device memory, so a CUDA graph replays it ([`crate::graph`]).
//! - [`decode_attention`](DeviceKernels::decode_attention): one new token per sequence over
//!   given cached keys (the fallback).
//! - [`norm_rope`](DeviceKernels::norm_rope): QK-norm + rotary embedding + head transpose in one
//!   pass.
//! - [`add_rms_norm`](DeviceKernels::add_rms_norm), [`layer_norm`](DeviceKernels::layer_norm):
//!   residual add + the norm after it.
//! - [`swiglu`](DeviceKernels::swiglu): silu(gate) * up.
//! - [`linear`](DeviceKernels::linear): a cuBLASLt matmul with the bias (and tanh GELU) in its
//!   epilogue.
//! - [`bias_act`](DeviceKernels::bias_act), [`vision_rope`](DeviceKernels::vision_rope): a
//!   linear layer's bias + activation; the vision tower's rope.
//! - [`rows_add`](DeviceKernels::rows_add), [`kv_write`](DeviceKernels::kv_write): DeepStack's
//!   injection; a prefill's keys and values into the cache.
//! - [`patch_rows`](DeviceKernels::patch_rows): the vision tower's input rows from the uploaded
//!   8-bit image.
//!
//! The memory helpers `address`, `kv_table` and `upload_u32` (CUDA only; they launch no kernel
//! and need no device state) are free functions.
//!
//! Each returns `None` where it does not apply (CPU, Metal, f32/f16, other shapes, older GPUs);
//! the caller then runs the plain candle ops, which are what the exactness tests run on the CPU.
//! Whether a kernel may run at all is not asked here: the model's [`crate::ops::KernelConfig`]
//! decides, in [`crate::ops::Ops`], before any entry point is called.
//!
//! This module is the interface the layers call; `cuda` implements it, one module per kernel
//! family (without the feature every entry point is a stub returning `None`). What the kernels and
//! this crate must agree on (constants, the KV table's layout) is written once, in kernels/abi.h;
//! `abi` mirrors it, and its test checks the two against each other.

use candle_core::{Device, Tensor};

use crate::error::Result;

// Read only by the CUDA implementation (and abi.rs's test of kernels/abi.h).
#[cfg(any(feature = "cuda", test))]
pub(crate) mod abi;
#[cfg(feature = "cuda")]
mod cuda;

#[cfg(feature = "cuda")]
pub(crate) use cuda::{address, kv_table, upload_u32};

/// What the kernels know of the device one model runs on, made once when the model is loaded
/// ([`crate::ops::Ops::new`]) and dropped with it; a model on another device, or another model on
/// the same one, has its own. For a CUDA device: the device, whether our PTX modules load on it,
/// whether it runs the Hopper (wgmma) attention, and the cuBLASLt handles with their workspaces.
/// Elsewhere (CPU, Metal, a build without the `cuda` feature, or no kernel wanted) it holds
/// nothing and every entry point answers "does not apply".
pub(crate) struct DeviceKernels {
    #[cfg(feature = "cuda")]
    cuda: Option<cuda::CudaKernels>,
}

impl DeviceKernels {
    /// The kernels' state on `device`: with `wanted` (the model's config allows some kernel) and
    /// a CUDA device, our PTX modules are loaded on it now and what loaded is recorded.
    pub(crate) fn new(device: &Device, wanted: bool) -> Self {
        #[cfg(feature = "cuda")]
        {
            let cuda = match device {
                Device::Cuda(dev) if wanted => Some(cuda::CudaKernels::new(dev)),
                _ => None,
            };
            Self { cuda }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (device, wanted);
            Self {}
        }
    }

    /// The CUDA device when the kernels serve it in `dtype` (bf16, the PTX loaded).
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_device(&self, dtype: candle_core::DType) -> Option<&candle_core::CudaDevice> {
        self.cuda.as_ref()?.device(dtype)
    }
}

impl std::fmt::Debug for DeviceKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("DeviceKernels");
        #[cfg(feature = "cuda")]
        d.field("cuda", &self.cuda);
        d.finish()
    }
}

/// Declares the kernels' entry points, methods of [`DeviceKernels`], from their signatures: under
/// the `cuda` feature each calls the function of the same name in `cuda` with the device's state
/// first (`Ok` of its output's default where there is none); without it, each is a stub returning
/// `Ok` of its output's default, `None` (or `false`): "does not apply", so the caller runs
/// candle's ops.
macro_rules! entry_points {
    ($($(#[$attr:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $out:ty;)*) => {
        impl DeviceKernels {
            $(
                $(#[$attr])*
                #[cfg(feature = "cuda")]
                pub(crate) fn $name(&self, $($arg: $ty),*) -> Result<$out> {
                    match &self.cuda {
                        Some(k) => cuda::$name(k, $($arg),*),
                        None => Ok(<$out>::default()),
                    }
                }

                $(#[$attr])*
                #[cfg(not(feature = "cuda"))]
                pub(crate) fn $name(&self, $($arg: $ty),*) -> Result<$out> {
                    let _ = ($($arg,)*);
                    Ok(<$out>::default())
                }
            )*
        }
    };
}

entry_points! {
    /// Attention of `q` (b, heads, sq, d) over `k`, `v` (b, kv_heads, skv, d) (d = 64, 72 or 128),
    /// scaled by `scale`; causal means query i sees keys 0..=i + (skv - sq). Returns (b, sq, heads, d).
    fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32, causal: bool) -> Option<Tensor>;

    /// Attention of one query per sequence: `q` (b, heads, 1, d) over `k`, `v` (b, kv_heads, len, d)
    /// (views into a larger cache are fine). Returns (b, 1, heads * d).
    fn decode_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Option<Tensor>;

    /// RMSNorm over the last axis of `x` (b, s, heads, d) with `weights` (2, d) (row 0 for heads
    /// below `split`, row 1 for the rest: q and k heads at once), then rotary embedding with
    /// `cos_sin` ((s, d) or (b, s, d): cos then sin of the d/2 frequencies), returned as
    /// (b, heads, s, d). Rounds like RmsNorm + rope do.
    ///
    /// With `cache`, `x` is the whole projection (b, s, split + 2 kv_heads, d): the query heads are
    /// returned (b, split, s, d), the key heads written normed and rotated, and the value heads
    /// copied, into rows [offset, offset + s) of the cache's buffers (the layer's KV append, in the
    /// same pass).
    fn norm_rope(x: &Tensor, weights: &Tensor, split: usize, cos_sin: &Tensor, eps: f32, cache: Option<KvTarget<'_>>) -> Option<Tensor>;

    /// One decode step of a batch in one launch (plus a merge of the key splits): `qkv` (b, 1,
    /// (heads + 2 kv_heads) * d) is the raw projection of the new tokens; the kernel norms and rotates the q
    /// and k heads (`weights` (2, d), `cos_sin` a table of positions 0.., `step.pos` (b,) u32 on the
    /// device) exactly as [`norm_rope`](DeviceKernels::norm_rope) does, writes each sequence's new key and value at row
    /// `step.lens[i]` of the buffers in `step.kv_table` ([`kv_table`]; they must have room for one
    /// more) and returns the attention output (b, 1, heads * d), keys spread over `step.splits`
    /// blocks per sequence and key head. The caller then counts the token as held.
    fn decode_attention_norm(qkv: &Tensor, heads: usize, weights: &Tensor, cos_sin: &Tensor, eps: f32, step: &DecodeStep<'_>) -> Option<Tensor>;

    /// `x + y` and the RMSNorm of it with `weight`, as (2, ..) = [sum, normed]; `x`, `y` (.., n).
    fn add_rms_norm(x: &Tensor, y: &Tensor, weight: &Tensor, eps: f32) -> Option<Tensor>;

    /// LayerNorm of `x` (rows, n) (or of `x + y`, rounded like a bf16 add) with `wb` (2, n) =
    /// [weight; bias]: the norm, or (2, rows, n) = [sum, norm] when `y` is given. f32 statistics,
    /// one rounding, as the reference's bf16 LayerNorm.
    fn layer_norm(x: &Tensor, y: Option<&Tensor>, wb: &Tensor, eps: f32) -> Option<Tensor>;

    /// `x` (rows, n) with `feat[k]` added to row `rows[k]` (`rows` (r,) u32, `feat` (r, n)), each sum
    /// rounded like a bf16 add: DeepStack's injection of visual features. Row indices past the end
    /// are skipped.
    fn rows_add(x: &Tensor, rows: &Tensor, feat: &Tensor) -> Option<Tensor>;

    /// Writes `src` (1, heads, s, d) (any strides, last dim contiguous) into rows `offset..offset + s`
    /// of the KV buffer `dst` (1, heads, cap, d) contiguous, in place: a prefill's keys or values
    /// into the cache in one pass. `false` where it does not apply (the caller copies with candle).
    fn kv_write(dst: &Tensor, src: &Tensor, offset: usize) -> bool;

    /// The vision tower's bf16 input rows (gh gw, 3 t p p) from `rgb`, an image of (gh p, gw p) pixels
    /// uploaded as bytes (rgb order), and `lut` (3, 256) f32: what
    /// [`crate::vision::input::pixel_rows`] builds, rounded to bf16, in one launch.
    fn patch_rows(rgb: &Tensor, lut: &Tensor, grid: (usize, usize), p: usize, m: usize, t: usize) -> Option<Tensor>;

    /// `silu(gate) * up` for `gate_up` (.., 2n) = [gate | up]: (.., n).
    fn swiglu(gate_up: &Tensor) -> Option<Tensor>;

    /// `act(x + bias)` for `x` (.., n) and `bias` (n): a linear layer's bias and activation in one
    /// pass after its matmul.
    fn bias_act(x: &Tensor, bias: &Tensor, act: Act) -> Option<Tensor>;

    /// `act(x w^T + bias)` for `x` (.., k) and `w` (n, k) by cuBLASLt, the bias (and the tanh GELU)
    /// applied to the f32 accumulator in the matmul's epilogue and rounded once, as transformers'
    /// `F.linear` does on CUDA. `act` may be [`Act::None`] or [`Act::GeluTanh`] (`None` for
    /// [`Act::GeluErf`]); `None` where it does not apply. Whether the GELU goes into the epilogue
    /// is the caller's choice ([`crate::ops::CublasLt`]): with `BiasOnly` it asks for `Act::None`
    /// and applies the activation after, rounding twice like the reference's separate GELU.
    fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Act) -> Option<Tensor>;

    /// Rotary embedding of the vision tower's q and k read from its qkv output (seq, 3 * heads * d),
    /// in f32 with tables `cos`, `sin` (seq, d / 2) (f32), q multiplied by `q_scale`: (2, heads, seq,
    /// d) = [q, k].
    fn vision_rope(qkv: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize, q_scale: f32) -> Option<Tensor>;
}

/// The activation [`bias_act`](DeviceKernels::bias_act) applies after the bias; the values are the kernel's (abi.h's
/// SP_ACT_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    None = 0,
    GeluTanh = 1,
    GeluErf = 2,
}

/// Where [`norm_rope`](DeviceKernels::norm_rope) writes a prefill's keys and values: rows from `offset` of a layer's
/// buffers `k`, `v` (b, kv_heads, capacity, d), contiguous and the cache's own.
#[derive(Clone, Copy)]
// Without CUDA nothing reads the fields (the stubs ignore it), but text.rs builds it either way.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct KvTarget<'a> {
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub offset: usize,
}

/// What a decode kernel reads per step from device memory: each sequence's rope position and
/// length ((b,) u32 each), this layer's KV table ([`kv_table`]), and the key splits.
// Without CUDA nothing reads the fields (the stubs ignore it), but text/batch.rs builds it either
// way.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct DecodeStep<'a> {
    pub pos: &'a Tensor,
    pub lens: &'a Tensor,
    pub kv_table: &'a Tensor,
    pub splits: usize,
    pub scale: f32,
}

/// How many blocks share the keys of one sequence and key head in a batched decode of `b`
/// sequences of at most `max_len` tokens: about four waves of an H100's SMs, one block per ~64
/// keys at most, rounded down to a power of two (few distinct values: each is a recorded graph).
/// Measured on an H100 (tools/check_kernels.py, 1546 keys): one sequence 12.9 us a layer at 16
/// splits against 14.4 us at 32 and 19.2 us at 4; eight sequences 30.8 us at 8, 34.5 us at 4.
// graph.rs's device decoder, CUDA only, is its caller.
#[cfg(any(feature = "cuda", test))]
pub(crate) fn decode_splits(kv_heads: usize, b: usize, max_len: usize) -> usize {
    let want = 528usize.div_ceil((kv_heads * b).max(1)).min(max_len.div_ceil(64)).clamp(1, 64);
    1 << want.ilog2()
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
