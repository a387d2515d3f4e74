//! Quantized weights for the language model's projections (in situ: quantized at load from the
//! safetensors weights, as mistral.rs's ISQ does): candle's GGML block formats and its quantized
//! matmuls (CPU with SIMD and repacked weights, CUDA, Metal). The vision tower, the embeddings
//! and the norms keep the model's dtype.
//!
//! A projection whose input width is not a multiple of the format's block (256 values for the
//! k-quants, 32 for the others) takes the nearest 32-value format of at least as many bits
//! instead (what llama.cpp's quantizer does); one whose width is not a multiple of 32 stays
//! dense. [`QuantSummary`] counts both, so a report can say so.

use std::fmt;
use std::str::FromStr;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use crate::error::Result;

/// A weight format for the language model's linear layers (llama.cpp's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// 8 bits a weight, blocks of 32 with one f16 scale (8.5 bits a weight).
    Q8_0,
    /// 4 bits, blocks of 32 with one f16 scale (4.5 bits a weight).
    Q4_0,
    /// 6-bit k-quant, super-blocks of 256 (6.56 bits a weight).
    Q6K,
    /// 5-bit k-quant (5.5 bits a weight).
    Q5K,
    /// 4-bit k-quant (4.5 bits a weight).
    Q4K,
}

impl QuantType {
    pub const ALL: [QuantType; 5] = [Self::Q8_0, Self::Q6K, Self::Q5K, Self::Q4K, Self::Q4_0];

    /// The name users type and reports print (`q8_0`, `q4_k`, ...).
    pub fn name(self) -> &'static str {
        ggml_name(self.ggml())
    }

    fn ggml(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_0 => GgmlDType::Q4_0,
            Self::Q6K => GgmlDType::Q6K,
            Self::Q5K => GgmlDType::Q5K,
            Self::Q4K => GgmlDType::Q4K,
        }
    }

    /// The format a projection of input width `k` gets: this one, the 32-block format of at
    /// least as many bits when `k` does not fit this one's block, or `None` (stays dense).
    pub fn for_width(self, k: usize) -> Option<GgmlDType> {
        let want = self.ggml();
        if k.is_multiple_of(want.block_size()) {
            return Some(want);
        }
        let fallback = match self {
            Self::Q8_0 | Self::Q6K => GgmlDType::Q8_0,
            Self::Q5K => GgmlDType::Q5_0,
            Self::Q4K | Self::Q4_0 => GgmlDType::Q4_0,
        };
        k.is_multiple_of(fallback.block_size()).then_some(fallback)
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantType {
    type Err = String;

    /// `q8_0`, `Q4K`, `q4-k`, ...; an unknown name is one message listing the known ones.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|q| q.name() == norm || q.name().replace('_', "") == norm)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|q| q.name()).collect();
                format!("unknown quantization `{s}` (one of: {})", names.join(", "))
            })
    }
}

/// A projection `x W^T (+ b)`: the dense weight in the model's dtype, or a quantized one.
#[derive(Debug, Clone)]
pub(crate) enum Proj {
    Dense(Linear),
    Quant {
        w: QMatMul,
        bias: Option<Tensor>,
        format: GgmlDType,
    },
}

impl Proj {
    /// `lin` as it is (`quant` `None`), or its weight quantized to `quant` (see
    /// [`QuantType::for_width`]; a width no format fits stays dense).
    pub(crate) fn new(lin: Linear, quant: Option<QuantType>) -> Result<Self> {
        let Some(q) = quant else {
            return Ok(Self::Dense(lin));
        };
        let w = lin.weight();
        let Some(format) = q.for_width(w.dim(1)?) else {
            return Ok(Self::Dense(lin));
        };
        let dev = w.device();
        let cpu = w.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        let qt = if dev.is_cpu() {
            QTensor::quantize(&cpu, format)?
        } else {
            QTensor::quantize_onto(&cpu, format, dev)?
        };
        Ok(Self::Quant {
            w: QMatMul::from_qtensor(qt)?,
            bias: lin.bias().cloned(),
            format,
        })
    }

    /// The dense layer, if this projection is one (our CUDA matmul kernels take only those).
    pub(crate) fn dense(&self) -> Option<&Linear> {
        match self {
            Self::Dense(l) => Some(l),
            Self::Quant { .. } => None,
        }
    }

    /// The weight's format (`None`: dense).
    pub(crate) fn format(&self) -> Option<GgmlDType> {
        match self {
            Self::Dense(_) => None,
            Self::Quant { format, .. } => Some(*format),
        }
    }

    /// Weights of the checkpoint in the weight matrix.
    fn matrix_elems(&self) -> usize {
        match self {
            Self::Dense(l) => l.weight().elem_count(),
            Self::Quant { w: QMatMul::QTensor(t), .. } => t.shape().elem_count(),
            Self::Quant { w: QMatMul::Tensor(t) | QMatMul::TensorF16(t), .. } => t.elem_count(),
        }
    }

    fn bias(&self) -> Option<&Tensor> {
        match self {
            Self::Dense(l) => l.bias(),
            Self::Quant { bias, .. } => bias.as_ref(),
        }
    }

    /// Weights (and biases) of the checkpoint this projection holds.
    pub(crate) fn weight_elems(&self) -> usize {
        self.matrix_elems() + self.bias().map_or(0, Tensor::elem_count)
    }

    /// Bytes of the weight (and bias) as stored.
    pub(crate) fn weight_bytes(&self) -> usize {
        let bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let matrix = match self {
            Self::Dense(l) => bytes(l.weight()),
            Self::Quant { format, .. } => self.matrix_elems() / format.block_size() * format.type_size(),
        };
        matrix + self.bias().map_or(0, bytes)
    }
}

impl Module for Proj {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Dense(l) => l.forward(x),
            Self::Quant { w, bias, .. } => {
                // candle's quantized matmuls take f32 on every device (and f16/bf16 on the CPU).
                let dtype = x.dtype();
                let xin = if x.device().is_cpu() || dtype == DType::F32 {
                    x.contiguous()?
                } else {
                    x.to_dtype(DType::F32)?.contiguous()?
                };
                let y = w.forward(&xin)?.to_dtype(dtype)?;
                match bias {
                    Some(b) => y.broadcast_add(&b.to_dtype(dtype)?),
                    None => Ok(y),
                }
            }
        }
    }
}

/// How a loaded model's language-model projections are stored: what `--quant` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuantSummary {
    /// Projections quantized, per format (llama.cpp's names), in the order first met.
    pub quantized: Vec<(String, usize)>,
    /// Projections left dense (no format's block divides their width, or no quantization).
    pub dense: usize,
    /// Bytes of all projections' weights as stored.
    pub bytes: usize,
    /// Weights of the checkpoint these projections hold (a tied LM head's are the
    /// embeddings', not counted here): `parameters - params` weights are stored in the model's
    /// dtype, the rest take `bytes`.
    pub params: usize,
}

impl QuantSummary {
    /// Adds a projection holding weights of the checkpoint.
    pub(crate) fn add(&mut self, p: &Proj) {
        self.params += p.weight_elems();
        self.add_copy(p);
    }

    /// Adds a projection that is a copy of weights held elsewhere (a quantized tied LM head): its
    /// bytes and format, none of the checkpoint's weights.
    pub(crate) fn add_copy(&mut self, p: &Proj) {
        self.bytes += p.weight_bytes();
        match p.format() {
            None => self.dense += 1,
            Some(f) => {
                let name = ggml_name(f).to_string();
                match self.quantized.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, c)) => *c += 1,
                    None => self.quantized.push((name, 1)),
                }
            }
        }
    }
}

/// llama.cpp's name of a block format.
fn ggml_name(f: GgmlDType) -> &'static str {
    match f {
        GgmlDType::Q8_0 => "q8_0",
        GgmlDType::Q5_0 => "q5_0",
        GgmlDType::Q4_0 => "q4_0",
        GgmlDType::Q6K => "q6_k",
        GgmlDType::Q5K => "q5_k",
        GgmlDType::Q4K => "q4_k",
        _ => "other",
    }
}

impl fmt::Display for QuantSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .quantized
            .iter()
            .map(|(n, c)| format!("{c} {n}"))
            .collect();
        let mb = self.bytes as f64 / 1e6;
        match (parts.is_empty(), self.dense) {
            (true, _) => write!(f, "{} dense projections, {mb:.1} MB", self.dense),
            (false, 0) => write!(f, "{} projections, {mb:.1} MB", parts.join(" + ")),
            (false, d) => write!(
                f,
                "{} projections + {d} dense (width fits no block), {mb:.1} MB",
                parts.join(" + ")
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_both_ways_and_unknown_ones_are_one_error() {
        for q in QuantType::ALL {
            assert_eq!(q.name().parse::<QuantType>().unwrap(), q);
        }
        assert_eq!("Q4K".parse::<QuantType>().unwrap(), QuantType::Q4K);
        assert_eq!("q8-0".parse::<QuantType>().unwrap(), QuantType::Q8_0);
        let e = "q3_k".parse::<QuantType>().unwrap_err();
        assert!(e.contains("q3_k") && e.contains("q8_0, q6_k"), "{e}");
    }

    #[test]
    fn widths_a_block_does_not_divide_fall_back_to_32_blocks_or_stay_dense() {
        assert_eq!(QuantType::Q4K.for_width(2048), Some(GgmlDType::Q4K));
        assert_eq!(QuantType::Q4K.for_width(96), Some(GgmlDType::Q4_0));
        assert_eq!(QuantType::Q6K.for_width(96), Some(GgmlDType::Q8_0));
        assert_eq!(QuantType::Q5K.for_width(64), Some(GgmlDType::Q5_0));
        assert_eq!(QuantType::Q8_0.for_width(48), None);
    }

    #[test]
    fn a_quantized_projection_is_close_to_the_dense_one_and_smaller() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.05, (96, 256), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.05, 96, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 5, 256), &dev).unwrap();
        let dense = Proj::new(Linear::new(w.clone(), Some(b.clone())), None).unwrap();
        let want = dense.forward(&x).unwrap();
        let err = |q| {
            let p = Proj::new(Linear::new(w.clone(), Some(b.clone())), Some(q)).unwrap();
            assert!(p.dense().is_none());
            let got = p.forward(&x).unwrap();
            assert_eq!(got.dims(), want.dims());
            let d = (got - &want)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            (d.sqrt(), p.weight_bytes())
        };
        let (e8, b8) = err(QuantType::Q8_0);
        let (e4, b4) = err(QuantType::Q4K);
        // Outputs have a spread of ~0.8: q8_0 is within 1 %, q4_k within 10 % and worse than q8_0.
        assert!(
            e8 < 0.008 && e4 < 0.08 && e4 > e8,
            "rms error q8_0 {e8}, q4_k {e4}"
        );
        assert!(
            b8 < dense.weight_bytes() / 3 && b4 < b8,
            "{b8} {b4} {}",
            dense.weight_bytes()
        );
    }
}
