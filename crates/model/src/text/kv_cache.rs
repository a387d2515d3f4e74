//! The KV cache: keys and values of one sequence per layer, in buffers that grow in place and
//! are shared copy-on-write between clones (the engine's prefix cache keeps clones). The caller
//! (the engine) owns each cache and passes it as `&mut` to every pass; the model never keeps one.

use std::sync::Arc;

use candle_core::Tensor;

use crate::error::{ModelError, Result};
use crate::kernels::KvTarget;
use crate::ops::Ops;

/// Keys and values of one sequence, per layer, plus what decoding needs to continue it.
/// Owned by the caller (the engine) and passed as `&mut`; the weights stay shared.
///
/// Each layer's keys and values live in buffers with room to spare, (b, kv_heads, capacity,
/// head_dim), written in place as tokens arrive (no concatenation per step); the buffers grow by
/// half when full. Clones share the buffers (the engine's prefix cache keeps clones): a cache
/// about to write into a buffer that another clone still holds copies it first (copy on write),
/// so no clone ever sees another's tokens.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    pub(super) len: usize,
    /// MRoPE offset of the next token: its position is `len + rope_delta` on all three axes.
    pub rope_delta: i64,
}

/// One layer: its buffers (maybe shared with clones) and how many of their tokens are ours.
#[derive(Debug, Clone)]
struct LayerKv {
    buf: Arc<KvBuffers>,
    filled: usize,
}

/// (b, kv_heads, capacity, head_dim) keys and values.
#[derive(Debug)]
struct KvBuffers {
    k: Tensor,
    v: Tensor,
}

impl KvBuffers {
    fn capacity(&self) -> usize {
        self.k.dim(2).unwrap_or(0)
    }

    /// Zeroed buffers shaped like `like` (b, kv_heads, _, head_dim) with room for `cap` tokens,
    /// holding a copy of the first `keep` tokens of `from`.
    fn with_capacity(like: &Tensor, cap: usize, from: Option<&KvBuffers>, keep: usize) -> Result<Self> {
        let (b, h, _, d) = like.dims4()?;
        let (k, v) = if like.device().is_cuda() {
            // SAFETY: rows past a layer's `filled` are never read (attention gets `narrow`ed views,
            // the decode kernels each sequence's length), and every row is written before it
            // counts as filled; skipping the fill saves a memset of the whole capacity per layer.
            unsafe {
                (Tensor::empty((b, h, cap, d), like.dtype(), like.device())?, Tensor::empty((b, h, cap, d), like.dtype(), like.device())?)
            }
        } else {
            (Tensor::zeros((b, h, cap, d), like.dtype(), like.device())?, Tensor::zeros((b, h, cap, d), like.dtype(), like.device())?)
        };
        if let (Some(old), true) = (from, keep > 0) {
            k.slice_set(&old.k.narrow(2, 0, keep)?.contiguous()?, 2, 0)?;
            v.slice_set(&old.v.narrow(2, 0, keep)?.contiguous()?, 2, 0)?;
        }
        Ok(Self { k, v })
    }
}

/// Room for `needed` tokens and then some: half again, at least 256 more, in steps of 256.
fn grown_capacity(needed: usize, current: usize) -> usize {
    needed.max(current + current / 2).saturating_add(256).next_multiple_of(256)
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers], len: 0, rope_delta: 0 }
    }

    /// Number of tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything (a new conversation).
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
        self.rope_delta = 0;
    }

    /// Keeps the first `len` tokens (for reusing a shared prefix). Buffers stay; later tokens
    /// are overwritten (after a copy, if a clone shares the buffers).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        self.forget_after(len);
        self.len = len;
        Ok(())
    }

    /// Drops keys and values past `len` in every layer: what a pass that failed midway wrote
    /// before `len` was advanced.
    pub(super) fn rollback(&mut self) {
        self.forget_after(self.len);
    }

    /// Marks every layer as holding at most `len` tokens (the data stays until overwritten).
    fn forget_after(&mut self, len: usize) {
        for slot in self.layers.iter_mut() {
            if len == 0 {
                *slot = None;
            } else if let Some(l) = slot {
                l.filled = l.filled.min(len);
            }
        }
    }

    /// Bytes held on the device (the buffers' capacity, shared ones counted in full).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|l| (l.buf.k.elem_count() + l.buf.v.elem_count()) * l.buf.k.dtype().size_in_bytes())
            .sum()
    }

    /// Makes room for one more token in every layer that holds some (like [`Self::append`]
    /// would: buffers a clone shares are copied, full ones grow), for a kernel to write row
    /// `filled` itself; [`Self::commit_one`] then counts the token.
    #[cfg(any(feature = "cuda", test))]
    pub(crate) fn make_room_for_one(&mut self) -> Result<()> {
        if self.fits_one_in_place() {
            return Ok(());
        }
        for layer in 0..self.layers.len() {
            let Some(Some(l)) = self.layers.get(layer) else { continue };
            let (filled, like) = (l.filled, l.buf.k.narrow(2, 0, 1)?);
            self.writable(layer, &like, filled + 1)?;
        }
        Ok(())
    }

    /// Counts the token a kernel wrote at row `filled` of `layer` (after [`Self::make_room_for_one`]).
    pub(crate) fn commit_one(&mut self, layer: usize) {
        if let Some(Some(l)) = self.layers.get_mut(layer) {
            l.filled += 1;
        }
    }

    /// Whether one more token fits every layer where it is: each layer holds `len` tokens in
    /// buffers no clone shares, with room for another (what a decode kernel writing the new row
    /// itself relies on).
    #[cfg(any(feature = "cuda", test))]
    pub(crate) fn fits_one_in_place(&self) -> bool {
        self.len > 0
            && self.layers.iter().all(|l| {
                l.as_ref().is_some_and(|l| {
                    l.filled == self.len && Arc::strong_count(&l.buf) == 1 && l.buf.capacity() > l.filled
                })
            })
    }

    /// The key and value buffers of `layer` (whole capacity), if it holds any.
    #[cfg(any(feature = "cuda", test))]
    pub(crate) fn layer_buffers(&self, layer: usize) -> Option<(&Tensor, &Tensor)> {
        self.layers.get(layer)?.as_ref().map(|l| (&l.buf.k, &l.buf.v))
    }

    /// Counts one token that a replayed pass wrote into every layer (after
    /// [`Self::fits_one_in_place`] held).
    #[cfg(any(feature = "cuda", test))]
    pub(crate) fn commit_all(&mut self) {
        self.layers.iter_mut().flatten().for_each(|l| l.filled += 1);
        self.len += 1;
    }

    /// `layer` with buffers of its own (shaped like `like`: (b, kv_heads, _, head_dim)) and room
    /// for `needed` tokens. Buffers a clone still holds are copied first, keeping their capacity;
    /// full ones grow. Never writes into a buffer another cache can see.
    fn writable(&mut self, layer: usize, like: &Tensor, needed: usize) -> Result<&mut LayerKv> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| ModelError::Input(format!("KV cache has no layer {layer}")))?;
        let filled = slot.as_ref().map_or(0, |l| l.filled);
        let fits = slot.as_ref().is_some_and(|l| l.buf.capacity() >= needed && l.buf.k.dims()[..2] == like.dims()[..2]);
        let unique = slot.as_mut().is_some_and(|l| Arc::get_mut(&mut l.buf).is_some());
        if fits && unique {
            return slot.as_mut().ok_or_else(|| ModelError::Input(format!("KV cache layer {layer} is empty")));
        }
        let old = slot.as_ref().map(|l| l.buf.as_ref());
        let current = old.map_or(0, KvBuffers::capacity);
        let cap = if fits { current } else { grown_capacity(needed, current) };
        let buf = Arc::new(KvBuffers::with_capacity(like, cap, old, filled)?);
        Ok(slot.insert(LayerKv { buf, filled }))
    }

    /// Writes `k`, `v` (b, kv_heads, s, head_dim) after the layer's tokens; returns views of all
    /// of its keys and values so far.
    pub(super) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor, ops: &Ops) -> Result<(Tensor, Tensor)> {
        let filled = self.layers.get(layer).and_then(Option::as_ref).map_or(0, |l| l.filled);
        let needed = filled + k.dim(2)?;
        let l = self.writable(layer, k, needed)?;
        ops.kv_write(&l.buf.k, k, filled)?;
        ops.kv_write(&l.buf.v, v, filled)?;
        l.filled = needed;
        Ok((l.buf.k.narrow(2, 0, needed)?, l.buf.v.narrow(2, 0, needed)?))
    }

    /// [`Self::append`] done by `write`, which gets the layer's buffers and the row to write
    /// from, writes `like`'s tokens (b, kv_heads, s, head_dim) there and returns what it computed
    /// with them; `None` from it means it wrote nothing (nothing is counted). Returns that result
    /// and views of all of the layer's keys and values.
    pub(crate) fn append_with(
        &mut self,
        layer: usize,
        like: &Tensor,
        write: impl FnOnce(KvTarget) -> Result<Option<Tensor>>,
    ) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        let filled = self.layers.get(layer).and_then(Option::as_ref).map_or(0, |l| l.filled);
        let needed = filled + like.dim(2)?;
        let l = self.writable(layer, like, needed)?;
        let Some(out) = write(KvTarget { k: &l.buf.k, v: &l.buf.v, offset: filled })? else { return Ok(None) };
        l.filled = needed;
        Ok(Some((out, l.buf.k.narrow(2, 0, needed)?, l.buf.v.narrow(2, 0, needed)?)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    fn ops() -> Ops {
        Ops::new(&Device::Cpu, crate::ops::KernelConfig::default())
    }

    fn tokens(from: usize, n: usize) -> (Tensor, Tensor) {
        let k = Tensor::arange(from as f32, (from + n) as f32, &Device::Cpu).unwrap().reshape((1, 1, n, 1)).unwrap();
        let k = k.broadcast_as((1, 2, n, 4)).unwrap().contiguous().unwrap();
        (k.clone(), (k * -1.0).unwrap())
    }

    fn keys(c: &mut KvCache, layer: usize) -> Vec<f32> {
        let l = c.layers[layer].as_ref().unwrap();
        let (k, v) = (l.buf.k.narrow(2, 0, l.filled).unwrap(), l.buf.v.narrow(2, 0, l.filled).unwrap());
        let ks: Vec<f32> = k.i((0, 1, .., 0)).unwrap().to_vec1().unwrap();
        let vs: Vec<f32> = v.i((0, 0, .., 3)).unwrap().to_vec1().unwrap();
        assert_eq!(ks.iter().map(|x| -x).collect::<Vec<_>>(), vs);
        ks
    }

    #[test]
    fn kv_cache_grows_in_place_and_keeps_every_token() {
        let mut c = KvCache::new(1);
        let mut expect = Vec::new();
        for (from, n) in [(0, 5), (5, 1), (6, 300), (306, 1), (307, 500)] {
            let (k, v) = tokens(from, n);
            let (ak, _) = c.append(0, &k, &v, &ops()).unwrap();
            expect.extend((from..from + n).map(|x| x as f32));
            assert_eq!(ak.dim(2).unwrap(), expect.len());
        }
        assert_eq!(keys(&mut c, 0), expect);
        let cap = c.layers[0].as_ref().unwrap().buf.capacity();
        assert!(cap >= 807 && cap % 256 == 0, "capacity {cap}");
        assert_eq!(c.bytes(), 2 * 2 * cap * 4 * 4);
    }

    #[test]
    fn kv_cache_clones_never_see_each_others_tokens() {
        let mut a = KvCache::new(1);
        let (k, v) = tokens(0, 10);
        a.append(0, &k, &v, &ops()).unwrap();
        a.len = 10;
        // A prefix-cache style clone, truncated and continued with other tokens.
        let mut b = a.clone();
        b.truncate(4).unwrap();
        let (k, v) = tokens(100, 3);
        b.append(0, &k, &v, &ops()).unwrap();
        assert_eq!(keys(&mut b, 0), [0., 1., 2., 3., 100., 101., 102.]);
        assert_eq!(keys(&mut a, 0), (0..10).map(|x| x as f32).collect::<Vec<_>>());
        // The original continues too, and the clone is unaffected.
        let (k, v) = tokens(50, 1);
        a.append(0, &k, &v, &ops()).unwrap();
        assert_eq!(keys(&mut b, 0), [0., 1., 2., 3., 100., 101., 102.]);
        // Truncating to nothing drops the buffers; bytes follow.
        let before = a.bytes();
        a.truncate(0).unwrap();
        assert!(before > 0);
        assert_eq!(a.bytes(), 0);
    }

    #[test]
    fn in_place_decode_needs_own_buffers_with_room_in_every_layer() {
        let mut c = KvCache::new(2);
        assert!(!c.fits_one_in_place(), "an empty cache has no buffers to write into");
        let (k, v) = tokens(0, 255);
        c.append(0, &k, &v, &ops()).unwrap();
        assert!(!c.fits_one_in_place(), "layer 1 is empty");
        c.append(1, &k, &v, &ops()).unwrap();
        c.len = 255;
        assert!(c.fits_one_in_place());
        let ids = |c: &KvCache| (0..2).map(|l| c.layer_buffers(l).map(|(k, v)| (k.id(), v.id()))).collect::<Vec<_>>();
        let before = ids(&c);
        // A clone shares the buffers: writing would need a copy first.
        let shared = c.clone();
        assert!(!c.fits_one_in_place());
        drop(shared);
        assert!(c.fits_one_in_place());
        // A replayed pass wrote the next row everywhere: counting it advances every layer.
        c.commit_all();
        assert_eq!(c.len(), 256);
        assert!(c.layers.iter().flatten().all(|l| l.filled == 256));
        assert!(c.fits_one_in_place());
        // ... until the buffers are full.
        let cap = c.layers[0].as_ref().unwrap().buf.capacity();
        c.layers.iter_mut().flatten().for_each(|l| l.filled = cap - 1);
        c.len = cap - 1;
        assert!(c.fits_one_in_place());
        c.commit_all();
        assert!(!c.fits_one_in_place(), "no room left for another token");
        // The buffers did not move (what a recorded graph relies on).
        assert_eq!(before, ids(&c));
        // A layer that lags behind the cache's length (a failed pass) is not in place either.
        c.truncate(100).unwrap();
        assert!(c.fits_one_in_place());
        c.layers[1].as_mut().unwrap().filled = 99;
        assert!(!c.fits_one_in_place());
    }

    #[test]
    fn reserving_a_row_copies_shared_buffers_and_commit_counts_it() {
        let mut a = KvCache::new(1);
        let (k, v) = tokens(0, 3);
        a.append(0, &k, &v, &ops()).unwrap();
        a.len = 3;
        let b = a.clone();
        assert!(!a.fits_one_in_place());
        a.make_room_for_one().unwrap();
        assert!(a.fits_one_in_place());
        // `a` now has its own buffers: writing row 3 there leaves `b` alone.
        let (ka, va) = a.layer_buffers(0).unwrap();
        ka.slice_set(&Tensor::full(9f32, (1, 2, 1, 4), &Device::Cpu).unwrap(), 2, 3).unwrap();
        va.slice_set(&Tensor::full(-9f32, (1, 2, 1, 4), &Device::Cpu).unwrap(), 2, 3).unwrap();
        a.commit_one(0);
        assert_eq!(keys(&mut a, 0), [0., 1., 2., 9.]);
        assert_eq!(keys(&mut b.clone(), 0), [0., 1., 2.]);
        let row3 = b.layers[0].as_ref().unwrap().buf.k.narrow(2, 3, 1).unwrap();
        assert_eq!(row3.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [0f32; 8], "the clone's buffer was written");
        // A full buffer grows, keeping its tokens; an empty layer stays empty.
        let mut full = KvCache::new(2);
        let (k, v) = tokens(0, 256);
        full.append(0, &k, &v, &ops()).unwrap();
        let cap = full.layers[0].as_ref().unwrap().buf.capacity();
        let (k, v) = tokens(256, cap - 256);
        full.append(0, &k, &v, &ops()).unwrap();
        full.make_room_for_one().unwrap();
        assert!(full.layer_buffers(0).unwrap().0.dim(2).unwrap() > cap);
        assert_eq!(keys(&mut full, 0), (0..cap).map(|x| x as f32).collect::<Vec<_>>());
        assert!(full.layer_buffers(1).is_none());
    }

    #[test]
    fn rollback_drops_keys_past_the_committed_length() {
        let dev = Device::Cpu;
        let mut c = KvCache::new(2);
        let kv = |n: usize| Tensor::zeros((1, 2, n, 4), candle_core::DType::F32, &dev).unwrap();
        c.append(0, &kv(3), &kv(3), &ops()).unwrap();
        c.append(1, &kv(3), &kv(3), &ops()).unwrap();
        c.len = 3;
        c.append(0, &kv(1), &kv(1), &ops()).unwrap();
        c.rollback();
        let lens: Vec<usize> = c.layers.iter().flatten().map(|l| l.filled).collect();
        assert_eq!(lens, [3, 3]);
        let mut empty = KvCache::new(1);
        empty.append(0, &kv(1), &kv(1), &ops()).unwrap();
        empty.rollback();
        assert!(empty.layers[0].is_none());
    }
}
