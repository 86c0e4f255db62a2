//! A named thread that lists the GPUs every few seconds, for the window's GPU table: the UI
//! thread only reads the newest snapshot, never waits on the driver.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{GpuError, GpuSource, IdleRule, Snapshot, Visibility};

/// The newest answer: a snapshot, or why there is none.
pub type Latest = Option<Result<Snapshot, String>>;

/// Opens a GPU source on the watcher's thread.
pub type Opener = Box<dyn FnOnce() -> Result<Box<dyn GpuSource>, GpuError> + Send>;

/// Polls a GPU source on the `imagelab-gpus` thread.
pub struct GpuWatcher {
    latest: Arc<Mutex<Latest>>,
    quit: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for GpuWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuWatcher").finish_non_exhaustive()
    }
}

impl GpuWatcher {
    /// Opens the source with `open` on the new thread and lists the GPUs every `every`,
    /// calling `waker` after each new answer.
    ///
    /// # Errors
    /// The thread cannot start.
    pub fn spawn(
        open: Opener,
        visibility: Visibility,
        rule: IdleRule,
        every: Duration,
        waker: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Self> {
        let latest: Arc<Mutex<Latest>> = Arc::new(Mutex::new(None));
        let quit = Arc::new(AtomicBool::new(false));
        let (latest_in, quit_in) = (Arc::clone(&latest), Arc::clone(&quit));
        let thread = std::thread::Builder::new().name("imagelab-gpus".into()).spawn(move || {
            let mut source = match open() {
                Ok(source) => source,
                Err(err) => {
                    *latest_in.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(Err(err.to_string()));
                    waker();
                    return;
                }
            };
            while !quit_in.load(Ordering::SeqCst) {
                let answer =
                    Snapshot::take(source.as_mut(), &visibility, rule).map_err(|e| e.to_string());
                *latest_in.lock().unwrap_or_else(PoisonError::into_inner) = Some(answer);
                waker();
                let next = Instant::now() + every;
                while Instant::now() < next && !quit_in.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })?;
        Ok(Self { latest, quit, thread: Some(thread) })
    }

    /// The newest answer, if any yet.
    pub fn latest(&self) -> Latest {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for GpuWatcher {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::FixedGpus;

    #[test]
    fn the_watcher_follows_changes_and_reports_a_missing_driver() {
        let gpus = FixedGpus::new(vec![FixedGpus::idle_gpu(0)]);
        let source = gpus.clone();
        let watcher = GpuWatcher::spawn(
            Box::new(move || Ok(Box::new(source) as Box<dyn GpuSource>)),
            Visibility::default(),
            IdleRule::default(),
            Duration::from_millis(10),
            Arc::new(|| {}),
        )
        .expect("thread");
        let wait_for = |idle: bool| {
            let started = Instant::now();
            loop {
                if let Some(Ok(snapshot)) = watcher.latest()
                    && snapshot.gpus[0].idle == idle
                {
                    return;
                }
                assert!(started.elapsed() < Duration::from_secs(20), "no snapshot");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        wait_for(true);
        gpus.update(0, |gpu| gpu.utilization_percent = Some(99));
        wait_for(false);
        drop(watcher);
        let failing = GpuWatcher::spawn(
            Box::new(|| Err(GpuError::NoDriver("none here".into()))),
            Visibility::default(),
            IdleRule::default(),
            Duration::from_millis(10),
            Arc::new(|| {}),
        )
        .expect("thread");
        let started = Instant::now();
        while failing.latest().is_none() {
            assert!(started.elapsed() < Duration::from_secs(20));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(failing.latest(), Some(Err("no NVIDIA driver found: none here".into())));
    }
}
