//! The CUDA side of [`crate::kernels`]: the PTX modules build.rs compiles from kernels/*.cu, when
//! a device may use them, and what the kernel launches share. By family:
//! - [`attention`]: flash attention (vision, prefill), decode attention, the batched decode step;
//! - [`norm`]: residual add + RMSNorm / LayerNorm, QK-norm + rope, the vision tower's rope;
//! - [`linear`]: cuBLASLt matmuls with a bias (+ GELU) epilogue, bias + activation;
//! - [`elementwise`]: SwiGLU, DeepStack's row adds, the vision tower's patch rows;
//! - [`memory`]: KV cache writes, KV tables, device addresses and uploads.
//!
//! Each op is a candle custom op (CustomOp1/2/3 or InplaceOp2) whose `cuda_fwd` launches the
//! kernel; its public function takes the device's [`CudaKernels`] (what loaded on it, its
//! cuBLASLt handles), checks first that the kernel applies (device, dtype, shapes, alignment)
//! and returns `None` where it does not.

use candle_core::cuda_backend::cudarc::driver::CudaView;
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Tensor};
use half::bf16;

// The macros first: `macro_rules!` items are visible only to the modules declared after them.
// (candle does not export the type of a loaded function, hence macros to load kernels.)

/// The kernel `$name` of flash_attn.cu's module.
macro_rules! flash {
    ($dev:expr, $name:expr) => {
        $dev.get_or_load_custom_func($name, "screenpilot_flash_attn", $crate::kernels::cuda::FLASH_PTX)
    };
}

/// The kernel `$name` of fused.cu's module (the kernel families it includes).
macro_rules! fused {
    ($dev:expr, $name:expr) => {
        $dev.get_or_load_custom_func($name, "screenpilot_fused", $crate::kernels::cuda::FUSED_PTX)
    };
}

/// The `cpu_fwd` of a CUDA-only op (three inputs, or `two inputs`): an error. The calling module
/// imports the candle types named here (CpuStorage, Layout, Shape; CustomOp2/3 for the next).
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

mod attention;
mod elementwise;
mod linear;
mod memory;
mod norm;

pub(super) use attention::{attention, decode_attention, decode_attention_norm};
pub(super) use elementwise::{patch_rows, rows_add, swiglu};
pub(super) use linear::{bias_act, linear};
pub(crate) use memory::{address, kv_table, upload_u32};
pub(super) use memory::kv_write;
pub(super) use norm::{add_rms_norm, layer_norm, norm_rope, vision_rope};

const FLASH_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_attn.ptx"));
const FUSED_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
const FLASH90_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_attn_sm90.ptx"));

// ---- the state of one device ----

/// What the kernels know of one CUDA device, found out once when a model is loaded on it
/// ([`crate::kernels::DeviceKernels::new`]) and owned by that model: another device, or another
/// model, has its own.
pub(super) struct CudaKernels {
    dev: CudaDevice,
    /// Whether our PTX modules load on this GPU (compute capability 8.0 or newer).
    ptx: bool,
    /// Whether it is a Hopper GPU (compute capability 9.0) whose driver loads the wgmma attention
    /// (flash_attn_sm90.cu).
    hopper: bool,
    /// cuBLASLt handles (with their workspaces), made on first use: see [`linear`].
    blas_lt: linear::LtHandles,
}

impl CudaKernels {
    /// Loads our PTX modules on `dev` (and the Hopper one where it applies) and records what
    /// loaded.
    pub(super) fn new(dev: &CudaDevice) -> Self {
        let ptx = flash!(dev, attention::flash_variant(64, false).name).is_ok() && fused!(dev, "sp_swiglu_bf16").is_ok();
        Self { dev: dev.clone(), ptx, hopper: ptx && hopper(dev), blas_lt: linear::LtHandles::default() }
    }

    /// This CUDA device when the kernels serve it in `dtype`: bf16, and the PTX loaded.
    pub(super) fn device(&self, dtype: DType) -> Option<&CudaDevice> {
        (self.ptx && dtype == DType::BF16).then_some(&self.dev)
    }

    /// Whether the kernels serve `dev` (this device, the PTX loaded) in `dtype`.
    fn serves_device(&self, dev: &candle_core::Device, dtype: DType) -> bool {
        matches!(dev, candle_core::Device::Cuda(d) if d.id() == self.dev.id()) && self.device(dtype).is_some()
    }

    /// Whether the kernels serve the tensor `t`: bf16 on this device.
    fn serves(&self, t: &Tensor) -> bool {
        self.serves_device(t.device(), t.dtype())
    }
}

impl std::fmt::Debug for CudaKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaKernels").field("dev", &self.dev).field("ptx", &self.ptx).field("hopper", &self.hopper).finish_non_exhaustive()
    }
}

/// Whether `dev` is a Hopper GPU (compute capability 9.0) whose driver loads the wgmma kernel.
fn hopper(dev: &CudaDevice) -> bool {
    use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute as A;
    let ctx = dev.cuda_stream().context().clone();
    let cc = (ctx.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR), ctx.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR));
    matches!(cc, (Ok(9), Ok(0))) && dev.get_or_load_custom_func(attention::flash_variant(64, true).name, "screenpilot_flash_attn_sm90", FLASH90_PTX).is_ok()
}

// ---- what the launches share ----

/// Vectorised loads need the last dim contiguous and rows starting on multiples of 8 elements.
fn aligned(l: &Layout) -> bool {
    let s = l.stride();
    s.last() == Some(&1) && l.start_offset() % 8 == 0 && s.iter().rev().skip(1).all(|x| x % 8 == 0)
}

/// The bf16 elements of `s` from `l`'s start.
fn view<'a>(s: &'a CudaStorage, l: &Layout) -> candle_core::Result<CudaView<'a, bf16>> {
    Ok(s.as_cuda_slice::<bf16>()?.slice(l.start_offset()..))
}

/// The first three strides of `l` (elements), as the kernels take them.
fn strides3(l: &Layout) -> [i64; 3] {
    let s = l.stride();
    [s[0] as i64, s[1] as i64, s[2] as i64]
}
