//! Decode steps on CUDA replayed as CUDA graphs.
//!
//! A decode step of the 2B model is ~290 small kernels; launched one by one from the host, the
//! launches (not the GPU) set the pace. A CUDA graph records the step once and replays it with
//! one launch. That needs a step whose every input sits at a fixed device address:
//! - the token ids and, per sequence, the tokens held and the rope position are uploaded into
//!   small buffers before each replay ([`TextModel::forward_decode_device`] reads nothing else
//!   from the host; the kernels take lengths and positions from there);
//! - the KV cache is written in place (see [`KvCache::fits_one_in_place`]); a graph belongs to
//!   the buffers it was recorded with (their addresses and capacities are its key) and is
//!   recorded again when a buffer grows, is copied, or the batch changes;
//! - the rope table covers positions 0.. ([`TextModel::position_table`]).
//!
//! The first step with a new key runs eagerly (the same kernels, which also fills candle's cache
//! of small parameter uploads that capture needs), the second records and runs the graph, later
//! ones replay it. The logits are copied out of the graph's buffer, so callers own what they get.
//! Should recording ever fail, the decoder says so once and decodes eagerly from then on.
//! `SCREENPILOT_CUDA_GRAPHS=0` turns graphs off (eager steps with device inputs remain).

use candle_core::Tensor;

use crate::error::Result;
use crate::text::{KvCache, TextModel};

pub(crate) use imp::DeviceDecoder;

/// CUDA device `ordinal` as ScreenPilot uses it: all work on one stream per thread, so cudarc's
/// multi-stream bookkeeping (two CUDA events made and destroyed with every tensor) is turned
/// off; it costs host time on each of the step's ~290 allocations and buys nothing here.
pub fn cuda_device(ordinal: usize) -> candle_core::Result<candle_core::Device> {
    let dev = candle_core::Device::new_cuda(ordinal)?;
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(d) = &dev {
        // SAFETY: no tensor exists on this device yet, and ScreenPilot never creates a second
        // stream, which is when cudarc's events would order work between streams.
        unsafe { d.disable_event_tracking() };
    }
    Ok(dev)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;

    /// Without CUDA there is no device decoder: `DeviceDecoder::new` is never `Some`.
    pub(crate) enum DeviceDecoder {}

    impl DeviceDecoder {
        pub(crate) fn new(_: &candle_core::Device, _: candle_core::DType) -> Option<Self> {
            None
        }

        pub(crate) fn decode(&self, _: &TextModel, _: &[u32], _: &mut [&mut KvCache]) -> Result<Tensor> {
            match *self {}
        }
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use std::sync::Mutex;

    use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph};
    use candle_core::{CudaDevice, DType, Device};

    use super::*;
    use crate::error::ModelError;
    use crate::kernels::{address, upload_u32, usable};

    /// Decode steps with device inputs on one CUDA device, replayed as graphs where possible.
    pub(crate) struct DeviceDecoder {
        dev: CudaDevice,
        graphs: bool,
        state: Mutex<State>,
    }

    #[derive(Default)]
    struct State {
        captured: Option<Captured>,
        /// The key of the last eager step: the next step with the same key is recorded.
        last: Option<Key>,
        /// Recording failed once: eager steps from then on.
        broken: bool,
    }

    /// What a graph was recorded with: the batch size, the rope table and every layer's KV
    /// buffers (addresses and capacity) of every sequence, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Key {
        table: u64,
        buffers: Vec<Vec<(u64, u64, usize)>>,
    }

    impl Key {
        fn new(table: &Tensor, caches: &[&mut KvCache]) -> Result<Self> {
            let buffers = caches
                .iter()
                .map(|c| c.buffers().map(|(k, v)| Ok((address(k)?, address(v)?, k.dim(2)?))).collect::<Result<Vec<_>>>())
                .collect::<Result<Vec<_>>>()?;
            Ok(Self { table: address(table)?, buffers })
        }
    }

    /// A recorded step and the buffers it reads and writes.
    struct Captured {
        key: Key,
        graph: Graph,
        ids: Tensor,
        step: Tensor,
        logits: Tensor,
    }

    struct Graph(CudaGraph);

    // SAFETY: CUDA requires that a graph is not used from two threads at once; it is only touched
    // with the decoder's mutex held.
    unsafe impl Send for Graph {}

    /// The inputs of one step as the host knows them.
    struct StepData {
        ids: Vec<u32>,
        /// [tokens held per sequence; rope position per sequence].
        step: Vec<u32>,
        held: Vec<usize>,
    }

    impl DeviceDecoder {
        /// A decoder for `dev` when our kernels serve it (CUDA, bf16, kernels not turned off).
        pub(crate) fn new(dev: &Device, dtype: DType) -> Option<Self> {
            let dev = usable(dev, dtype, false)?;
            let graphs = std::env::var("SCREENPILOT_CUDA_GRAPHS").map_or(true, |v| v != "0");
            Some(Self { dev, graphs, state: Mutex::new(State::default()) })
        }

        /// One token for each cache (`tokens[i]` to `caches[i]`); returns the logits (batch,
        /// vocab) f32. The caller checked the lengths against the context. Errors leave every
        /// cache as it was.
        pub(crate) fn decode(&self, text: &TextModel, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
            let data = step_data(tokens, caches)?;
            let max_pos = data.step[caches.len()..].iter().copied().max().unwrap_or(0) as usize;
            let device = Device::Cuda(self.dev.clone());
            let table = text.position_table(max_pos + 1, DType::BF16, &device)?;
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let graphable = self.graphs
                && !state.broken
                && !crate::profile::on()
                && caches.len() <= crate::kernels::MAX_BATCH
                && caches.iter().all(|c| c.fits_one_in_place());
            let key = if graphable { Some(Key::new(&table, caches)?) } else { None };
            if let (Some(key), Some(c)) = (&key, &state.captured) {
                if c.key == *key {
                    upload_u32(&c.ids, &data.ids)?;
                    upload_u32(&c.step, &data.step)?;
                    c.graph.0.launch().map_err(cuda_err)?;
                    caches.iter_mut().for_each(|c| c.commit_all());
                    return Ok(c.logits.copy()?);
                }
            }
            if let Some(key) = key.as_ref().filter(|k| state.last.as_ref() == Some(*k)) {
                match self.record(text, &data, &table, caches, key.clone()) {
                    Ok((captured, logits)) => {
                        state.captured = Some(captured);
                        return Ok(logits);
                    }
                    Err(e) => {
                        eprintln!("screenpilot: CUDA graph capture failed ({e}); decoding without graphs");
                        state.broken = true;
                        state.captured = None;
                        for (c, &held) in caches.iter_mut().zip(&data.held) {
                            c.truncate(held)?;
                        }
                    }
                }
            }
            state.last = key;
            drop(state);
            let _cache = self.dev.enable_cuda_graph_htod_cache();
            let (ids, step) = self.inputs(&data)?;
            let hidden = text.forward_decode_device(&ids, &step, &table, caches)?;
            text.logits(&hidden.squeeze(1)?)
        }

        /// Fresh device buffers holding the step's inputs.
        fn inputs(&self, data: &StepData) -> Result<(Tensor, Tensor)> {
            let dev = Device::Cuda(self.dev.clone());
            let ids = Tensor::zeros(data.ids.len(), DType::U32, &dev)?;
            let step = Tensor::zeros((2, data.ids.len()), DType::U32, &dev)?;
            upload_u32(&ids, &data.ids)?;
            upload_u32(&step, &data.step)?;
            Ok((ids, step))
        }

        /// Records the step as a graph and runs it once; returns the graph and this step's logits.
        /// On an error the caches may count the token (recording advances them): the caller
        /// truncates them.
        fn record(&self, text: &TextModel, data: &StepData, table: &Tensor, caches: &mut [&mut KvCache], key: Key) -> Result<(Captured, Tensor)> {
            let (ids, step) = self.inputs(data)?;
            let vocab = text.params().vocab_size;
            let logits = Tensor::zeros((data.ids.len(), vocab), DType::F32, &Device::Cuda(self.dev.clone()))?;
            let stream = self.dev.cuda_stream();
            let _cache = self.dev.enable_cuda_graph_htod_cache();
            stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(cuda_err)?;
            // Everything the pass allocates is freed inside it, so the graph owns no memory
            // between replays; only `logits`, made before, holds the result.
            let recorded = (|| -> Result<()> {
                let hidden = text.forward_decode_device(&ids, &step, table, caches)?;
                let out = text.logits(&hidden.squeeze(1)?)?;
                logits.slice_set(&out, 0, 0)?;
                Ok(())
            })();
            let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0)).map_err(cuda_err);
            recorded?;
            let graph = graph?.ok_or_else(|| ModelError::Input("CUDA graph capture recorded nothing".into()))?;
            graph.launch().map_err(cuda_err)?;
            let out = logits.copy()?;
            Ok((Captured { key, graph: Graph(graph), ids, step, logits }, out))
        }
    }

    fn step_data(tokens: &[u32], caches: &[&mut KvCache]) -> Result<StepData> {
        let to_u32 = |v: i64| u32::try_from(v).map_err(|_| ModelError::Input(format!("decode position {v} out of range")));
        let held: Vec<usize> = caches.iter().map(|c| c.len()).collect();
        let mut step = held.iter().map(|&n| to_u32(n as i64)).collect::<Result<Vec<_>>>()?;
        for c in caches {
            step.push(to_u32(c.len() as i64 + c.rope_delta)?);
        }
        Ok(StepData { ids: tokens.to_vec(), step, held })
    }

    fn cuda_err(e: candle_core::cuda_backend::cudarc::driver::DriverError) -> ModelError {
        ModelError::Candle(candle_core::Error::Msg(format!("CUDA: {e:?}")))
    }
}
