//! The prefix KV cache: KV caches of earlier sequences, indexed by their "token keys" — the
//! token ids, except that each image token is replaced by a key derived from the hash of the
//! image behind it and its index in that image. Two prompts share a prefix only if their token
//! ids and the images behind their image tokens agree, so the KV of that prefix is exactly what
//! a fresh prefill would compute. Byte budget ([`KvCache::bytes`]), least-recently-used eviction.

use screenpilot_model::KvCache;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{EngineError, Result};
use crate::vision_cache::{CacheStats, ImageKey};

/// Keys of a prompt's tokens: image and video tokens (any of `visual_tokens`) take the key of
/// (image or clip, index in it). `images` lists each image's and clip's key and token count in
/// prompt order (a clip's tokens run over several runs, one per temporal patch).
pub fn token_keys(ids: &[u32], visual_tokens: &[u32], images: &[(ImageKey, usize)]) -> Result<Vec<u64>> {
    let mut out = Vec::with_capacity(ids.len());
    let mut img = images.iter();
    let mut current: Option<(ImageKey, usize)> = None;
    let mut index = 0usize;
    for &id in ids {
        if !visual_tokens.contains(&id) {
            out.push(u64::from(id));
            continue;
        }
        if current.map(|(_, n)| index >= n).unwrap_or(true) {
            current = img.next().copied();
            index = 0;
        }
        let (key, _) = current.ok_or_else(|| {
            EngineError::InvalidRequest(
                "the prompt has more image tokens than images (is <|image_pad|> in the text?)".into(),
            )
        })?;
        let mut bytes = [0u8; 24];
        bytes[..16].copy_from_slice(&key.0.to_le_bytes());
        bytes[16..].copy_from_slice(&(index as u64).to_le_bytes());
        // The high bit keeps image keys apart from token ids (which are < 2^32).
        out.push(xxh3_64(&bytes) | (1 << 63));
        index += 1;
    }
    Ok(out)
}

/// Length of the common prefix of two key sequences.
pub fn common_prefix(a: &[u64], b: &[u64]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// What the index needs of a KV cache (a trait so the index can be tested without a model).
pub trait KvPrefix: Clone {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn bytes(&self) -> usize;
    /// Keeps the first `len` tokens.
    fn truncate(&mut self, len: usize) -> Result<()>;
}

impl KvPrefix for KvCache {
    fn len(&self) -> usize {
        KvCache::len(self)
    }
    fn bytes(&self) -> usize {
        KvCache::bytes(self)
    }
    fn truncate(&mut self, len: usize) -> Result<()> {
        Ok(KvCache::truncate(self, len)?)
    }
}

struct Entry<K> {
    keys: Vec<u64>,
    kv: K,
    bytes: usize,
    last_used: u64,
}

pub struct PrefixCache<K: KvPrefix = KvCache> {
    entries: Vec<Entry<K>>,
    tick: u64,
    stats: CacheStats,
    reused_tokens: u64,
}

impl<K: KvPrefix> PrefixCache<K> {
    /// An index holding at most `budget_bytes` of KV (0 disables it).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            entries: Vec::new(),
            tick: 0,
            stats: CacheStats { budget_bytes, ..Default::default() },
            reused_tokens: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.stats.budget_bytes > 0
    }

    /// A KV cache holding the longest stored prefix of `keys`, at most `max_len` tokens long
    /// (a prefill needs at least one new token). None when nothing is shared.
    pub fn lookup(&mut self, keys: &[u64], max_len: usize) -> Result<Option<K>> {
        if !self.enabled() {
            return Ok(None);
        }
        self.tick += 1;
        let best = self
            .entries
            .iter_mut()
            .map(|e| (common_prefix(&e.keys, keys).min(max_len), e))
            .max_by_key(|(n, e)| (*n, e.last_used));
        match best {
            Some((n, e)) if n > 0 => {
                e.last_used = self.tick;
                let mut kv = e.kv.clone();
                kv.truncate(n)?;
                self.stats.hits += 1;
                self.reused_tokens += n as u64;
                Ok(Some(kv))
            }
            _ => {
                self.stats.misses += 1;
                Ok(None)
            }
        }
    }

    /// Stores the KV of a sequence whose tokens have `keys` (one per cached token). Entries
    /// that are a prefix of it are dropped (it covers them); if it is itself a prefix of an
    /// entry, nothing is stored. A sequence bigger than the whole budget (a long rewind, say) is
    /// kept alone, every other entry evicted: the cache then holds no more than the sequence
    /// just held, and a follow-up question about it costs only its own tokens.
    pub fn insert(&mut self, keys: Vec<u64>, kv: K) {
        let bytes = kv.bytes();
        if !self.enabled() || keys.is_empty() || keys.len() != kv.len() {
            return;
        }
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.entries.iter_mut().find(|e| e.keys.len() >= keys.len() && e.keys.starts_with(&keys)) {
            e.last_used = tick;
            return;
        }
        self.entries.retain(|e| !keys.starts_with(&e.keys));
        self.stats.bytes = self.entries.iter().map(|e| e.bytes).sum();
        while self.stats.bytes + bytes > self.stats.budget_bytes && !self.entries.is_empty() {
            let Some(i) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.last_used).map(|(i, _)| i) else {
                break;
            };
            let e = self.entries.swap_remove(i);
            self.stats.bytes -= e.bytes;
            self.stats.evictions += 1;
        }
        self.stats.bytes += bytes;
        self.entries.push(Entry { keys, kv, bytes, last_used: tick });
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats { entries: self.entries.len(), ..self.stats }
    }

    /// Prompt tokens whose prefill was skipped thanks to this cache.
    pub fn reused_tokens(&self) -> u64 {
        self.reused_tokens
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const IMG: u32 = 9;

    /// A stand-in KV cache of `n` tokens, 16 bytes a token.
    #[derive(Clone)]
    struct Fake(usize);

    impl KvPrefix for Fake {
        fn len(&self) -> usize {
            self.0
        }
        fn bytes(&self) -> usize {
            16 * self.0
        }
        fn truncate(&mut self, len: usize) -> Result<()> {
            self.0 = self.0.min(len);
            Ok(())
        }
    }

    fn kv(n: usize) -> Fake {
        Fake(n)
    }

    #[test]
    fn image_tokens_are_keyed_by_the_image_behind_them() {
        let (a, b) = (ImageKey(1), ImageKey(2));
        let ids = [1, IMG, IMG, 2, IMG, IMG, 3];
        let ab = token_keys(&ids, &[IMG], &[(a, 2), (b, 2)]).unwrap();
        let ba = token_keys(&ids, &[IMG], &[(b, 2), (a, 2)]).unwrap();
        assert_eq!(common_prefix(&ab, &ba), 1, "swapped images share only the first text token");
        assert_eq!(ab[0], 1);
        assert_ne!(ab[1], ab[2], "tokens of one image differ by index");
        assert_eq!(ab[1], ba[4], "the same image gives the same keys wherever it is");
        assert!(token_keys(&ids, &[IMG], &[(a, 2)]).is_err());
    }

    #[test]
    fn lookup_returns_the_longest_shared_prefix_capped_below_the_prompt() {
        let mut c = PrefixCache::<Fake>::new(1 << 20);
        c.insert(vec![1, 2, 3, 4], kv(4));
        c.insert(vec![1, 2, 7], kv(3));
        assert_eq!(c.lookup(&[1, 2, 3, 9], 3).unwrap().unwrap().len(), 3);
        assert_eq!(c.lookup(&[1, 2, 3, 4], 3).unwrap().unwrap().len(), 3, "capped by max_len");
        assert_eq!(c.lookup(&[1, 2, 7, 7], 3).unwrap().unwrap().len(), 3);
        assert!(c.lookup(&[5, 1, 2], 2).unwrap().is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (3, 1));
        assert_eq!(c.reused_tokens(), 9);
    }

    #[test]
    fn entries_covered_by_a_longer_one_are_replaced_and_lru_is_evicted() {
        let mut c = PrefixCache::<Fake>::new(16 * 10);
        c.insert(vec![1, 2], kv(2));
        c.insert(vec![1, 2, 3], kv(3));
        assert_eq!(c.stats().entries, 1, "[1,2] is covered by [1,2,3]");
        c.insert(vec![1, 2], kv(2));
        assert_eq!(c.stats().entries, 1, "a prefix of a stored entry adds nothing");
        c.insert(vec![5, 6, 7], kv(3));
        c.lookup(&[1, 2, 3, 0], 3).unwrap(); // [1,2,3] is now the most recent
        c.insert(vec![8, 8, 8, 8, 8], kv(5)); // needs 80 bytes: 48 + 48 + 80 > 160
        assert!(c.lookup(&[5, 6, 7, 0], 3).unwrap().is_none(), "[5,6,7] was least recently used");
        assert!(c.lookup(&[1, 2, 3, 0], 3).unwrap().is_some());
        assert_eq!(c.stats().evictions, 1);
        assert!(c.stats().bytes <= 160);
    }

    #[test]
    fn a_sequence_bigger_than_the_budget_is_kept_alone() {
        let mut c = PrefixCache::<Fake>::new(16 * 10);
        c.insert(vec![1, 2], kv(2));
        c.insert(vec![3, 4], kv(2));
        c.insert((0..20).collect(), kv(20)); // 320 bytes, twice the budget
        let s = c.stats();
        assert_eq!((s.entries, s.bytes, s.evictions), (1, 320, 2), "only the big one stays");
        assert_eq!(c.lookup(&(0..25).collect::<Vec<_>>(), 24).unwrap().unwrap().len(), 20);
        c.insert(vec![9, 9], kv(2));
        let s = c.stats();
        assert_eq!((s.entries, s.bytes), (1, 32), "the next sequence evicts it: the budget holds again");
    }
}
