//! Loaded models kept within a memory budget, least recently used first out.
//!
//! Weights are gigabytes: switching back to a model still in the cache must be immediate, and
//! loading a fourth model must not push the machine over its memory. Sizes are accounted from
//! tensor bytes (the [`ByteSize`] trait), not guessed from file sizes. Values are handed out as
//! `Arc`s, so an evicted pipeline still in use stays alive until its last user drops it.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Bytes of memory a cached value holds (its tensors).
pub trait ByteSize {
    /// Bytes held now.
    fn byte_size(&self) -> u64;
}

impl ByteSize for candle_core::Tensor {
    fn byte_size(&self) -> u64 {
        (self.elem_count() * self.dtype().size_in_bytes()) as u64
    }
}

impl<T: ByteSize> ByteSize for [T] {
    fn byte_size(&self) -> u64 {
        self.iter().map(ByteSize::byte_size).sum()
    }
}

impl<T: ByteSize> ByteSize for Vec<T> {
    fn byte_size(&self) -> u64 {
        self.as_slice().byte_size()
    }
}

impl<T: ByteSize> ByteSize for Option<T> {
    fn byte_size(&self) -> u64 {
        self.as_ref().map_or(0, ByteSize::byte_size)
    }
}

impl<T: ByteSize + ?Sized> ByteSize for Arc<T> {
    fn byte_size(&self) -> u64 {
        (**self).byte_size()
    }
}

impl<K, T: ByteSize, S: std::hash::BuildHasher> ByteSize for std::collections::HashMap<K, T, S> {
    fn byte_size(&self) -> u64 {
        self.values().map(ByteSize::byte_size).sum()
    }
}

/// Counters of a [`ModelCache`], for logs and the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to load.
    pub misses: u64,
    /// Values dropped to stay within budget (or freed explicitly).
    pub evictions: u64,
    /// Bytes accounted now.
    pub used_bytes: u64,
    /// The budget.
    pub budget_bytes: u64,
    /// Values held now.
    pub entries: usize,
}

struct Slot<K, V> {
    key: K,
    value: Arc<V>,
    bytes: u64,
}

/// An LRU cache of loaded values within a byte budget.
///
/// The newest value is always kept, even alone over budget (it is the one about to be used);
/// older values are evicted, least recently used first, until the total fits.
pub struct ModelCache<K, V> {
    budget_bytes: u64,
    /// Most recently used last.
    slots: VecDeque<Slot<K, V>>,
    stats: CacheStats,
}

impl<K: PartialEq + Clone + Debug, V: ByteSize> ModelCache<K, V> {
    /// An empty cache with this budget in bytes.
    pub fn new(budget_bytes: u64) -> Self {
        Self {
            budget_bytes,
            slots: VecDeque::new(),
            stats: CacheStats { budget_bytes, ..CacheStats::default() },
        }
    }

    /// Counters now.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            used_bytes: self.used_bytes(),
            entries: self.slots.len(),
            budget_bytes: self.budget_bytes,
            ..self.stats
        }
    }

    fn used_bytes(&self) -> u64 {
        self.slots.iter().map(|s| s.bytes).sum()
    }

    /// Keys from least to most recently used.
    pub fn keys(&self) -> Vec<K> {
        self.slots.iter().map(|s| s.key.clone()).collect()
    }

    /// True when `key` is held (does not count as a use).
    pub fn contains(&self, key: &K) -> bool {
        self.slots.iter().any(|s| &s.key == key)
    }

    /// The value for `key`, marking it most recently used; counts a hit or a miss.
    pub fn get(&mut self, key: &K) -> Option<Arc<V>> {
        let Some(index) = self.slots.iter().position(|s| &s.key == key) else {
            self.stats.misses += 1;
            return None;
        };
        self.stats.hits += 1;
        let slot = self.slots.remove(index)?;
        let value = Arc::clone(&slot.value);
        tracing::debug!(model = ?key, bytes = slot.bytes, "model cache hit");
        self.slots.push_back(slot);
        Some(value)
    }

    /// Adds (or replaces) `key`, then evicts least recently used values to fit the budget.
    pub fn insert(&mut self, key: K, value: V) -> Arc<V> {
        if let Some(index) = self.slots.iter().position(|s| s.key == key) {
            self.slots.remove(index);
        }
        let bytes = value.byte_size();
        let value = Arc::new(value);
        self.slots.push_back(Slot { key, value: Arc::clone(&value), bytes });
        self.evict_to_fit();
        value
    }

    /// The cached value, or `load`'s (timed, sized and logged) after making room.
    ///
    /// # Errors
    /// Whatever `load` returns; nothing is cached then.
    pub fn get_or_load<E>(
        &mut self,
        key: &K,
        load: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        if let Some(value) = self.get(key) {
            return Ok(value);
        }
        let started = Instant::now();
        let value = load()?;
        let bytes = value.byte_size();
        tracing::info!(model = ?key, bytes, secs = started.elapsed().as_secs_f64(), "model loaded");
        Ok(self.insert(key.clone(), value))
    }

    /// Re-reads `key`'s size (after a lazy part loaded) and evicts others if needed.
    pub fn refresh_size(&mut self, key: &K) {
        if let Some(slot) = self.slots.iter_mut().find(|s| &s.key == key) {
            slot.bytes = slot.value.byte_size();
        }
        self.evict_to_fit();
    }

    /// Drops every value except `keep` (the out-of-memory ladder's "free caches" rung).
    /// Returns the bytes released from the accounting.
    pub fn evict_all_except(&mut self, keep: Option<&K>) -> u64 {
        let before = self.used_bytes();
        let mut kept = VecDeque::new();
        while let Some(slot) = self.slots.pop_front() {
            if keep == Some(&slot.key) {
                kept.push_back(slot);
            } else {
                self.log_eviction(&slot, "freed on request");
            }
        }
        self.slots = kept;
        before - self.used_bytes()
    }

    fn evict_to_fit(&mut self) {
        while self.used_bytes() > self.budget_bytes && self.slots.len() > 1 {
            if let Some(slot) = self.slots.pop_front() {
                self.log_eviction(&slot, "over budget");
            }
        }
        if let Some(newest) = self.slots.back()
            && newest.bytes > self.budget_bytes
        {
            tracing::warn!(model = ?newest.key, bytes = newest.bytes, budget = self.budget_bytes, "model alone exceeds the cache budget; kept while in use");
        }
    }

    fn log_eviction(&mut self, slot: &Slot<K, V>, reason: &str) {
        self.stats.evictions += 1;
        tracing::info!(model = ?slot.key, bytes = slot.bytes, reason, "model evicted from cache");
    }
}

/// A part of a model loaded only when first needed (the img2img VAE encoder), then reused.
pub struct LazyPart<T> {
    slot: Mutex<Option<Arc<T>>>,
}

impl<T> Default for LazyPart<T> {
    fn default() -> Self {
        Self { slot: Mutex::new(None) }
    }
}

impl<T> LazyPart<T> {
    /// Not loaded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once loaded.
    pub fn is_loaded(&self) -> bool {
        self.slot.lock().is_ok_and(|slot| slot.is_some())
    }

    /// The part, loading it with `load` on first use (timed and logged).
    ///
    /// # Errors
    /// Whatever `load` returns; the next call tries again.
    pub fn get_or_load<E>(
        &self,
        what: &str,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E>
    where
        T: ByteSize,
    {
        let mut slot = match self.slot.lock() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(part) = slot.as_ref() {
            return Ok(Arc::clone(part));
        }
        let started = Instant::now();
        let part = Arc::new(load()?);
        tracing::info!(
            part = what,
            bytes = part.byte_size(),
            secs = started.elapsed().as_secs_f64(),
            "lazy model part loaded"
        );
        *slot = Some(Arc::clone(&part));
        Ok(part)
    }
}

impl<T: ByteSize> ByteSize for LazyPart<T> {
    fn byte_size(&self) -> u64 {
        self.slot.lock().map_or(0, |slot| slot.as_ref().map_or(0, ByteSize::byte_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Weights(u64);
    impl ByteSize for Weights {
        fn byte_size(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn hits_skip_the_loader_and_are_counted() {
        let mut cache: ModelCache<&str, Weights> = ModelCache::new(100);
        let loads = Cell::new(0);
        let load = |bytes| {
            loads.set(loads.get() + 1);
            Ok::<_, String>(Weights(bytes))
        };
        cache.get_or_load(&"base", || load(40)).expect("load");
        let again = cache.get_or_load(&"base", || load(40)).expect("hit");
        assert_eq!(again.0, 40);
        assert_eq!(loads.get(), 1);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.used_bytes, stats.entries), (1, 1, 40, 1));
    }

    #[test]
    fn least_recently_used_is_evicted_first() {
        let mut cache: ModelCache<&str, Weights> = ModelCache::new(100);
        cache.insert("a", Weights(40));
        cache.insert("b", Weights(40));
        assert!(cache.get(&"a").is_some(), "a is now most recent");
        cache.insert("c", Weights(40));
        assert_eq!(cache.keys(), ["a", "c"]);
        assert_eq!(cache.stats().evictions, 1);
        assert_eq!(cache.stats().used_bytes, 80);
    }

    #[test]
    fn exactly_the_budget_fits_and_one_byte_more_evicts() {
        let mut cache: ModelCache<&str, Weights> = ModelCache::new(100);
        cache.insert("a", Weights(60));
        cache.insert("b", Weights(40));
        assert_eq!(cache.keys(), ["a", "b"]);
        cache.insert("c", Weights(1));
        assert_eq!(cache.keys(), ["b", "c"]);
    }

    #[test]
    fn an_item_larger_than_the_budget_is_kept_alone() {
        let mut cache: ModelCache<&str, Weights> = ModelCache::new(100);
        cache.insert("a", Weights(30));
        cache.insert("b", Weights(30));
        let huge = cache.insert("huge", Weights(500));
        assert_eq!(huge.0, 500);
        assert_eq!(cache.keys(), ["huge"]);
        assert_eq!(cache.stats().evictions, 2);
        cache.insert("small", Weights(10));
        assert_eq!(cache.keys(), ["small"], "the oversized one goes as soon as it is not newest");
        let mut zero: ModelCache<&str, Weights> = ModelCache::new(0);
        zero.insert("x", Weights(1));
        assert!(zero.get(&"x").is_some());
    }

    #[test]
    fn evicted_values_stay_alive_for_their_users() {
        let mut cache: ModelCache<&str, Weights> = ModelCache::new(10);
        let held = cache.insert("a", Weights(10));
        cache.insert("b", Weights(10));
        assert!(!cache.contains(&"a"));
        assert_eq!(held.0, 10);
        assert_eq!(cache.evict_all_except(Some(&"b")), 0);
        assert_eq!(cache.evict_all_except(None), 10);
        assert_eq!(cache.stats().entries, 0);
    }

    struct Pipeline {
        unet: Weights,
        vae_encoder: LazyPart<Weights>,
    }
    impl ByteSize for Pipeline {
        fn byte_size(&self) -> u64 {
            self.unet.byte_size() + self.vae_encoder.byte_size()
        }
    }

    #[test]
    fn lazy_part_loads_once_and_grows_the_accounting() {
        let mut cache: ModelCache<&str, Pipeline> = ModelCache::new(100);
        cache.insert("other", Pipeline { unet: Weights(30), vae_encoder: LazyPart::new() });
        let pipeline =
            cache.insert("sdxl", Pipeline { unet: Weights(60), vae_encoder: LazyPart::new() });
        assert_eq!(cache.stats().used_bytes, 90);
        let loads = Cell::new(0);
        for _ in 0..3 {
            let encoder = pipeline
                .vae_encoder
                .get_or_load("vae encoder", || {
                    loads.set(loads.get() + 1);
                    Ok::<_, String>(Weights(20))
                })
                .expect("load");
            assert_eq!(encoder.0, 20);
        }
        assert_eq!(loads.get(), 1);
        assert!(pipeline.vae_encoder.is_loaded());
        cache.refresh_size(&"sdxl");
        assert_eq!(cache.keys(), ["sdxl"], "80 bytes now; the other model no longer fits");
        let failing: LazyPart<Weights> = LazyPart::new();
        assert!(failing.get_or_load("x", || Err::<Weights, _>("disk")).is_err());
        assert!(!failing.is_loaded());
    }

    #[test]
    fn tensor_bytes_follow_dtype() {
        let tensor =
            candle_core::Tensor::zeros((2, 3), candle_core::DType::F16, &candle_core::Device::Cpu)
                .expect("tensor");
        assert_eq!(tensor.byte_size(), 12);
    }
}
