//! Whether each catalog model is on disk: a small seam the model picker reads. The window
//! uses [`HubCacheStatus`], which reads the hub cache once on a named thread (never the UI
//! thread); tests and builds without a cache use [`NoModelStatus`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::models::Catalog;
use crate::models::hub::{HubConfig, WeightVariant};
use crate::models::manage::{CacheState, list_models};

/// Where a model's weights are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModelAvailability {
    /// In the local cache (or a local path).
    Cached,
    /// Not on disk; the first run downloads it.
    NotDownloaded,
    /// Some files are there (an interrupted download); the next run resumes it.
    Partial,
    /// Being downloaded; fraction done when known.
    Downloading(Option<f32>),
    /// Not known (no hub module in this build).
    Unknown,
}

impl ModelAvailability {
    /// A short label for the picker.
    pub fn label(self) -> String {
        match self {
            Self::Cached => "cached".to_owned(),
            Self::NotDownloaded => "not downloaded".to_owned(),
            Self::Partial => "partly downloaded".to_owned(),
            Self::Downloading(Some(fraction)) => format!("downloading {:.0}%", fraction * 100.0),
            Self::Downloading(None) => "downloading".to_owned(),
            Self::Unknown => String::new(),
        }
    }
}

/// Answers "is this model here?" for the picker; must be cheap (called every frame).
pub trait ModelStatusSource {
    /// The status of a catalog display name.
    fn availability(&self, display_name: &str) -> ModelAvailability;
}

/// The placeholder until `models::hub` can tell: everything is unknown.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoModelStatus;

impl ModelStatusSource for NoModelStatus {
    fn availability(&self, _display_name: &str) -> ModelAvailability {
        ModelAvailability::Unknown
    }
}

/// The hub cache's view of every catalog model, read once in the background.
#[derive(Debug, Clone, Default)]
pub struct HubCacheStatus {
    states: Arc<RwLock<HashMap<String, ModelAvailability>>>,
}

impl HubCacheStatus {
    /// Starts reading the hub cache `hub` on `imagelab-model-status`;
    /// until it is done every model reads as unknown. `waker` repaints when it is.
    pub fn spawn(catalog: Catalog, hub: HubConfig, waker: Arc<dyn Fn() + Send + Sync>) -> Self {
        let status = Self::default();
        let states = Arc::clone(&status.states);
        let started =
            std::thread::Builder::new().name("imagelab-model-status".into()).spawn(move || {
                let listings = list_models(&catalog, &hub, WeightVariant::Full);
                let found: HashMap<String, ModelAvailability> = listings
                    .into_iter()
                    .map(|listing| {
                        let availability = match listing.state {
                            CacheState::Cached => ModelAvailability::Cached,
                            CacheState::Partial => ModelAvailability::Partial,
                            CacheState::NotDownloaded => ModelAvailability::NotDownloaded,
                        };
                        (listing.display_name, availability)
                    })
                    .collect();
                if let Ok(mut states) = states.write() {
                    *states = found;
                }
                waker();
            });
        if let Err(err) = started {
            tracing::warn!("cannot read the model cache: {err}");
        }
        status
    }
}

impl ModelStatusSource for HubCacheStatus {
    fn availability(&self, display_name: &str) -> ModelAvailability {
        self.states
            .read()
            .ok()
            .and_then(|states| states.get(display_name).copied())
            .unwrap_or(ModelAvailability::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn an_empty_cache_reads_as_not_downloaded() {
        let cache = tempfile::tempdir().expect("tempdir");
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let status = HubCacheStatus::spawn(
            Catalog::builtin(),
            HubConfig::offline_at(cache.path()),
            Arc::new(move || flag.store(true, Ordering::SeqCst)),
        );
        let started = std::time::Instant::now();
        while !done.load(Ordering::SeqCst) {
            assert!(started.elapsed().as_secs() < 30, "the status thread never finished");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(status.availability("SDXL Turbo"), ModelAvailability::NotDownloaded);
        assert_eq!(status.availability("no such model"), ModelAvailability::Unknown);
    }
}
