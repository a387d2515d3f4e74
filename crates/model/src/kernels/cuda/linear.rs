//! Linear layers: a cuBLASLt matmul with the bias (and tanh GELU) in its epilogue, and a bias +
//! activation pass after a matmul (elementwise.cu's sp_bias_act_bf16).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublaslt::{Activation, CudaBlasLT, Matmul, MatmulConfig};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use half::bf16;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use super::{view, CudaKernels};
use crate::error::Result;
use crate::kernels::Act;

// ---- cuBLASLt matmul with a bias (+ GELU) epilogue ----

/// The cuBLASLt handles of one device ([`CudaKernels`]), each with its workspace (32 MiB on
/// Hopper, 4 MiB before), one per thread that ran a matmul on it, all dropped with the model.
///
/// A handle issues its matmuls on the stream it was made with, the device's. For a device made
/// by [`crate::cuda_device`] (candle's `Device::new_cuda`) that is CUDA's per-thread default
/// stream: each host thread's work goes to its own stream. One handle used from two threads at
/// once would run two matmuls over one workspace on two streams, so each thread gets its own
/// (in practice one: the engine runs a model on one thread). On a device with one explicit
/// stream the handles are ordered on that stream, which is correct too.
#[derive(Default)]
pub(super) struct LtHandles(Mutex<Vec<(ThreadId, Arc<CudaBlasLT>)>>);

impl LtHandles {
    /// The calling thread's handle on `dev`, made on first use.
    fn get(&self, dev: &CudaDevice) -> candle_core::Result<Arc<CudaBlasLT>> {
        let me = std::thread::current().id();
        let mut handles = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, h)) = handles.iter().find(|(t, _)| *t == me) {
            return Ok(h.clone());
        }
        let h = Arc::new(CudaBlasLT::new(dev.cuda_stream()).map_err(candle_core::Error::wrap)?);
        handles.push((me, h.clone()));
        Ok(h)
    }
}

pub(crate) fn linear(kernels: &CudaKernels, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Act) -> Result<Option<Tensor>> {
    let gelu = match act {
        Act::None => false,
        Act::GeluTanh => true,
        _ => return Ok(None),
    };
    if !kernels.serves(x) || x.rank() == 0 || w.dtype() != DType::BF16 || !w.is_contiguous() {
        return Ok(None);
    }
    let k = x.dim(candle_core::D::Minus1)?;
    let (n, wk) = w.dims2()?;
    if wk != k || k == 0 || n == 0 || bias.is_some_and(|b| b.dtype() != DType::BF16 || b.dims() != [n]) {
        return Ok(None);
    }
    let mut dims = x.dims().to_vec();
    let x = x.contiguous()?;
    let op = LtLinear { gelu, lt: kernels.blas_lt.get(&kernels.dev)? };
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
    /// The calling thread's handle on this device.
    lt: Arc<CudaBlasLT>,
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
        // SAFETY: the sizes above match the buffers (x, w contiguous; checked by `linear`).
        unsafe { self.lt.matmul(cfg, &w, &x, &mut out, b.as_ref(), act.as_ref()) }.map_err(candle_core::Error::wrap)?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((m, n))))
    }
}

optional_third_input!(LtLinear, "screenpilot-lt-linear", "screenpilot-lt-linear-bias");

// ---- bias + activation ----

pub(crate) fn bias_act(kernels: &CudaKernels, x: &Tensor, bias: &Tensor, act: Act) -> Result<Option<Tensor>> {
    let n = x.dim(candle_core::D::Minus1)?;
    if !kernels.serves(x) || bias.dtype() != DType::BF16 || bias.dims() != [n] {
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
