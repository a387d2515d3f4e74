//! Attention kernels: flash attention for the vision tower and causal prefill (flash_attn.cu, and
//! flash_attn_sm90.cu on Hopper), decode attention over given cached keys and the batched decode
//! step with QK-norm + rope (decode_attn.cu); keys split over blocks, their partial results
//! merged by flash_attn.cu's sp_attn_combine.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor};
use half::bf16;

use super::memory::address;
use super::{aligned, strides3, view, CudaKernels, FLASH90_PTX};
use crate::error::Result;
use crate::kernels::abi::{DECODE_UNROLL, DECODE_WARPS, KV_TABLE_WORDS, MAX_BATCH};
use crate::kernels::DecodeStep;

/// A flash-attention kernel: entry point, query rows a block, threads a block, whether it is
/// in the Hopper module, dynamic shared memory (bytes).
pub(super) struct FlashVariant {
    pub(super) name: &'static str,
    rows: usize,
    threads: u32,
    sm90: bool,
    smem: u32,
}

/// The flash-attention variant for each head dim (measured by tools/check_kernels.py on an
/// H100: vision layer 0.18 ms with wgmma against 0.29, prefill layer 0.050 against 0.084).
pub(super) fn flash_variant(d: usize, hopper: bool) -> FlashVariant {
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

// ---- key splits ----

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
fn push_partials<'a>(lb: &mut LaunchArgs<'a>, p: &'a Option<Partials>) {
    const NULL: u64 = 0;
    match p {
        Some(p) => {
            lb.arg(&p.o).arg(&p.ml);
        }
        None => {
            lb.arg(&NULL).arg(&NULL);
        }
    }
}

// ---- fused attention (vision, prefill) ----

pub(crate) fn attention(kernels: &CudaKernels, q: &Tensor, k: &Tensor, v: &Tensor, scale: f32, causal: bool) -> Result<Option<Tensor>> {
    if !kernels.serves(q) || [q, k, v].iter().any(|t| t.dtype() != DType::BF16 || t.rank() != 4 || !aligned(t.layout())) {
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
    Ok(Some(q.apply_op3_no_bwd(k, v, &FlashAttn { scale, causal, hopper: kernels.hopper })?))
}

struct FlashAttn {
    scale: f32,
    causal: bool,
    /// The device runs the wgmma variant ([`CudaKernels`]'s `hopper`).
    hopper: bool,
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
        let FlashVariant { name, rows: block_m, threads, sm90, smem } = flash_variant(d, self.hopper);
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

pub(crate) fn decode_attention(kernels: &CudaKernels, q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Option<Tensor>> {
    if !kernels.serves(q) || [k, v].iter().any(|t| t.dtype() != DType::BF16 || t.rank() != 4 || !aligned(t.layout())) {
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
        // Keys per warp step: DECODE_WARPS warps x DECODE_UNROLL keys.
        let (splits, chunk) = key_splits(hkv * b, len, 64, DECODE_UNROLL * DECODE_WARPS as usize);
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

// ---- decode attention with QK-norm + rope ----

pub(crate) fn decode_attention_norm(kernels: &CudaKernels, qkv: &Tensor, heads: usize, weights: &Tensor, cos_sin: &Tensor, eps: f32, step: &DecodeStep) -> Result<Option<Tensor>> {
    let DecodeStep { pos, lens, kv_table: table, splits, scale } = *step;
    if !kernels.serves(qkv) || qkv.rank() != 3 || !qkv.is_contiguous() || qkv.dim(1)? != 1 {
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
