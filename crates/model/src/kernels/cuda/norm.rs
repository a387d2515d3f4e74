//! Norms and rotary embeddings (norm.cu, rope.cu): residual add + RMSNorm (text decoder), LayerNorm
//! and residual add + LayerNorm (vision tower), QK-norm + rope (text attention; with the prefill's
//! KV cache write), the vision tower's rope.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use half::bf16;

use super::memory::address;
use super::{strides3, view, CudaKernels};
use crate::error::Result;
use crate::kernels::abi::LN_CHUNKS;
use crate::kernels::KvTarget;

// ---- QK-norm + rope ----

pub(crate) fn norm_rope(kernels: &CudaKernels, x: &Tensor, weights: &Tensor, split: usize, cos_sin: &Tensor, eps: f32, cache: Option<KvTarget>) -> Result<Option<Tensor>> {
    if !kernels.serves(x) || x.rank() != 4 || x.stride()[3] != 1 || weights.dtype() != DType::BF16 || cos_sin.dtype() != DType::BF16 {
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
        const NO_POS: u64 = 0;
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

// ---- residual add + LayerNorm / RMSNorm ----

/// Threads of a LayerNorm block.
const LN_THREADS: usize = 128;

pub(crate) fn layer_norm(kernels: &CudaKernels, x: &Tensor, y: Option<&Tensor>, wb: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    let n = x.dim(candle_core::D::Minus1)?;
    // LN_CHUNKS 8-element chunks per thread of a LN_THREADS block.
    if !kernels.serves(x) || x.rank() != 2 || n % 8 != 0 || n > 8 * LN_CHUNKS * LN_THREADS || wb.dtype() != DType::BF16 || wb.dims() != [2, n] {
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
        const NULL: u64 = 0;
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
        let cfg = LaunchConfig { grid_dim: (norm_blocks(rows, n, LN_THREADS, LN_CHUNKS), 1, 1), block_dim: (LN_THREADS as u32, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the arguments match the kernel's signature; inputs are contiguous, n % 8 == 0.
        unsafe { lb.launch(cfg) }.w()?;
        let shape = if parts == 2 { Shape::from((2, rows, n)) } else { Shape::from((rows, n)) };
        Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
    }
}

optional_third_input!(LayerNormOp, "screenpilot-layer-norm", "screenpilot-add-layer-norm");

/// Blocks of `threads` for the LayerNorm kernel over (rows, n): a block a row, or a warp a row
/// where norm.cu's SP_NORM_WARP_ROWS(n, max_u) holds (n = 256 u, 1 <= u <= max_u).
fn norm_blocks(rows: usize, n: usize, threads: usize, max_u: usize) -> u32 {
    let warp_rows = n % 256 == 0 && (1..=max_u).contains(&(n / 256));
    (if warp_rows { rows.div_ceil(threads / 32) } else { rows }).max(1) as u32
}

pub(crate) fn add_rms_norm(kernels: &CudaKernels, x: &Tensor, y: &Tensor, weight: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    let n = x.dim(candle_core::D::Minus1)?;
    if !kernels.serves(x) || y.dims() != x.dims() || y.dtype() != DType::BF16 || weight.dtype() != DType::BF16 || weight.dims() != [n] {
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

// ---- the vision tower's rope ----

pub(crate) fn vision_rope(kernels: &CudaKernels, qkv: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize, q_scale: f32) -> Result<Option<Tensor>> {
    if !kernels.serves(qkv) || cos.dtype() != DType::F32 || sin.dtype() != DType::F32 || qkv.rank() != 2 {
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
