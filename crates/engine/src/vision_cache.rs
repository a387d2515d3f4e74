//! The vision-feature cache: the vision tower's output for one image (merged embeddings and
//! DeepStack features, kept on the model's device), keyed by a hash of the preprocessed pixels
//! and the patch grid, under a byte budget with least-recently-used eviction.

use std::collections::HashMap;

use screenpilot_model::{PreprocessedImage, VisionOutput};
use serde::Serialize;
use xxhash_rust::xxh3::Xxh3;

/// Identity of a preprocessed image: a 128-bit xxh3 of its grid, patch size, frames, 8-bit
/// pixels and normalisation table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageKey(pub u128);

impl ImageKey {
    pub fn of(img: &PreprocessedImage) -> Self {
        let mut h = Xxh3::new();
        for v in [img.grid.t, img.grid.h, img.grid.w, img.patch_dim, img.temporal, img.merge, img.frames, img.rgb.len()] {
            h.update(&(v as u64).to_le_bytes());
        }
        // The normalisation too: the same 8-bit pixels under another mean/std are another input.
        for table in &img.lut {
            for x in table {
                h.update(&x.to_le_bytes());
            }
        }
        h.update(&img.rgb);
        ImageKey(h.digest128())
    }
}

/// Counters of a cache since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: usize,
    pub bytes: usize,
    pub budget_bytes: usize,
}

struct Entry {
    value: VisionOutput,
    bytes: usize,
    last_used: u64,
}

/// Bytes a vision output holds on its device.
pub fn vision_bytes(v: &VisionOutput) -> usize {
    let elems = v.embeds.elem_count() + v.deepstack.iter().map(|t| t.elem_count()).sum::<usize>();
    elems * v.embeds.dtype().size_in_bytes()
}

pub struct VisionCache {
    map: HashMap<ImageKey, Entry>,
    tick: u64,
    stats: CacheStats,
}

impl VisionCache {
    /// A cache holding at most `budget_bytes` (0 disables it).
    pub fn new(budget_bytes: usize) -> Self {
        Self { map: HashMap::new(), tick: 0, stats: CacheStats { budget_bytes, ..Default::default() } }
    }

    pub fn enabled(&self) -> bool {
        self.stats.budget_bytes > 0
    }

    /// The features of an image, counting a hit or a miss.
    pub fn get(&mut self, key: &ImageKey) -> Option<VisionOutput> {
        if !self.enabled() {
            return None;
        }
        self.tick += 1;
        match self.map.get_mut(key) {
            Some(e) => {
                e.last_used = self.tick;
                self.stats.hits += 1;
                Some(e.value.clone())
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Stores the features of an image, evicting the least recently used until it fits.
    /// A value larger than the whole budget is not stored.
    pub fn insert(&mut self, key: ImageKey, value: VisionOutput) {
        let bytes = vision_bytes(&value);
        if bytes > self.stats.budget_bytes {
            return;
        }
        self.tick += 1;
        if let Some(old) = self.map.remove(&key) {
            self.stats.bytes -= old.bytes;
        }
        while self.stats.bytes + bytes > self.stats.budget_bytes {
            let Some(victim) = self.map.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| *k) else { break };
            if let Some(e) = self.map.remove(&victim) {
                self.stats.bytes -= e.bytes;
                self.stats.evictions += 1;
            }
        }
        self.stats.bytes += bytes;
        self.map.insert(key, Entry { value, bytes, last_used: self.tick });
        self.stats.entries = self.map.len();
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats { entries: self.map.len(), ..self.stats }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use screenpilot_model::{Device, GridThw, Tensor};

    fn output(rows: usize) -> VisionOutput {
        let t = Tensor::zeros((rows, 4), screenpilot_model::DType::F32, &Device::Cpu).unwrap();
        VisionOutput { embeds: t.clone(), deepstack: vec![t] }
    }

    #[test]
    fn least_recently_used_entry_is_evicted_when_the_budget_is_exceeded() {
        // each entry: 2 tensors x rows x 4 floats x 4 bytes = 32 * rows bytes
        let mut c = VisionCache::new(3 * 64);
        for k in 0..3 {
            c.insert(ImageKey(k), output(2));
        }
        assert!(c.get(&ImageKey(0)).is_some()); // 0 is now more recent than 1
        c.insert(ImageKey(3), output(2));
        assert!(c.get(&ImageKey(1)).is_none(), "1 was the least recently used");
        assert!(c.get(&ImageKey(0)).is_some());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.evictions, s.entries, s.bytes), (2, 1, 1, 3, 192));
    }

    #[test]
    fn values_larger_than_the_budget_are_not_stored_and_zero_budget_disables() {
        let mut c = VisionCache::new(32);
        c.insert(ImageKey(1), output(2));
        assert!(c.get(&ImageKey(1)).is_none());
        let mut off = VisionCache::new(0);
        off.insert(ImageKey(1), output(1));
        assert!(off.get(&ImageKey(1)).is_none());
        assert_eq!(off.stats().misses, 0, "a disabled cache counts nothing");
    }

    #[test]
    fn image_key_depends_on_grid_as_well_as_pixels() {
        let img = |h, w| PreprocessedImage {
            rgb: vec![128; 12],
            frames: 1,
            lut: [[0.5; 256]; 3],
            temporal: 1,
            merge: 1,
            grid: GridThw { t: 1, h, w },
            patch_dim: 3,
            resized_width: 0,
            resized_height: 0,
            original_width: 0,
            original_height: 0,
        };
        assert_ne!(ImageKey::of(&img(2, 2)), ImageKey::of(&img(1, 4)));
        assert_eq!(ImageKey::of(&img(2, 2)), ImageKey::of(&img(2, 2)));
        let mut other = img(2, 2);
        other.rgb[7] = 3;
        assert_ne!(ImageKey::of(&img(2, 2)), ImageKey::of(&other));
        let mut renormed = img(2, 2);
        renormed.lut[1][128] = 0.25;
        assert_ne!(ImageKey::of(&img(2, 2)), ImageKey::of(&renormed), "another normalisation is another input");
    }
}
