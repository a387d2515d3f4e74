//! Positions for the text decoder: interleaved MRoPE tables ([`MRope`]) and what one forward
//! pass hands every layer ([`PassInputs`]: the tables, the causal mask, a device decode step).

use candle_core::{DType, Device, Tensor, D};

use super::attention::causal_mask;
use crate::config::TextParams;
use crate::error::Result;
use crate::ops::rope::RopeRef;
use crate::profile::scope;
use crate::rope::Positions;

/// What every layer of one forward pass shares besides the hidden states: the MRoPE tables of
/// the new tokens (first half of each row, (seq, head_dim / 2); the second half repeats it), the
/// causal mask of a multi-token pass (built once, when a layer first needs it), and for a decode
/// pass run from device memory its [`DeviceStep`].
pub(crate) struct PassInputs {
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
    /// (seq, head_dim) = [cos | sin], for the fused QK-norm + rope kernel (CUDA bf16 only).
    pub(super) cos_sin: Option<Tensor>,
    /// A multi-token pass: (new tokens, tokens cached before them). Its additive mask is built on
    /// first use: the fused attention kernels mask by position and never need it.
    pub(super) causal: Option<(usize, usize)>,
    pub(super) mask: std::cell::OnceCell<Tensor>,
    /// A decode pass whose inputs are in device memory: then `cos_sin` is the table of positions
    /// 0.. and the kernels read each sequence's position and length from here.
    pub(super) step: Option<DeviceStep>,
}

/// What the kernels of a decode pass read from device memory instead of host-built tables, so
/// that a captured CUDA graph of the pass serves every step of every batch of its size: per
/// sequence, the tokens its cache holds and the rope position of its new token ((b,) u32 each);
/// per layer, the KV table (addresses of every sequence's buffers); and how many blocks split
/// each sequence's keys (fixed for a graph).
pub(crate) struct DeviceStep {
    pub(super) lens: Tensor,
    pub(super) pos: Tensor,
    /// (layers, KV_TABLE_WORDS) u32.
    pub(super) kv_tables: Tensor,
    pub(super) splits: usize,
}

impl PassInputs {
    pub(super) fn new(cos: Tensor, sin: Tensor) -> Result<Self> {
        let cos_sin = match (cos.device(), cos.dtype()) {
            (Device::Cuda(_), DType::BF16) => Some(Tensor::cat(&[&cos, &sin], D::Minus1)?),
            _ => None,
        };
        Ok(Self { cos, sin, cos_sin, causal: None, mask: Default::default(), step: None })
    }

    /// Tables for a decode pass with device inputs: `table` from [`TextModel::position_table`],
    /// `step` (2, b) u32 = [tokens held; rope positions], `kv_tables` and `splits` as in
    /// [`DeviceStep`]. Only the fused kernels read these (`cos`/`sin` are placeholders: the
    /// unfused path refuses such a pass).
    #[cfg(feature = "cuda")]
    pub(super) fn on_device(table: &Tensor, step: &Tensor, kv_tables: &Tensor, splits: usize) -> Result<Self> {
        let step = DeviceStep { lens: step.get(0)?, pos: step.get(1)?, kv_tables: kv_tables.clone(), splits };
        Ok(Self { cos: table.clone(), sin: table.clone(), cos_sin: Some(table.clone()), causal: None, mask: Default::default(), step: Some(step) })
    }

    /// The rotary tables as the ops take them.
    pub(super) fn rope(&self) -> RopeRef<'_> {
        RopeRef { cos: &self.cos, sin: &self.sin, cos_sin: self.cos_sin.as_ref() }
    }

    /// The causal mask of a multi-token pass (None for one token), built once.
    pub(super) fn mask(&self, dtype: DType, dev: &Device) -> Result<Option<&Tensor>> {
        let Some((q, past)) = self.causal else { return Ok(None) };
        if let Some(m) = self.mask.get() {
            return Ok(Some(m));
        }
        let m = scope("text.mask", dev, || causal_mask(q, past, dtype, dev))?;
        Ok(Some(self.mask.get_or_init(|| m)))
    }
}

/// Interleaved multi-axis rotary embedding: frequency i follows the h axis when i % 3 == 1 and
/// the w axis when i % 3 == 2 (within their sections), the t axis otherwise.
pub(crate) struct MRope {
    pub(super) inv_freq: Vec<f32>,
    pub(super) axis_of: Vec<usize>,
}

impl MRope {
    pub(crate) fn new(p: &TextParams) -> Self {
        let dim = p.head_dim;
        let inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| {
                let e = i as f32 / dim as f32;
                1.0f32 / (p.rope_theta.powf(e as f64) as f32)
            })
            .collect();
        let axis_of = (0..inv_freq.len())
            .map(|i| {
                if i % 3 == 1 && i < 3 * p.mrope_section[1] {
                    1
                } else if i % 3 == 2 && i < 3 * p.mrope_section[2] {
                    2
                } else {
                    0
                }
            })
            .collect();
        Self { inv_freq, axis_of }
    }

    pub(crate) fn tables(&self, pos: &Positions, dtype: DType, dev: &Device) -> Result<PassInputs> {
        let n = pos.len();
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(n * half * 2);
        let mut sin = Vec::with_capacity(n * half * 2);
        let mut c = vec![0f32; half];
        let mut s = vec![0f32; half];
        for j in 0..n {
            for (i, f) in self.inv_freq.iter().enumerate() {
                let a = pos.axes[self.axis_of[i]][j] as f32 * f;
                c[i] = a.cos();
                s[i] = a.sin();
            }
            cos.extend_from_slice(&c);
            sin.extend_from_slice(&s);
        }
        PassInputs::new(
            Tensor::from_vec(cos, (n, half), dev)?.to_dtype(dtype)?,
            Tensor::from_vec(sin, (n, half), dev)?.to_dtype(dtype)?,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mrope_axes_interleave_and_tail_is_temporal() {
        let p = crate::config::named_shape("2b").unwrap().text_params().unwrap();
        let r = MRope::new(&p);
        assert_eq!(&r.axis_of[..6], &[0, 1, 2, 0, 1, 2]);
        assert_eq!(&r.axis_of[60..], &[0, 0, 0, 0]);
        assert_eq!(r.axis_of.iter().filter(|&&a| a == 1).count(), 20);
        assert_eq!(r.axis_of.iter().filter(|&&a| a == 0).count(), 24);
    }
}
