//! The tanh GELU in f32 on the CPU: candle's calls libm's `tanhf` an element, which made it ~15 %
//! of the vision tower's time on the CPU (BENCHMARKS.md, "CPU"). Ours is written over [`exp`], a
//! branch-free f32 exp within 2 ulp of libm's, and takes less than half the time. It agrees
//! with candle's to 1e-6 (tests below), far inside the exactness tests' tolerance against
//! transformers. (A softmax over the same exp, single-threaded, was slower than candle's, which
//! runs libm's `expf` on every core: the softmax stays candle's.)

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so that `n * LN2_HI` is exact for the n that occur.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 * 2^23: adding and subtracting it rounds an f32 below 2^22 to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// e^x: 0 below -87.3 (where e^x is under f32's smallest normal), e^88.3 above 88.3 (finite).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.3, 88.3);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // e^r on |r| <= ln2 / 2 by its Taylor series to r^7 (remainder under 2e-9 of the result).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.3 {
        0.0
    } else {
        p * scale
    }
}

/// The tanh GELU of the reference, `0.5 x (1 + tanh(u))`, u = √(2/π) (x + 0.044715 x³), with
/// tanh(u) = 1 - 2 / (e^(2u) + 1): the tails round to exactly 0 and x as the reference's do.
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // √(2/π)
    let u = C * x * (1.0 + 0.044_715 * x * x);
    let t = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
    0.5 * x * (1.0 + t)
}

struct GeluTanh;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "screenpilot-cpu-gelu-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = f32_slice(s, l)?;
        Ok((CpuStorage::F32(src.iter().map(|&x| gelu_tanh(x)).collect()), l.shape().clone()))
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("f32 only") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("contiguous input only"),
    }
}

/// Whether `x` takes these ops: f32 on the CPU (anything else keeps candle's).
fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() > 0
}

/// The tanh GELU of `x`: ours for f32 on the CPU, else candle's.
pub(crate) fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    if applies(x) {
        x.contiguous()?.apply_op1_no_bwd(&GeluTanh)
    } else {
        x.gelu()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Distance in units in the last place (for finite values of the same sign).
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_2_ulp_of_libm_over_the_whole_normal_range() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.0 {
            worst = worst.max(ulps(exp(x), x.exp()));
            x += 0.000_37;
        }
        assert!(worst <= 2, "worst {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!((exp(-200.0), exp(f32::NEG_INFINITY)), (0.0, 0.0));
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
    }

    #[test]
    fn gelu_matches_candle_and_the_reference_tails() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (7, 333), &dev).unwrap() + 0.1).unwrap();
        // Error relative to the value, or to 1 for values under 1 (near 0 a tanh GELU's error is
        // absolute: the 1 + tanh(u) of both rounds to f32's spacing near 1).
        let rel = |a: &Tensor, b: &Tensor| {
            let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let s = b.abs().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            d.iter().zip(&s).map(|(d, s)| d / s.max(1.0)).fold(0f32, f32::max)
        };
        let (ours, candle) = (gelu(&x).unwrap(), x.gelu().unwrap());
        let g = rel(&ours, &candle);
        assert!(g < 1e-6, "gelu error {g}");
        // The tails are the reference's: exactly 0 far left, exactly x far right.
        let tails = Tensor::new(&[-30f32, -12.0, 12.0, 30.0], &dev).unwrap();
        assert_eq!(gelu(&tails).unwrap().to_vec1::<f32>().unwrap(), tails.gelu().unwrap().to_vec1::<f32>().unwrap());
        // Other devices' and dtypes' inputs keep candle's ops (same values).
        let b = x.to_dtype(DType::BF16).unwrap();
        assert_eq!(gelu(&b).unwrap().to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(), b.gelu().unwrap().to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap());
    }
}
