//! Device memory: a prefill's keys and values written into the KV cache (kv_write.cu), the KV
//! tables the batched decode kernel reads (abi.h's SpKvTable), device addresses of tensors, and
//! uploads of decode inputs (read by kernels and captured graphs).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CpuStorage, CudaStorage, DType, Layout, Tensor};
use half::bf16;

use super::{view, CudaKernels};
use crate::error::Result;
use crate::kernels::abi::{kv_table_words, MAX_BATCH};

// ---- prefill KV writes ----

pub(crate) fn kv_write(kernels: &CudaKernels, dst: &Tensor, src: &Tensor, offset: usize) -> Result<bool> {
    let (Ok((1, heads, cap, d)), Ok((1, sh, s, sd))) = (dst.dims4(), src.dims4()) else { return Ok(false) };
    let st = src.stride();
    let ok = kernels.serves(dst)
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

// ---- KV tables of the batched decode ----

/// The KV table of one layer for [`crate::kernels::DeviceKernels::decode_attention_norm`]:
/// `buffers[i]` = sequence i's (keys, values), (1, kv_heads, capacity, d) bf16 contiguous each,
/// as KV_TABLE_WORDS u32 (SpKvTable's layout). Checks what the kernel relies on, except the room for one more token
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
    Ok(kv_table_words(&k, &v, &stride))
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
