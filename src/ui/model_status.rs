//! Whether each catalog model is on disk: a small seam the model picker reads. The window
//! uses [`HubCacheStatus`], which reads the hub cache once on a named thread (never the UI
//! thread); tests and builds without a cache use [`NoModelStatus`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::models::Catalog;
use crate::models::hub::{DownloadEvent, HubConfig, WeightVariant};
use crate::models::manage::{CacheState, list_models, prefetch};

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

    /// Starts downloading a model in the background.
    ///
    /// # Errors
    /// This source cannot download.
    fn start_download(&self, display_name: &str) -> Result<(), String> {
        Err(format!("{display_name}: downloads are not available in this window"))
    }

    /// Messages for the log since the last call: `Ok` = done, `Err` = failed.
    fn take_messages(&self) -> Vec<Result<String, String>> {
        Vec::new()
    }
}

/// The placeholder until `models::hub` can tell: everything is unknown.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoModelStatus;

impl ModelStatusSource for NoModelStatus {
    fn availability(&self, _display_name: &str) -> ModelAvailability {
        ModelAvailability::Unknown
    }
}

/// The hub cache's view of every catalog model, read once in the background; downloads on
/// request (`imagelab-download` threads) with per-file progress.
#[derive(Clone)]
pub struct HubCacheStatus {
    states: Arc<RwLock<HashMap<String, ModelAvailability>>>,
    messages: Arc<Mutex<Vec<Result<String, String>>>>,
    catalog: Catalog,
    hub: HubConfig,
    waker: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for HubCacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubCacheStatus").field("states", &self.states).finish_non_exhaustive()
    }
}

impl HubCacheStatus {
    /// Starts reading the hub cache `hub` on `imagelab-model-status`;
    /// until it is done every model reads as unknown. `waker` repaints when it is.
    pub fn spawn(catalog: Catalog, hub: HubConfig, waker: Arc<dyn Fn() + Send + Sync>) -> Self {
        let status = Self {
            states: Arc::default(),
            messages: Arc::default(),
            catalog: catalog.clone(),
            hub: hub.clone(),
            waker: Arc::clone(&waker),
        };
        let shared_states = Arc::clone(&status.states);
        let started =
            std::thread::Builder::new().name("imagelab-model-status".into()).spawn(move || {
                let found = read_states(&catalog, &hub);
                if let Ok(mut states) = shared_states.write() {
                    // A download started meanwhile knows better than this first look.
                    for (name, availability) in found {
                        states.entry(name).or_insert(availability);
                    }
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

    fn start_download(&self, display_name: &str) -> Result<(), String> {
        if matches!(self.availability(display_name), ModelAvailability::Downloading(_)) {
            return Ok(());
        }
        self.set(display_name, ModelAvailability::Downloading(None));
        let this = self.clone();
        let name = display_name.to_owned();
        std::thread::Builder::new()
            .name("imagelab-download".into())
            .spawn(move || this.download(&name))
            .map(drop)
            .map_err(|err| format!("cannot start the download: {err}"))
    }

    fn take_messages(&self) -> Vec<Result<String, String>> {
        self.messages.lock().map(|mut messages| std::mem::take(&mut *messages)).unwrap_or_default()
    }
}

/// What the hub cache holds of every catalog model.
fn read_states(catalog: &Catalog, hub: &HubConfig) -> HashMap<String, ModelAvailability> {
    list_models(catalog, hub, WeightVariant::Full)
        .into_iter()
        .map(|listing| {
            let availability = match listing.state {
                CacheState::Cached | CacheState::Local => ModelAvailability::Cached,
                CacheState::Partial => ModelAvailability::Partial,
                CacheState::NotDownloaded | CacheState::Refused => ModelAvailability::NotDownloaded,
            };
            (listing.display_name, availability)
        })
        .collect()
}

impl HubCacheStatus {
    fn set(&self, display_name: &str, availability: ModelAvailability) {
        if let Ok(mut states) = self.states.write() {
            states.insert(display_name.to_owned(), availability);
        }
        (self.waker)();
    }

    /// Runs on the download thread: fraction = files done / files needed.
    fn download(&self, display_name: &str) {
        let (mut files_needed, mut files_done) = (0_usize, 0_usize);
        let mut on_event = |_: &str, event: &DownloadEvent| {
            match event {
                DownloadEvent::Planned { files, .. } => files_needed = *files,
                DownloadEvent::AlreadyCached { .. } | DownloadEvent::Finished { .. } => {
                    files_done += 1;
                }
                DownloadEvent::Started { .. } | DownloadEvent::Progress { .. } => return,
            }
            let fraction = (files_needed > 0).then(|| files_done as f32 / files_needed as f32);
            self.set(display_name, ModelAvailability::Downloading(fraction));
        };
        let names = [display_name.to_owned()];
        let result = prefetch(&self.catalog, &names, &self.hub, WeightVariant::Full, &mut on_event);
        let error = match result {
            Ok(outcomes) => outcomes.into_iter().find_map(|outcome| outcome.error),
            Err(err) => Some(err.to_string()),
        };
        let message = match error {
            None => Ok(format!("{display_name}: downloaded")),
            Some(err) => Err(format!("{display_name}: download failed: {err}")),
        };
        let availability = read_states(&self.catalog, &self.hub)
            .remove(display_name)
            .unwrap_or(ModelAvailability::Unknown);
        if let Ok(mut messages) = self.messages.lock() {
            messages.push(message);
        }
        self.set(display_name, availability);
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

    #[test]
    fn a_failed_download_is_reported_and_the_cache_read_again() {
        let cache = tempfile::tempdir().expect("tempdir");
        let status = HubCacheStatus::spawn(
            Catalog::builtin(),
            HubConfig::offline_at(cache.path()),
            Arc::new(|| {}),
        );
        status.start_download("SDXL Turbo").expect("thread starts");
        let started = std::time::Instant::now();
        let messages = loop {
            let messages = status.take_messages();
            if !messages.is_empty() {
                break messages;
            }
            assert!(started.elapsed().as_secs() < 30, "the download never ended");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        // Offline, with an empty cache: nothing can be fetched.
        let error = messages[0].clone().expect_err("offline download fails");
        assert!(error.starts_with("SDXL Turbo: download failed"), "{error}");
        assert_eq!(status.availability("SDXL Turbo"), ModelAvailability::NotDownloaded);
    }
}
