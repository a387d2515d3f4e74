//! Random weights at a named or given shape, generated on the device, for benchmarks: speed does
//! not depend on the values, and no multi-GB file has to exist. Norm weights are ones, biases
//! zeros, matrices N(0, 1/fan_in) so activations stay in a realistic range.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{var_builder::SimpleBackend, Init, VarBuilder};

use crate::config::Qwen3VlConfig;
use crate::error::Result;
use crate::model::Qwen3Vl;
use crate::ops::KernelConfig;

struct RandomWeights {
    tied: bool,
}

impl SimpleBackend for RandomWeights {
    fn get(&self, s: Shape, name: &str, _h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let dims = s.dims();
        let leaf = name.rsplit('.').nth(1).unwrap_or("");
        if name.ends_with("bias") {
            return Tensor::zeros(s, dtype, dev);
        }
        if leaf.contains("norm") && dims.len() == 1 {
            return Tensor::ones(s, dtype, dev);
        }
        let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
        let std = if name.contains("embed") { 1.0 } else { 1.0 / (fan_in as f64).sqrt() };
        Tensor::randn(0f32, std as f32, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!("random weights need a shape for {name}")))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        !(self.tied && name == "lm_head.weight")
    }
}

impl Qwen3Vl {
    /// A model of `config`'s shape with random weights, made directly on `device`.
    pub fn random(config: &Qwen3VlConfig, dtype: DType, device: &Device) -> Result<Self> {
        Self::random_with(config, dtype, device, KernelConfig::default())
    }

    /// [`Self::random`] with the kernel choice `kernels`.
    pub fn random_with(config: &Qwen3VlConfig, dtype: DType, device: &Device, kernels: KernelConfig) -> Result<Self> {
        let backend: Box<dyn SimpleBackend> = Box::new(RandomWeights { tied: config.tied_embeddings() });
        let vb = VarBuilder::from_backend(backend, dtype, device.clone());
        Self::new_with(config, vb, kernels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_model_of_the_tiny_shape_runs() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny/config.json"))
            .unwrap_or_default();
        let cfg = Qwen3VlConfig::from_json(&text).unwrap_or_else(|e| panic!("{e}"));
        let m = Qwen3Vl::random(&cfg, DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
        let mut cache = m.new_cache();
        let l = m.decode_step(5, &mut cache).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.dims(), &[151936]);
        let v: Vec<f32> = l.to_vec1().unwrap_or_default();
        assert!(v.iter().all(|x| x.is_finite()) && v.iter().any(|x| *x != v[0]));
    }
}
