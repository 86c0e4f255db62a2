//! The overnight run: one worker thread per GPU, each owning its own engine (so never two
//! jobs on one GPU), pulling generated jobs from one shared scheduler until the limit, the
//! deadline or a stop.
//!
//! - With `--gpus auto` a worker takes a job only while its GPU is idle by
//!   [`IdleRule::check_idle`] (before its first job) or still free of other users by
//!   [`IdleRule::check_keep`] (after), re-checked before every job; a busy GPU is polled every
//!   `recheck` until it frees.
//! - The scheduler hands a worker the lowest-numbered job for the model it has loaded, else one
//!   for a model no other worker holds, else the lowest-numbered job, looking ahead at most
//!   `lookahead` jobs: models load as rarely as the order allows, and job *n* is the same job
//!   whichever GPU runs it.
//! - A failed job is logged like any other and the worker goes on; `max_failures` failures in a
//!   row retire its GPU.
//! - [`StopToken`]: the first stop lets each running image finish (its log line written), the
//!   second cancels within one denoising step; nothing half-written either way.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use serde::Serialize;

use super::generator::{GeneratedJob, Generator};
use crate::engine::{
    Backend, Engine, EngineConfig, Event, StopMode, Waker, no_waker, prepare_plan,
};
use crate::gpu::{BusyReason, GpuInfo, GpuSource, IdleRule, Visibility};
use crate::models::catalog::Catalog;
use crate::request::{Profiles, Request, RequestError};
use crate::storage::jobs_log::{ItemStatus, RunnerTag};
use crate::storage::naming::slug;
use crate::vocab::{DeviceChoice, Precision, SamplerKind, SigmaSchedule};

/// Runner events buffered for a lagging front end.
const EVENT_CAPACITY: usize = 1024;
/// How often a waiting worker looks at the stop token and the deadline.
const TICK: Duration = Duration::from_millis(50);

/// How hard to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum StopLevel {
    /// Keep going.
    Run,
    /// Take no new job; let each running image finish and log it.
    Finish,
    /// Cancel running images within one step (logged as cancelled, nothing half-written).
    Cancel,
}

/// A shared stop request: front ends (a signal handler, the window's Stop button) raise it,
/// workers read it.
#[derive(Debug, Clone, Default)]
pub struct StopToken(Arc<AtomicU8>);

impl StopToken {
    /// A token that says run.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current level.
    pub fn level(&self) -> StopLevel {
        match self.0.load(Ordering::SeqCst) {
            0 => StopLevel::Run,
            1 => StopLevel::Finish,
            _ => StopLevel::Cancel,
        }
    }

    /// Raises the level to at least `level` (it never goes down).
    pub fn raise(&self, level: StopLevel) {
        let code = match level {
            StopLevel::Run => 0,
            StopLevel::Finish => 1,
            StopLevel::Cancel => 2,
        };
        self.0.fetch_max(code, Ordering::SeqCst);
    }

    /// The first call asks to finish, the next ones to cancel (what Ctrl+C twice means).
    pub fn escalate(&self) -> StopLevel {
        let next =
            if self.level() == StopLevel::Run { StopLevel::Finish } else { StopLevel::Cancel };
        self.raise(next);
        self.level()
    }
}

/// Where one worker runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slot {
    /// The GPU (index, UUID, name), or `None` for a worker on `device` without GPU checks.
    pub gpu: Option<SlotGpu>,
    /// What the engine is asked to run on (`cuda:N` with the CUDA ordinal for a GPU).
    pub device: DeviceChoice,
}

/// The GPU of a [`Slot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotGpu {
    /// The index `imagelab gpus` prints.
    pub index: u32,
    /// Its UUID.
    pub uuid: String,
    /// Its name.
    pub name: String,
}

impl Slot {
    /// A worker on GPU `gpu` (its `cuda_index` must be set: hidden GPUs cannot run).
    pub fn for_gpu(gpu: &GpuInfo) -> Option<Self> {
        Some(Self {
            gpu: Some(SlotGpu { index: gpu.index, uuid: gpu.uuid.clone(), name: gpu.name.clone() }),
            device: DeviceChoice::Cuda(gpu.cuda_index?),
        })
    }

    /// A worker on `device` with no GPU checks.
    pub fn on_device(device: DeviceChoice) -> Self {
        Self { gpu: None, device }
    }

    /// `GPU 0` or the device name.
    pub fn label(&self) -> String {
        match &self.gpu {
            Some(gpu) => format!("GPU {}", gpu.index),
            None => self.device.to_string(),
        }
    }
}

/// The settings every job shares (the prompt, model, profile and seed come from the
/// generator).
#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    /// Images per job (seed, seed + 1, …).
    pub batch: u32,
    /// Width; `None` = the model's.
    pub width: Option<u32>,
    /// Height; `None` = the model's.
    pub height: Option<u32>,
    /// Steps; `None` = the profile's, then the model's.
    pub steps: Option<u32>,
    /// CFG; `None` = the profile's, then the model's.
    pub cfg: Option<f32>,
    /// Sampler; `None` = the profile's, then the model's.
    pub scheduler: Option<SamplerKind>,
    /// Sigma schedule.
    pub schedule_type: SigmaSchedule,
    /// Precision.
    pub dtype: Option<Precision>,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            batch: 1,
            width: None,
            height: None,
            steps: None,
            cfg: None,
            scheduler: None,
            schedule_type: SigmaSchedule::Automatic,
            dtype: None,
        }
    }
}

impl JobSettings {
    /// The request for `job` on `device`.
    pub fn request(&self, job: &GeneratedJob, device: DeviceChoice) -> Request {
        Request {
            model: job.model.clone(),
            prompt: job.prompt.clone(),
            negative: job.negative.clone(),
            profile: job.profile.clone(),
            scheduler: self.scheduler,
            schedule_type: self.schedule_type,
            width: self.width,
            height: self.height,
            steps: self.steps,
            cfg: self.cfg,
            batch: self.batch,
            seed: Some(job.seed),
            device,
            dtype: self.dtype,
            ..Request::default()
        }
    }
}

/// A GPU list and when it was taken (workers asking within a moment share it).
type CachedAnswer = (Instant, Result<Vec<GpuInfo>, String>);

/// Polls the GPUs for `--gpus auto`.
pub struct IdleWatch {
    source: Mutex<(Box<dyn GpuSource>, Option<CachedAnswer>)>,
    visibility: Visibility,
    rule: IdleRule,
    /// How long a busy GPU waits before the next look.
    pub recheck: Duration,
    own_pid: u32,
}

impl std::fmt::Debug for IdleWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleWatch")
            .field("rule", &self.rule)
            .field("recheck", &self.recheck)
            .finish_non_exhaustive()
    }
}

impl IdleWatch {
    /// Watches `source` with `rule`, looking again every `recheck` while a GPU is busy.
    pub fn new(
        source: Box<dyn GpuSource>,
        visibility: Visibility,
        rule: IdleRule,
        recheck: Duration,
    ) -> Self {
        Self {
            source: Mutex::new((source, None)),
            visibility,
            rule,
            recheck,
            own_pid: std::process::id(),
        }
    }

    /// Whether GPU `index` may take a job now: idle by the rule, or — when `ours` (this run
    /// already works on it) — free of anyone else's work.
    ///
    /// # Errors
    /// Why not.
    pub fn check(&self, index: u32, ours: bool) -> Result<(), String> {
        let gpus = {
            let mut guard = self.source.lock().unwrap_or_else(PoisonError::into_inner);
            // Workers asking within a moment of each other share one answer.
            let fresh = guard
                .1
                .as_ref()
                .filter(|(at, _)| at.elapsed() < self.recheck.min(Duration::from_secs(1)) / 2);
            if let Some((_, answer)) = fresh {
                answer.clone()
            } else {
                let answer = guard.0.query().map_err(|err| err.to_string()).map(|mut gpus| {
                    self.visibility.apply(&mut gpus);
                    gpus
                });
                guard.1 = Some((Instant::now(), answer.clone()));
                answer
            }
        }?;
        let Some(gpu) = gpus.iter().find(|gpu| gpu.index == index) else {
            return Err(BusyReason::Gone.to_string());
        };
        let verdict =
            if ours { self.rule.check_keep(gpu, self.own_pid) } else { self.rule.check_idle(gpu) };
        verdict.map_err(|reason| reason.to_string())
    }
}

/// Which GPUs a run uses (`--gpus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuChoice {
    /// Every GPU this process sees, each used only while idle (re-checked before every job).
    Auto,
    /// One worker on the given device, no GPU checks.
    None,
    /// These GPU indices (as `imagelab gpus` prints them), used as given.
    List(Vec<u32>),
}

impl GpuChoice {
    /// Parses `auto`, `none` or `0,2,3`.
    ///
    /// # Errors
    /// Anything else, naming `--gpus`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        match text.as_str() {
            "auto" | "" => return Ok(Self::Auto),
            "none" => return Ok(Self::None),
            _ => {}
        }
        let mut indices = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let index: u32 = part.parse().map_err(|_| {
                format!("--gpus: {part:?} is not a GPU index; use auto, none or a list like 0,2")
            })?;
            if !indices.contains(&index) {
                indices.push(index);
            }
        }
        if indices.is_empty() {
            return Err("--gpus: empty list; use auto, none or a list like 0,2".into());
        }
        Ok(Self::List(indices))
    }
}

/// Why the workers of a run cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// A GPU that is not there or hidden (bad input).
    #[error("{0}")]
    Usage(String),
    /// No driver for a run that names GPUs.
    #[error("{0}")]
    NoGpu(String),
}

/// Opens a GPU source (NVML or `nvidia-smi` in front ends, a fake in tests).
pub type GpuOpener =
    Arc<dyn Fn() -> Result<Box<dyn GpuSource>, crate::gpu::GpuError> + Send + Sync>;

/// The workers `choice` asks for: one per visible GPU (with an [`IdleWatch`] for `Auto`), or
/// one on `device` when `None` — or when `Auto` finds no NVIDIA GPU (said in the notes).
///
/// # Errors
/// `List` with a GPU that is missing or hidden, or with no driver.
#[allow(clippy::type_complexity, reason = "slots, watch and notes belong together")]
pub fn plan_slots(
    choice: &GpuChoice,
    device: DeviceChoice,
    open: &GpuOpener,
    visibility: &Visibility,
    rule: IdleRule,
    recheck: Duration,
) -> Result<(Vec<Slot>, Option<Arc<IdleWatch>>, Vec<String>), SlotError> {
    let on_device = || vec![Slot::on_device(device)];
    match choice {
        GpuChoice::None => Ok((on_device(), None, Vec::new())),
        GpuChoice::Auto => {
            let (source, gpus) = match open().and_then(|mut source| {
                let gpus = source.query()?;
                Ok((source, gpus))
            }) {
                Ok(found) => found,
                Err(err) => {
                    return Ok((
                        on_device(),
                        None,
                        vec![format!("{err}; one worker on device {device}")],
                    ));
                }
            };
            let mut gpus = gpus;
            let mut notes = visibility.apply(&mut gpus);
            let slots: Vec<Slot> = gpus.iter().filter_map(Slot::for_gpu).collect();
            if slots.is_empty() {
                notes.push(format!("no NVIDIA GPU visible; one worker on device {device}"));
                return Ok((on_device(), None, notes));
            }
            let watch = IdleWatch::new(source, visibility.clone(), rule, recheck);
            Ok((slots, Some(Arc::new(watch)), notes))
        }
        GpuChoice::List(indices) => {
            let mut source = open().map_err(|err| SlotError::NoGpu(format!("--gpus: {err}")))?;
            let mut gpus =
                source.query().map_err(|err| SlotError::NoGpu(format!("--gpus: {err}")))?;
            let notes = visibility.apply(&mut gpus);
            let mut slots = Vec::new();
            for &index in indices {
                let Some(gpu) = gpus.iter().find(|gpu| gpu.index == index) else {
                    let here: Vec<String> = gpus.iter().map(|g| g.index.to_string()).collect();
                    return Err(SlotError::Usage(format!(
                        "--gpus: there is no GPU {index}; GPUs here: {}",
                        if here.is_empty() { "none".to_owned() } else { here.join(", ") }
                    )));
                };
                slots.push(Slot::for_gpu(gpu).ok_or_else(|| {
                    SlotError::Usage(format!(
                        "--gpus: GPU {index} is hidden by CUDA_VISIBLE_DEVICES"
                    ))
                })?);
            }
            Ok((slots, None, notes))
        }
    }
}

/// Builds one backend per worker (candle pinned by the request's device, or the mock).
pub type BackendFactory = Arc<dyn Fn(&Slot) -> Result<Box<dyn Backend>, String> + Send + Sync>;

/// Everything a run needs.
pub struct RunnerSetup {
    /// Makes the jobs.
    pub generator: Generator,
    /// Profiles for planning.
    pub profiles: Profiles,
    /// Models for planning.
    pub catalog: Catalog,
    /// Stop after this many jobs.
    pub max_jobs: Option<u64>,
    /// Take no job after this moment.
    pub deadline: Option<Instant>,
    /// One worker per slot.
    pub slots: Vec<Slot>,
    /// `--gpus auto`: only idle GPUs take jobs.
    pub idle: Option<Arc<IdleWatch>>,
    /// Shared job settings.
    pub settings: JobSettings,
    /// Output root.
    pub output_root: PathBuf,
    /// `INSTANCE_ID`: the jobs log file.
    pub instance_id: Option<String>,
    /// The run's folder, relative to the output root (`<YYYYmmdd-HHMMSS>_runner`).
    pub run_dir: PathBuf,
    /// Failures in a row that retire a GPU.
    pub max_failures: u32,
    /// How far ahead the scheduler looks to group jobs by model.
    pub lookahead: usize,
}

impl std::fmt::Debug for RunnerSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerSetup")
            .field("slots", &self.slots)
            .field("max_jobs", &self.max_jobs)
            .field("run_dir", &self.run_dir)
            .finish_non_exhaustive()
    }
}

impl RunnerSetup {
    /// The model group of a job: its resolved model name, so `--models "sdxl base 1.0"` and the
    /// catalog name share one load.
    fn group(&self, job: &GeneratedJob) -> String {
        self.catalog
            .resolve(&job.model)
            .map_or_else(|_| job.model.to_lowercase(), |model| model.display_name.to_lowercase())
    }

    /// Checks every (model, profile) pair the templates can produce with the shared settings,
    /// so bad settings stop the run before any work.
    ///
    /// # Errors
    /// The first bad field, named.
    pub fn validate(&self) -> Result<(), RequestError> {
        let sample = self.generator.job(1);
        let request = self.settings.request(&sample, DeviceChoice::Cpu);
        request.validate(&self.profiles, &self.catalog)?;
        let seed_room = u64::from(self.settings.batch.saturating_sub(1));
        if sample.seed.checked_add(seed_room).is_none() {
            return Err(RequestError::new("seed", "seed + batch overflows 64 bits"));
        }
        Ok(())
    }
}

/// What a worker is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "why", rename_all = "snake_case")]
pub enum WorkerState {
    /// Starting its engine.
    Starting,
    /// Running a job.
    Working,
    /// Waiting for its GPU to be idle.
    Waiting(String),
    /// Retired after too many failures in a row (or a backend that cannot start).
    Retired(String),
    /// Done: no more jobs, or stopped.
    Finished,
}

/// What the runner reports to its front end.
#[derive(Debug, Clone)]
pub enum RunnerEvent {
    /// A worker changed state.
    Worker {
        /// Its slot index.
        slot: usize,
        /// The new state.
        state: WorkerState,
    },
    /// A job began on a worker.
    JobStarted {
        /// The slot.
        slot: usize,
        /// The job.
        job: GeneratedJob,
    },
    /// A step of the running image (lossy).
    Progress {
        /// The slot.
        slot: usize,
        /// Steps done.
        step: usize,
        /// Steps in all.
        steps: usize,
    },
    /// A job ended; its jobs-log line is written.
    JobFinished {
        /// The slot.
        slot: usize,
        /// How it went.
        outcome: JobOutcome,
    },
    /// The run is over.
    Finished(RunSummary),
}

/// How one job ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobOutcome {
    /// Runner job number.
    pub number: u64,
    /// The template.
    pub template: String,
    /// The model key.
    pub model: String,
    /// Done, failed or cancelled.
    pub status: ItemStatus,
    /// Images written (full paths).
    pub images: Vec<PathBuf>,
    /// What went wrong.
    pub error: Option<String>,
    /// Wall time.
    pub duration_s: f64,
}

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `--jobs N` reached.
    Jobs,
    /// `--for` / `--until` passed.
    Time,
    /// Stopped (signal or Stop button).
    Stopped,
    /// Every GPU retired.
    AllRetired,
}

/// One worker's totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotSummary {
    /// `GPU 0`, `cpu`, …
    pub label: String,
    /// The GPU index, when a GPU.
    pub gpu: Option<u32>,
    /// Jobs run.
    pub jobs: u64,
    /// Images written.
    pub images: u64,
    /// Jobs failed.
    pub failed: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Time spent in jobs.
    pub busy_s: f64,
    /// Images per hour of busy time.
    pub images_per_hour: f64,
    /// Model loads (a change of model between two jobs).
    pub model_switches: u64,
    /// Why it was retired, if it was.
    pub retired: Option<String>,
}

/// The run's totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// Jobs run (each has a jobs-log line).
    pub jobs: u64,
    /// Images written.
    pub images: u64,
    /// Jobs failed.
    pub failed: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Wall time of the run.
    pub duration_s: f64,
    /// Images per hour over the whole run.
    pub images_per_hour: f64,
    /// Why it ended.
    pub ended_by: EndReason,
    /// The run seed (`--seed` repeats these prompts).
    pub seed: u64,
    /// The run folder (full path).
    pub run_dir: PathBuf,
    /// Per worker.
    pub workers: Vec<SlotSummary>,
}

fn per_hour(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { count as f64 * 3600.0 / seconds } else { 0.0 }
}

/// The job queue the workers share.
struct Scheduler {
    next_number: u64,
    pending: VecDeque<(GeneratedJob, String)>,
    issued: u64,
    held: Vec<Option<String>>,
    time_up: bool,
}

struct Shared {
    setup: RunnerSetup,
    scheduler: Mutex<Scheduler>,
    stop: StopToken,
    events: Sender<RunnerEvent>,
    waker: Waker,
}

impl Shared {
    fn emit(&self, event: RunnerEvent) {
        if self.events.send(event).is_ok() {
            (self.waker)();
        }
    }

    fn emit_lossy(&self, event: RunnerEvent) {
        if self.events.try_send(event).is_ok() {
            (self.waker)();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        self.scheduler.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// No job will be handed out any more.
    fn exhausted(&self) -> bool {
        if self.stop.level() != StopLevel::Run {
            return true;
        }
        let mut scheduler = self.lock();
        if self.setup.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            scheduler.time_up = true;
        }
        scheduler.time_up || self.setup.max_jobs.is_some_and(|max| scheduler.issued >= max)
    }

    /// The next job for `slot`, which has `loaded` (a model group) loaded.
    fn take(&self, slot: usize, loaded: Option<&str>) -> Option<(GeneratedJob, String)> {
        if self.exhausted() {
            return None;
        }
        let mut scheduler = self.lock();
        // Another worker may have taken the last job since `exhausted` looked.
        if self.setup.max_jobs.is_some_and(|max| scheduler.issued >= max) {
            return None;
        }
        let remaining = self.setup.max_jobs.map(|max| max - scheduler.issued);
        let window = remaining
            .map_or(self.setup.lookahead, |left| {
                usize::try_from(left).unwrap_or(usize::MAX).min(self.setup.lookahead)
            })
            .max(1);
        while scheduler.pending.len() < window {
            let number = scheduler.next_number;
            scheduler.next_number += 1;
            let job = self.setup.generator.job(number);
            let group = self.setup.group(&job);
            scheduler.pending.push_back((job, group));
        }
        let held_by_others = |group: &str, held: &[Option<String>]| {
            held.iter().enumerate().any(|(i, h)| i != slot && h.as_deref() == Some(group))
        };
        let index = loaded
            .and_then(|loaded| scheduler.pending.iter().position(|(_, g)| g == loaded))
            .or_else(|| {
                scheduler.pending.iter().position(|(_, g)| !held_by_others(g, &scheduler.held))
            })
            .unwrap_or(0);
        let (job, group) = scheduler.pending.remove(index)?;
        scheduler.issued += 1;
        scheduler.held[slot] = Some(group.clone());
        Some((job, group))
    }
}

/// A running run: its events, its stop token, its thread.
pub struct RunnerHandle {
    events: Receiver<RunnerEvent>,
    stop: StopToken,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RunnerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerHandle").field("stop", &self.stop.level()).finish_non_exhaustive()
    }
}

impl RunnerHandle {
    /// Starts the run on a named thread (`imagelab-runner`), one worker thread per slot.
    /// `stop` may be shared with a signal handler; `waker` is called after every event.
    ///
    /// # Errors
    /// No slot, or a thread that cannot start.
    pub fn start(
        setup: RunnerSetup,
        factory: BackendFactory,
        stop: StopToken,
        waker: Waker,
    ) -> Result<Self, String> {
        if setup.slots.is_empty() {
            return Err("no GPU or device to run on".to_owned());
        }
        let (tx, rx) = bounded(EVENT_CAPACITY);
        let held = vec![None; setup.slots.len()];
        let shared = Arc::new(Shared {
            setup,
            scheduler: Mutex::new(Scheduler {
                next_number: 1,
                pending: VecDeque::new(),
                issued: 0,
                held,
                time_up: false,
            }),
            stop: stop.clone(),
            events: tx,
            waker,
        });
        let thread = std::thread::Builder::new()
            .name("imagelab-runner".into())
            .spawn(move || coordinate(&shared, &factory))
            .map_err(|err| format!("cannot start the runner thread: {err}"))?;
        Ok(Self { events: rx, stop, thread: Some(thread) })
    }

    /// The event stream (bounded).
    pub fn events(&self) -> &Receiver<RunnerEvent> {
        &self.events
    }

    /// The run's stop token.
    pub fn stop_token(&self) -> &StopToken {
        &self.stop
    }

    /// Whether the run's thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the end, draining events; returns the summary.
    pub fn wait(mut self) -> Option<RunSummary> {
        let mut summary = None;
        for event in &self.events {
            if let RunnerEvent::Finished(done) = event {
                summary = Some(done);
            }
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the runner thread panicked");
        }
        summary
    }
}

impl Drop for RunnerHandle {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        self.stop.raise(StopLevel::Cancel);
        while !thread.is_finished() {
            let _ = self.events.recv_timeout(Duration::from_millis(10));
        }
        let _ = thread.join();
    }
}

/// Per-worker totals while the run goes on.
#[derive(Debug, Default)]
struct Tally {
    jobs: u64,
    images: u64,
    failed: u64,
    cancelled: u64,
    busy_s: f64,
    model_switches: u64,
    retired: Option<String>,
}

fn coordinate(shared: &Arc<Shared>, factory: &BackendFactory) {
    let started = Instant::now();
    let mut workers = Vec::new();
    for (index, slot) in shared.setup.slots.iter().enumerate() {
        let shared_for_worker = Arc::clone(shared);
        let factory = Arc::clone(factory);
        let name = format!("imagelab-runner-{}", slot.label().replace(' ', "").to_lowercase());
        match std::thread::Builder::new()
            .name(name)
            .spawn(move || work(&shared_for_worker, index, &factory))
        {
            Ok(handle) => workers.push((index, Some(handle))),
            Err(err) => {
                shared.emit(RunnerEvent::Worker {
                    slot: index,
                    state: WorkerState::Retired(format!("cannot start its thread: {err}")),
                });
                workers.push((index, None));
            }
        }
    }
    let mut tallies: Vec<Tally> = Vec::new();
    for (index, handle) in workers {
        let tally = handle.and_then(|h| h.join().ok()).unwrap_or_else(|| Tally {
            retired: Some("its thread ended early".into()),
            ..Tally::default()
        });
        debug_assert_eq!(index, tallies.len());
        tallies.push(tally);
    }
    let duration_s = started.elapsed().as_secs_f64();
    let workers: Vec<SlotSummary> = shared
        .setup
        .slots
        .iter()
        .zip(&tallies)
        .map(|(slot, tally)| SlotSummary {
            label: slot.label(),
            gpu: slot.gpu.as_ref().map(|g| g.index),
            jobs: tally.jobs,
            images: tally.images,
            failed: tally.failed,
            cancelled: tally.cancelled,
            busy_s: tally.busy_s,
            images_per_hour: per_hour(tally.images, tally.busy_s),
            model_switches: tally.model_switches,
            retired: tally.retired.clone(),
        })
        .collect();
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let images = sum(|t| t.images);
    let scheduler = shared.lock();
    let ended_by = if shared.stop.level() != StopLevel::Run {
        EndReason::Stopped
    } else if shared.setup.max_jobs.is_some_and(|max| scheduler.issued >= max) {
        EndReason::Jobs
    } else if scheduler.time_up {
        EndReason::Time
    } else {
        EndReason::AllRetired
    };
    drop(scheduler);
    shared.emit(RunnerEvent::Finished(RunSummary {
        jobs: sum(|t| t.jobs),
        images,
        failed: sum(|t| t.failed),
        cancelled: sum(|t| t.cancelled),
        duration_s,
        images_per_hour: per_hour(images, duration_s),
        ended_by,
        seed: shared.setup.generator.run_seed(),
        run_dir: shared.setup.output_root.join(&shared.setup.run_dir),
        workers,
    }));
}

/// Sleeps up to `duration`, waking early when the run is over.
fn nap(shared: &Shared, duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until && !shared.exhausted() {
        std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
    }
}

fn work(shared: &Shared, slot_index: usize, factory: &BackendFactory) -> Tally {
    let mut tally = Tally::default();
    let slot = &shared.setup.slots[slot_index];
    let state = |state: WorkerState| shared.emit(RunnerEvent::Worker { slot: slot_index, state });
    state(WorkerState::Starting);
    let engine = factory(slot).and_then(|backend| {
        let config = EngineConfig {
            output_root: shared.setup.output_root.clone(),
            instance_id: shared.setup.instance_id.clone(),
            previews: false,
        };
        Engine::spawn(backend, config, no_waker()).map_err(|err| err.to_string())
    });
    let engine = match engine {
        Ok(engine) => engine,
        Err(err) => {
            tally.retired = Some(format!("cannot start: {err}"));
            state(WorkerState::Retired(format!("cannot start: {err}")));
            return tally;
        }
    };
    let mut loaded: Option<String> = None;
    let mut used_gpu = false;
    let mut failures_in_a_row = 0u32;
    let mut waiting_for: Option<String> = None;
    loop {
        if shared.exhausted() {
            break;
        }
        if let (Some(watch), Some(gpu)) = (&shared.setup.idle, &slot.gpu) {
            if let Err(reason) = watch.check(gpu.index, used_gpu) {
                if waiting_for.as_deref() != Some(reason.as_str()) {
                    state(WorkerState::Waiting(reason.clone()));
                    waiting_for = Some(reason);
                }
                nap(shared, watch.recheck);
                continue;
            }
            waiting_for = None;
        }
        let Some((job, group)) = shared.take(slot_index, loaded.as_deref()) else { break };
        if loaded.as_deref().is_some_and(|l| l != group) || loaded.is_none() {
            tally.model_switches += 1;
        }
        loaded = Some(group);
        used_gpu = true;
        state(WorkerState::Working);
        shared.emit(RunnerEvent::JobStarted { slot: slot_index, job: job.clone() });
        let outcome = run_job(shared, slot_index, &engine, &job);
        tally.jobs += 1;
        tally.images += outcome.images.len() as u64;
        tally.busy_s += outcome.duration_s;
        match outcome.status {
            ItemStatus::Done => failures_in_a_row = 0,
            ItemStatus::Failed => {
                tally.failed += 1;
                failures_in_a_row += 1;
            }
            ItemStatus::Cancelled | ItemStatus::Interrupted => tally.cancelled += 1,
        }
        let last_error = outcome.error.clone();
        shared.emit(RunnerEvent::JobFinished { slot: slot_index, outcome });
        if failures_in_a_row >= shared.setup.max_failures.max(1) {
            let why = format!(
                "{failures_in_a_row} failures in a row; last: {}",
                last_error.unwrap_or_default()
            );
            tally.retired = Some(why.clone());
            state(WorkerState::Retired(why));
            break;
        }
    }
    drop(engine);
    if tally.retired.is_none() {
        state(WorkerState::Finished);
    }
    tally
}

/// Runs one job on `engine` to its jobs-log line.
fn run_job(shared: &Shared, slot_index: usize, engine: &Engine, job: &GeneratedJob) -> JobOutcome {
    let started = Instant::now();
    let setup = &shared.setup;
    let slot = &setup.slots[slot_index];
    let mut outcome = JobOutcome {
        number: job.number,
        template: job.template.clone(),
        model: job.model.clone(),
        status: ItemStatus::Failed,
        images: Vec::new(),
        error: None,
        duration_s: 0.0,
    };
    let request = setup.settings.request(job, slot.device);
    let mut plan =
        match prepare_plan(&request, &setup.profiles, &setup.catalog, &engine.capabilities()) {
            Ok(plan) => plan,
            Err(err) => {
                outcome.error = Some(err.to_string());
                outcome.duration_s = started.elapsed().as_secs_f64();
                return outcome;
            }
        };
    plan.run_dir = Some(setup.run_dir.clone());
    for item in &mut plan.items {
        item.out_dir = setup.run_dir.join(slug(&item.model.display_name, 64, "model"));
    }
    plan.runner = Some(RunnerTag {
        job: job.number,
        template: job.template.clone(),
        prompt: job.prompt.clone(),
        seed: setup.generator.run_seed(),
        gpu: slot.gpu.as_ref().map(|g| g.index),
    });
    let engine_job = match engine.submit(plan) {
        Ok(id) => id,
        Err(err) => {
            outcome.error = Some(err.to_string());
            outcome.duration_s = started.elapsed().as_secs_f64();
            return outcome;
        }
    };
    // The engine's clean stop: `AfterImage` lets the running image finish (a batch stops
    // after it), `Now` cancels within one step; either way the item's line says interrupted.
    let mut sent = StopLevel::Run;
    loop {
        let level = shared.stop.level();
        if level > sent {
            let mode =
                if level == StopLevel::Cancel { StopMode::Now } else { StopMode::AfterImage };
            if engine.stop(mode, "runner stop").is_ok() {
                sent = level;
            }
        }
        let event = match engine.events().recv_timeout(TICK) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                outcome.error = Some("the engine stopped".to_owned());
                break;
            }
        };
        match event {
            Event::Progress { step, steps, .. } => {
                shared.emit_lossy(RunnerEvent::Progress { slot: slot_index, step, steps });
            }
            Event::ImageSaved { image, .. } => outcome.images.push(image.path),
            Event::ItemSaved { record, .. }
            | Event::ItemFailed { record, .. }
            | Event::ItemCancelled { record, .. } => {
                outcome.status = record.status;
                outcome.error.clone_from(&record.error);
            }
            Event::JobFinished { job, .. } if job == engine_job => break,
            Event::Warning(message) => tracing::warn!("{message}"),
            _ => {}
        }
    }
    outcome.duration_s = started.elapsed().as_secs_f64();
    outcome
}
