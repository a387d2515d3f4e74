//! Decode steps on CUDA replayed as CUDA graphs.
//!
//! A decode step of the 2B model is ~290 small kernels; launched one by one from the host, the
//! launches (not the GPU) set the pace. A CUDA graph records the step once and replays it with
//! one launch. That needs a step whose every input sits at a fixed device address, so
//! [`TextModel::forward_decode_device`] reads nothing from the host: before each step the token
//! ids, each sequence's length and rope position, and every layer's KV table (the addresses of
//! each sequence's key and value buffers) are uploaded into small buffers the kernels read. The
//! caches make room for the token first (a copy or growth happens there, outside the graph), and
//! the rope table covers positions 0.. ([`TextModel::position_table`]).
//!
//! So one graph serves every step of every batch of its size, whatever caches take part: graphs
//! are keyed by batch size, the number of blocks that split the keys, and the rope table. The
//! first step of a new key runs eagerly (the same kernels; it also fills candle's cache of small
//! parameter uploads that recording needs), the second records the graph and runs it, later
//! ones replay it. The logits are copied out of the graph's buffer, so callers own what they get.
//! Should recording fail three times, the decoder says so and decodes eagerly from then on.
//! `KernelConfig::cuda_graphs` off (`--cuda-graphs off`, or `SCREENPILOT_CUDA_GRAPHS=0` at a front
//! end) turns graphs off (eager steps with device inputs remain).

use candle_core::Tensor;

use crate::error::Result;
use crate::text::{KvCache, TextModel};

pub(crate) use imp::DeviceDecoder;

/// How the decode steps on the device ran so far: replayed from a recorded graph, recorded
/// (and run), or eager; and the recordings that failed (the step then ran eagerly; after
/// MAX_FAILURES of them no more are tried), with the last one's error.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GraphCounts {
    pub replayed: u64,
    pub recorded: u64,
    pub eager: u64,
    pub failed: u64,
    pub last_failure: Option<String>,
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;

    /// Without CUDA there is no device decoder: `DeviceDecoder::new` is never `Some`.
    pub(crate) enum DeviceDecoder {}

    impl DeviceDecoder {
        pub(crate) fn new(_: &crate::ops::Ops, _: candle_core::DType) -> Option<Self> {
            None
        }

        pub(crate) fn decode(&self, _: &TextModel, _: &[u32], _: &mut [&mut KvCache]) -> Result<Tensor> {
            match *self {}
        }

        pub(crate) fn counts(&self) -> GraphCounts {
            match *self {}
        }
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph};
    use candle_core::{CudaDevice, DType, Device};

    use super::*;
    use crate::error::ModelError;
    use crate::kernels::abi::{KV_TABLE_WORDS, MAX_BATCH, STEP_ALIGN_WORDS};
    use crate::kernels::{decode_splits, kv_table, upload_u32};
    use crate::ops::Ops;

    /// Graphs kept at once (each holds its own intermediate buffers, a few MB).
    const MAX_GRAPHS: usize = 8;
    /// Failed recordings after which graphs are given up.
    const MAX_FAILURES: u64 = 3;

    /// Decode steps with device inputs on one CUDA device, replayed as graphs where possible.
    pub(crate) struct DeviceDecoder {
        dev: CudaDevice,
        graphs: bool,
        state: Mutex<State>,
    }

    #[derive(Default)]
    struct State {
        graphs: HashMap<Key, Captured>,
        /// The key of the last eager step: the next step with the same key is recorded.
        last: Option<Key>,
        steps: u64,
        counts: GraphCounts,
    }

    /// What a graph depends on: the batch size, the key splits, the rope table's address.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    struct Key {
        batch: usize,
        splits: usize,
        rope: u64,
    }

    /// A recorded step and the buffers it reads and writes.
    struct Captured {
        graph: Graph,
        inputs: Inputs,
        logits: Tensor,
        used: u64,
    }

    struct Graph(CudaGraph);

    // SAFETY: CUDA requires that a graph is not used from two threads at once; it is only touched
    // with the decoder's mutex held.
    unsafe impl Send for Graph {}

    /// Device buffers of one step's inputs: views of one buffer, [ids | step | padding |
    /// kv_tables], filled with one upload.
    struct Inputs {
        all: Tensor,
        ids: Tensor,
        step: Tensor,
        kv_tables: Tensor,
    }

    /// The inputs of one step as the host knows them.
    struct StepData {
        /// Token ids, then [tokens held per sequence; rope position per sequence], then the KV
        /// tables of every layer: what [`Inputs`] holds, in its order.
        words: Vec<u32>,
        batch: usize,
        held: Vec<usize>,
        splits: usize,
        layers: usize,
    }

    impl DeviceDecoder {
        /// A decoder for the model whose ops are `ops` when our kernels serve its device in
        /// `dtype` (CUDA, bf16, the PTX loaded, kernels allowed by its config); it replays CUDA
        /// graphs when the config's `cuda_graphs`.
        pub(crate) fn new(ops: &Ops, dtype: DType) -> Option<Self> {
            let config = ops.config();
            if !config.allows(false) {
                return None;
            }
            let dev = ops.kernels().cuda_device(dtype)?.clone();
            // candle's quantized matmuls allocate scratch buffers per call: not captured in graphs.
            let graphs = config.cuda_graphs && config.quant.is_none();
            Some(Self { dev, graphs, state: Mutex::new(State::default()) })
        }

        /// One token for each cache (`tokens[i]` to `caches[i]`, at most MAX_BATCH); returns the
        /// logits (batch, vocab) f32. The caller checked the lengths against the context. Errors
        /// leave every cache holding what it held (a cache may have been copied or grown).
        pub(crate) fn decode(&self, text: &TextModel, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
            let data = step_data(text, tokens, caches)?;
            let b = caches.len();
            let max_pos = data.words[2 * b..3 * b].iter().copied().max().unwrap_or(0) as usize;
            let device = Device::Cuda(self.dev.clone());
            let rope = text.position_table(max_pos + 1, DType::BF16, &device)?;
            let key = Key { batch: caches.len(), splits: data.splits, rope: crate::kernels::address(&rope)? };
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let graphs = self.graphs && state.counts.failed < MAX_FAILURES && !crate::profile::on();
            state.steps += 1;
            let tick = state.steps;
            if let Some(c) = state.graphs.get_mut(&key).filter(|_| graphs) {
                c.used = tick;
                c.inputs.upload(&data)?;
                c.graph.0.launch().map_err(cuda_err)?;
                caches.iter_mut().for_each(|c| c.commit_all());
                let logits = c.logits.copy()?;
                state.counts.replayed += 1;
                return Ok(logits);
            }
            if graphs && state.last == Some(key) {
                match self.record(text, &data, &rope, caches) {
                    Ok((captured, logits)) => {
                        if state.graphs.len() >= MAX_GRAPHS {
                            let oldest = state.graphs.iter().min_by_key(|(_, c)| c.used).map(|(k, _)| *k);
                            oldest.map(|k| state.graphs.remove(&k));
                        }
                        state.graphs.insert(key, Captured { used: tick, ..captured });
                        state.counts.recorded += 1;
                        return Ok(logits);
                    }
                    Err(e) => {
                        state.counts.failed += 1;
                        state.counts.last_failure = Some(e.to_string());
                        for (c, &held) in caches.iter_mut().zip(&data.held) {
                            c.truncate(held)?;
                        }
                    }
                }
            }
            state.last = Some(key);
            state.counts.eager += 1;
            drop(state);
            let _cache = self.dev.enable_cuda_graph_htod_cache();
            let inputs = Inputs::new(&self.dev, &data)?;
            let hidden = text.forward_decode_device(&inputs.ids, &inputs.step, &inputs.kv_tables, data.splits, &rope, caches)?;
            text.logits(&hidden.squeeze(1)?)
        }

        pub(crate) fn counts(&self) -> GraphCounts {
            self.state.lock().unwrap_or_else(|e| e.into_inner()).counts.clone()
        }

        /// Records the step as a graph and runs it once; returns it and this step's logits. On
        /// an error the caches may count the token (recording advances them): the caller
        /// truncates them.
        fn record(&self, text: &TextModel, data: &StepData, rope: &Tensor, caches: &mut [&mut KvCache]) -> Result<(Captured, Tensor)> {
            let inputs = Inputs::new(&self.dev, data)?;
            let vocab = text.params().vocab_size;
            let logits = Tensor::zeros((data.batch, vocab), DType::F32, &Device::Cuda(self.dev.clone()))?;
            let stream = self.dev.cuda_stream();
            let _cache = self.dev.enable_cuda_graph_htod_cache();
            stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(cuda_err)?;
            // Everything the pass allocates is freed inside it, so the graph owns no memory
            // between replays; only `logits`, made before, holds the result.
            let recorded = (|| -> Result<()> {
                let hidden = text.forward_decode_device(&inputs.ids, &inputs.step, &inputs.kv_tables, data.splits, rope, caches)?;
                let out = text.logits(&hidden.squeeze(1)?)?;
                logits.slice_set(&out, 0, 0)?;
                Ok(())
            })();
            let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0)).map_err(cuda_err);
            recorded?;
            let graph = graph?.ok_or_else(|| ModelError::Input("CUDA graph capture recorded nothing".into()))?;
            graph.launch().map_err(cuda_err)?;
            let out = logits.copy()?;
            Ok((Captured { graph: Graph(graph), inputs, logits, used: 0 }, out))
        }
    }

    impl Inputs {
        /// Fresh device buffers holding the step's inputs.
        fn new(dev: &CudaDevice, data: &StepData) -> Result<Self> {
            let dev = Device::Cuda(dev.clone());
            let b = data.batch;
            let all = Tensor::zeros(data.words.len(), DType::U32, &dev)?;
            let inputs = Self {
                ids: all.narrow(0, 0, b)?,
                step: all.narrow(0, b, 2 * b)?.reshape((2, b))?,
                kv_tables: all.narrow(0, header_words(b), data.layers * KV_TABLE_WORDS)?.reshape((data.layers, KV_TABLE_WORDS))?,
                all,
            };
            inputs.upload(data)?;
            Ok(inputs)
        }

        fn upload(&self, data: &StepData) -> Result<()> {
            upload_u32(&self.all, &data.words)
        }
    }

    /// Makes room for the token in every cache and gathers what the kernels will read.
    fn step_data(text: &TextModel, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<StepData> {
        let p = text.params();
        if caches.is_empty() || caches.len() > MAX_BATCH || tokens.len() != caches.len() {
            return Err(ModelError::Input(format!("{} tokens for {} caches (1..={MAX_BATCH})", tokens.len(), caches.len())));
        }
        for c in caches.iter_mut() {
            c.make_room_for_one()?;
            if !c.fits_one_in_place() {
                return Err(ModelError::Input("a KV cache with layers of different lengths cannot take a decode step".into()));
            }
        }
        let to_u32 = |v: i64| u32::try_from(v).map_err(|_| ModelError::Input(format!("decode position {v} out of range")));
        let held: Vec<usize> = caches.iter().map(|c| c.len()).collect();
        let mut words = tokens.to_vec();
        for &n in &held {
            words.push(to_u32(n as i64)?);
        }
        for c in caches.iter() {
            words.push(to_u32(c.len() as i64 + c.rope_delta)?);
        }
        words.resize(header_words(caches.len()), 0);
        for layer in 0..p.num_layers {
            let buffers = caches
                .iter()
                .map(|c| c.layer_buffers(layer).ok_or_else(|| ModelError::Input(format!("KV cache layer {layer} is empty"))))
                .collect::<Result<Vec<_>>>()?;
            words.extend(kv_table(&buffers, p.num_kv_heads, p.head_dim)?);
        }
        let max_len = held.iter().max().copied().unwrap_or(0) + 1;
        let splits = decode_splits(p.num_kv_heads, caches.len(), max_len);
        Ok(StepData { words, batch: caches.len(), held, splits, layers: p.num_layers })
    }

    /// Words before the KV tables in [`Inputs`]: 3 per sequence, padded to 16 bytes (the kernel
    /// reads the tables' 8-byte addresses, which must be aligned: abi.h's SP_STEP_ALIGN_WORDS).
    fn header_words(b: usize) -> usize {
        (3 * b).next_multiple_of(STEP_ALIGN_WORDS)
    }

    fn cuda_err(e: candle_core::cuda_backend::cudarc::driver::DriverError) -> ModelError {
        ModelError::Candle(candle_core::Error::Msg(format!("CUDA: {e:?}")))
    }
}
