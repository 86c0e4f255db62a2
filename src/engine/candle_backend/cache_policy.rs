//! Which loaded pipelines the candle backend keeps: every one that fits the cache budget
//! (least recently used first out); with no budget only the newest, dropped before the next
//! loads so two pipelines are never in memory at once.

use std::sync::Arc;

use super::CandleBackend;
use crate::diffusion::pipeline::DiffusionPipeline;
use crate::engine::backend::ModelKey;

impl CandleBackend {
    /// The cached pipeline for `key`, made current (a cache hit), if there is one.
    pub(super) fn use_cached(&mut self, key: &ModelKey) -> Option<Arc<DiffusionPipeline>> {
        let pipeline = self.cache.get(key)?;
        self.device = Some(pipeline.device().clone());
        self.current = Some((key.clone(), Arc::clone(&pipeline)));
        Some(pipeline)
    }

    /// Before a load: the cache keeps the previous pipeline if the budget allows; with no
    /// budget it is dropped now.
    pub(super) fn make_room_to_load(&mut self) {
        self.current = None;
        if self.cache.stats().budget_bytes == 0 {
            self.cache.evict_all_except(None);
        }
    }

    /// After a load: the pipeline is cached (evicting what no longer fits) and current.
    pub(super) fn keep_loaded(&mut self, key: ModelKey, pipeline: DiffusionPipeline) {
        self.device = Some(pipeline.device().clone());
        let pipeline = self.cache.insert(key.clone(), pipeline);
        self.current = Some((key, pipeline));
    }

    /// Frees every cached pipeline but the current one (the ladder's second rung); returns
    /// the bytes freed.
    pub(super) fn free_other_pipelines(&mut self, current: &ModelKey) -> u64 {
        self.cache.evict_all_except(Some(current))
    }

    /// img2img builds the VAE encoder on first use: the cache accounts it from then on.
    pub(super) fn account_vae_encoder(&mut self, key: &ModelKey) {
        self.cache.refresh_size(key);
    }
}
