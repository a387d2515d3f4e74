//! Elementwise kernels (elementwise.cu, patch.cu): SwiGLU, DeepStack's injection of visual
//! features into rows of the hidden states, the vision tower's input rows from the uploaded image.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use half::bf16;

use super::{view, CudaKernels};
use crate::error::Result;

// ---- SwiGLU ----

pub(crate) fn swiglu(kernels: &CudaKernels, gate_up: &Tensor) -> Result<Option<Tensor>> {
    if !kernels.serves(gate_up) || gate_up.rank() == 0 || gate_up.dim(candle_core::D::Minus1)? % 2 != 0 {
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

// ---- DeepStack injection ----

pub(crate) fn rows_add(kernels: &CudaKernels, x: &Tensor, rows: &Tensor, feat: &Tensor) -> Result<Option<Tensor>> {
    let Ok((_, n)) = x.dims2() else { return Ok(None) };
    if !kernels.serves(x) || n % 2 != 0 || rows.dtype() != DType::U32 || rows.rank() != 1 || feat.dtype() != DType::BF16 || feat.dims() != [rows.dim(0)?, n] {
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

// ---- the vision tower's input rows ----

pub(crate) fn patch_rows(kernels: &CudaKernels, rgb: &Tensor, lut: &Tensor, grid: (usize, usize), p: usize, m: usize, t: usize) -> Result<Option<Tensor>> {
    let (gh, gw) = grid;
    let fits = rgb.dtype() == DType::U8 && rgb.elem_count() == gh * p * gw * p * 3 && lut.dtype() == DType::F32 && lut.elem_count() == 3 * 256;
    if !kernels.serves_device(rgb.device(), DType::BF16) || !fits || m == 0 || gh % m != 0 || gw % m != 0 || t == 0 {
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
