//! The one engine behind every front end of a serving process, and what it has done.
//!
//! [`Service`] owns the [`Engine`] and is the only reader of its events: a dispatcher thread
//! (`imagelab-dispatch`) folds each event into the job table that request handlers read, sends
//! the client view ([`ApiEvent`]) to live streams, and hands the raw event to subscribers (the
//! window of `imagelab gui --serve`, stdio mode). Submitting never blocks: the engine's command
//! channel is bounded and refuses when full, and the service refuses past its own queue limit.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Local};
use crossbeam_channel::Receiver;
use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use super::events::{ApiEvent, ImageRef, JobState, PreviewImage, relative_summary};
use super::paths::AllowedRoots;
use super::stop::StopToken;
use crate::app::Wiring;
use crate::engine::{
    Capabilities, Engine, EngineError, Event, JobId, JobSummary, QueueStats, ResumeOptions,
    Resumed, StopMode, no_waker, prepare_plan,
};
use crate::models::catalog::{Catalog, EntryKind, ModelRef};
use crate::models::hub::HubConfig;
use crate::request::{Plan, Profiles, Request, RequestError};
use crate::storage::jobs_log::JobRecord;
use crate::vocab::{DeviceChoice, Mode, Precision};

/// The live events of every job, as a stream receives them.
pub type LiveEvents = broadcast::Receiver<Arc<ApiEvent>>;

/// Live events buffered for streams; a stream that lags further re-reads the job's history.
const LIVE_CAPACITY: usize = 1024;

/// How a serving process is set up.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The model catalog.
    pub catalog: Catalog,
    /// The style profiles.
    pub profiles: Profiles,
    /// Where `/models` looks for cached models.
    pub hub: HubConfig,
    /// The model requests get when they name none (A1111's `sd_model_checkpoint`).
    pub default_model: String,
    /// Folders besides the output folder that request paths may point into.
    pub allowed_dirs: Vec<PathBuf>,
    /// Jobs that may wait in the queue before submissions are refused.
    pub max_queued_jobs: usize,
    /// Finished jobs remembered (`GET /jobs/{id}`); older ones are forgotten.
    pub keep_finished_jobs: usize,
}

impl ServiceConfig {
    /// The built-in catalog and profiles, the default model, no extra folders, 256 queued jobs,
    /// 1000 finished jobs remembered.
    pub fn new(profiles: Profiles, hub: HubConfig) -> Self {
        Self {
            catalog: Catalog::builtin(),
            profiles,
            hub,
            default_model: crate::models::catalog::DEFAULT_MODEL.to_owned(),
            allowed_dirs: Vec::new(),
            max_queued_jobs: 256,
            keep_finished_jobs: 1000,
        }
    }
}

/// Who submitted a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `POST /jobs` or `POST /models/preload`.
    Api,
    /// The AUTOMATIC1111-compatible routes.
    A1111,
    /// A line on stdin (`imagelab serve --stdio`).
    Stdio,
    /// The window (`imagelab gui --serve`).
    Window,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Makes images.
    Generate,
    /// Loads a model ahead of the jobs behind it.
    Preload,
}

/// Why the service did not take a request.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A request field, named.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Too many jobs wait already.
    #[error("the queue is full ({0} jobs waiting); try again when some have finished")]
    QueueFull(usize),
    /// The service is shutting down.
    #[error("the server is shutting down and takes no new jobs")]
    Stopping,
    /// The engine refused or has stopped.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// No such job (never submitted, or forgotten).
    #[error("no job {0}")]
    UnknownJob(JobId),
    /// The service could not start.
    #[error("{0}")]
    Start(String),
}

/// Where a running image stands.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
pub struct StepProgress {
    /// Item index in the plan.
    pub item: usize,
    /// Items in the plan.
    pub items: usize,
    /// Image within the item.
    pub image: usize,
    /// Steps done, from 1.
    pub step: usize,
    /// Steps in all.
    pub steps: usize,
    /// Recent speed.
    pub it_per_s: f32,
}

/// What a finished job produced, handed to whoever waited for it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    /// How it ended.
    pub state: JobState,
    /// The engine's summary (full paths).
    pub summary: JobSummary,
    /// Every image saved, full path and seed, in order.
    pub images: Vec<(PathBuf, u64)>,
    /// The jobs-log line of every item that ran.
    pub records: Vec<JobRecord>,
    /// When it started running (`YYYYmmddHHMMSS`, as A1111's `job_timestamp`).
    pub job_timestamp: String,
}

/// A job's state as the watch channel carries it: the state, and the outcome once finished.
#[derive(Debug, Clone)]
pub struct JobPhase {
    /// Where it stands.
    pub state: JobState,
    /// Set once it has finished.
    pub outcome: Option<Arc<JobOutcome>>,
}

/// One job as `GET /jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct JobView {
    /// The job number.
    pub job: JobId,
    /// Who submitted it.
    pub origin: Origin,
    /// Images or a model load.
    pub kind: JobKind,
    /// Where it stands.
    pub state: JobState,
    /// A short description (prompt, sweep, or the model to load).
    pub label: String,
    /// The model (display name; the first one of a sweep).
    pub model: String,
    /// Items planned.
    pub items: usize,
    /// Images planned.
    pub images: usize,
    /// The request as submitted (with the chosen seed), for image jobs.
    pub request: Option<Request>,
    /// Images saved so far.
    pub saved: Vec<ImageRef>,
    /// The running image's progress.
    pub progress: Option<StepProgress>,
    /// What the engine is doing for it (model loading).
    pub message: Option<String>,
    /// How it ended (paths relative to the output folder).
    pub summary: Option<JobSummary>,
    /// RFC 3339 time it was submitted.
    pub submitted_at: String,
    /// RFC 3339 time it started running.
    pub started_at: Option<String>,
    /// RFC 3339 time it ended.
    pub finished_at: Option<String>,
    /// Where to follow it: `{"self": "/jobs/1", "events": "/jobs/1/events"}`.
    pub links: BTreeMap<String, String>,
}

/// What `GET /health` says.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Health {
    /// `ok`, or `stopping` during a graceful shutdown.
    pub status: String,
    /// `imagelab <version>`.
    pub version: String,
    /// `candle` or `mock`.
    pub backend: String,
    /// The device of the last item run or model loaded (`null` until then).
    pub device: Option<String>,
    /// The model the engine last loaded or used.
    pub loaded_model: Option<String>,
    /// The model requests get when they name none.
    pub default_model: String,
    /// What the backend can do.
    pub capabilities: Capabilities,
    /// The engine's queue counts.
    pub queue: QueueStats,
    /// The running job, if any.
    pub running_job: Option<JobId>,
    /// Jobs remembered (waiting, running and recently finished).
    pub jobs_known: usize,
    /// Seconds since the service started.
    pub uptime_s: f64,
    /// The output folder.
    pub output_dir: String,
}

/// The running job as A1111's `/sdapi/v1/progress` needs it.
#[derive(Debug, Clone)]
pub struct RunningJob {
    /// The job.
    pub job: JobId,
    /// Who submitted it.
    pub origin: Origin,
    /// txt2img or img2img (`None` for a preload).
    pub mode: Option<Mode>,
    /// Images planned.
    pub images: usize,
    /// Images finished (saved).
    pub images_done: usize,
    /// The running image's progress.
    pub progress: Option<StepProgress>,
    /// When it started running.
    pub started: Instant,
    /// `YYYYmmddHHMMSS` of its start.
    pub job_timestamp: String,
    /// The newest preview.
    pub preview: Option<Arc<PreviewImage>>,
    /// What the engine is doing (model loading).
    pub message: Option<String>,
    /// `/sdapi/v1/interrupt` was called for it.
    pub interrupted: bool,
    /// `/sdapi/v1/skip` was called for it.
    pub skipped: bool,
}

struct JobEntry {
    id: JobId,
    origin: Origin,
    kind: JobKind,
    label: String,
    model: String,
    mode: Option<Mode>,
    items: usize,
    images: usize,
    request: Option<Request>,
    state: JobState,
    history: Vec<Arc<ApiEvent>>,
    saved: Vec<ImageRef>,
    saved_full: Vec<(PathBuf, u64)>,
    records: Vec<JobRecord>,
    progress: Option<StepProgress>,
    preview: Option<Arc<PreviewImage>>,
    message: Option<String>,
    summary: Option<JobSummary>,
    submitted_at: DateTime<Local>,
    started: Option<(Instant, DateTime<Local>)>,
    finished_at: Option<DateTime<Local>>,
    interrupted: bool,
    skipped: bool,
    phase: watch::Sender<JobPhase>,
}

impl JobEntry {
    fn view(&self) -> JobView {
        let mut links = BTreeMap::new();
        links.insert("self".to_owned(), format!("/jobs/{}", self.id));
        links.insert("events".to_owned(), format!("/jobs/{}/events", self.id));
        JobView {
            job: self.id,
            origin: self.origin,
            kind: self.kind,
            state: self.state,
            label: self.label.clone(),
            model: self.model.clone(),
            items: self.items,
            images: self.images,
            request: self.request.clone(),
            saved: self.saved.clone(),
            progress: self.progress,
            message: self.message.clone(),
            summary: self.summary.clone(),
            submitted_at: self.submitted_at.to_rfc3339(),
            started_at: self.started.map(|(_, at)| at.to_rfc3339()),
            finished_at: self.finished_at.map(|at| at.to_rfc3339()),
            links,
        }
    }

    fn start(&mut self) {
        if self.started.is_none() {
            self.started = Some((Instant::now(), Local::now()));
        }
        if self.state == JobState::Queued {
            self.state = JobState::Running;
            self.phase.send_replace(JobPhase { state: JobState::Running, outcome: None });
        }
    }
}

/// A description of a job to submit.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Who submits it.
    pub origin: Origin,
    /// A short description; empty: made from the prompt.
    pub label: String,
}

struct State {
    jobs: BTreeMap<JobId, JobEntry>,
    finished: VecDeque<JobId>,
    running: Option<JobId>,
    queue: QueueStats,
    loaded_model: Option<String>,
    device: Option<String>,
    default_model: String,
}

type Subscriber = Box<dyn FnMut(&Event) -> bool + Send>;

struct Shared {
    state: Mutex<State>,
    live: broadcast::Sender<Arc<ApiEvent>>,
    subscribers: Mutex<Vec<Subscriber>>,
    finished: Condvar,
    output_root: PathBuf,
    keep_finished: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The engine of a serving process with its job table. Share it as `Arc<Service>`.
pub struct Service {
    engine: Mutex<Option<Engine>>,
    shared: Arc<Shared>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    config: ServiceConfig,
    roots: AllowedRoots,
    capabilities: Capabilities,
    backend_name: &'static str,
    stopping: AtomicBool,
    stopped_now: AtomicBool,
    stop: StopToken,
    started: Instant,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("backend", &self.backend_name)
            .field("output_root", &self.shared.output_root)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Starts the engine on `wiring` (previews on: `/progress` and event streams show them)
    /// and the dispatcher thread.
    ///
    /// # Errors
    /// An unusable output folder or allowed folder, or a thread that cannot start.
    pub fn start(
        wiring: Wiring,
        config: ServiceConfig,
        stop: StopToken,
    ) -> Result<Arc<Self>, ServiceError> {
        let mut engine_config = wiring.engine;
        engine_config.previews = true;
        let engine = Engine::spawn(wiring.backend, engine_config, no_waker())
            .map_err(|err| ServiceError::Start(err.to_string()))?;
        let output_root = engine.outputs().root.clone();
        let mut folders = vec![output_root.clone()];
        folders.extend(config.allowed_dirs.iter().cloned());
        let roots = AllowedRoots::new(&folders).map_err(ServiceError::Start)?;
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: BTreeMap::new(),
                finished: VecDeque::new(),
                running: None,
                queue: QueueStats::default(),
                loaded_model: None,
                device: None,
                default_model: config.default_model.clone(),
            }),
            live,
            subscribers: Mutex::new(Vec::new()),
            finished: Condvar::new(),
            output_root,
            keep_finished: config.keep_finished_jobs.max(1),
        });
        let events = engine.events().clone();
        let dispatch_shared = Arc::clone(&shared);
        let dispatcher = std::thread::Builder::new()
            .name("imagelab-dispatch".into())
            .spawn(move || dispatch(&dispatch_shared, &events))
            .map_err(|err| ServiceError::Start(format!("cannot start the dispatcher: {err}")))?;
        Ok(Arc::new(Self {
            capabilities: engine.capabilities(),
            backend_name: engine.backend_name(),
            engine: Mutex::new(Some(engine)),
            shared,
            dispatcher: Mutex::new(Some(dispatcher)),
            config,
            roots,
            stopping: AtomicBool::new(false),
            stopped_now: AtomicBool::new(false),
            stop,
            started: Instant::now(),
        }))
    }

    /// The setup.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The stop token shared with the front end that runs this service.
    pub fn stop_token(&self) -> &StopToken {
        &self.stop
    }

    /// The output folder.
    pub fn output_root(&self) -> &Path {
        &self.shared.output_root
    }

    /// `candle` or `mock`.
    pub fn backend_name(&self) -> &'static str {
        self.backend_name
    }

    /// What the backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// The model requests get when they name none.
    pub fn default_model(&self) -> String {
        lock(&self.shared.state).default_model.clone()
    }

    /// Sets the model requests get when they name none (A1111's `/options`).
    pub fn set_default_model(&self, model: String) {
        lock(&self.shared.state).default_model = model;
    }

    /// Resolves a model key against the catalog, with local paths confined to the allowed
    /// folders.
    ///
    /// # Errors
    /// An unknown model or a path outside the allowed folders, naming `field`.
    pub fn resolve_model(&self, field: &str, key: &str) -> Result<ModelRef, RequestError> {
        let model = self
            .config
            .catalog
            .resolve(key)
            .map_err(|err| RequestError::new(field, err.to_string()))?;
        if let crate::models::catalog::ModelSource::LocalDir(path)
        | crate::models::catalog::ModelSource::LocalFile(path) = &model.source
        {
            self.roots.check(field, path)?;
        }
        Ok(model)
    }

    /// Validates a request as the CLI does (fields, then the models' files), with its paths
    /// confined to the allowed folders, and expands it into a plan.
    ///
    /// # Errors
    /// The first bad field, named.
    pub fn prepare(&self, request: &Request) -> Result<Plan, RequestError> {
        let model = match request.sweep {
            crate::request::Sweep::AllModelsAllProfiles => None,
            _ => Some(self.resolve_model("model", &request.model)?),
        };
        self.roots.check_request(request, model.as_ref())?;
        let plan =
            prepare_plan(request, &self.config.profiles, &self.config.catalog, &self.capabilities)?;
        // The backend's planning-time model checks, as the CLI runs them.
        if let Some(engine) = lock(&self.engine).as_ref() {
            engine.check_models(&plan)?;
        }
        Ok(plan)
    }

    fn refuse_when_full(&self, state: &State) -> Result<(), ServiceError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(ServiceError::Stopping);
        }
        let waiting = state.jobs.values().filter(|job| job.state == JobState::Queued).count();
        if waiting >= self.config.max_queued_jobs {
            return Err(ServiceError::QueueFull(waiting));
        }
        Ok(())
    }

    /// Queues a plan (FIFO with every other front end's jobs). `on_accepted` runs with the job
    /// number before any of the job's events reach a subscriber.
    ///
    /// # Errors
    /// The queue is full, the service is stopping, or the engine refused.
    pub fn submit(
        &self,
        plan: Plan,
        submission: Submission,
        on_accepted: impl FnOnce(JobId),
    ) -> Result<JobId, ServiceError> {
        let mut state = lock(&self.shared.state);
        self.refuse_when_full(&state)?;
        let planned = Planned::of(&plan, submission);
        let job = {
            let engine = lock(&self.engine);
            let engine = engine.as_ref().ok_or(ServiceError::Stopping)?;
            engine.submit(plan)?
        };
        on_accepted(job);
        state.jobs.insert(job, planned.entry(job));
        Ok(job)
    }

    /// Replaces waiting job `job` with `plan` (the window's edit of a queued job), as
    /// `Engine::replace` does; the new job is in the job table like a submitted one, so
    /// `GET /jobs` and the event streams show it.
    ///
    /// # Errors
    /// The engine's refusal (a job that is not waiting), or a stopping service.
    pub fn replace(
        &self,
        job: JobId,
        plan: Plan,
        submission: Submission,
    ) -> Result<JobId, ServiceError> {
        // The job table stays locked until the new job is in it: the dispatcher drops events
        // of jobs the table does not know.
        let mut state = lock(&self.shared.state);
        let planned = Planned::of(&plan, submission);
        let new_job = self.engine_do(|engine| engine.replace(job, plan))?;
        state.jobs.insert(new_job, planned.entry(new_job));
        Ok(new_job)
    }

    /// Takes unfinished job `id` of the persistent queue back into the queue (the window's
    /// resume offer), as `Engine::resume` does, into the job table like a submitted one.
    ///
    /// # Errors
    /// A full queue, the engine's refusal, or a stopping service.
    pub fn resume(
        &self,
        id: &str,
        options: ResumeOptions,
        submission: Submission,
    ) -> Result<Option<Resumed>, ServiceError> {
        let mut state = lock(&self.shared.state);
        self.refuse_when_full(&state)?;
        let resumed = self.engine_do(|engine| engine.resume(id, options))?;
        if let Some(resumed) = &resumed {
            let planned = Planned::of(&resumed.plan, submission);
            state.jobs.insert(resumed.job, planned.entry(resumed.job));
        }
        Ok(resumed)
    }

    /// Queues a model load (FIFO) so the jobs behind it find the model ready.
    ///
    /// # Errors
    /// An unknown model or refused path (naming `model`), a full queue, or a stopping service.
    pub fn preload(
        &self,
        model_key: &str,
        device: DeviceChoice,
        dtype: Option<Precision>,
        origin: Origin,
    ) -> Result<JobId, ServiceError> {
        let model = self.resolve_model("model", model_key)?;
        if let EntryKind::Lora { .. } = model.kind {
            return Err(RequestError::new(
                "model",
                format!("{} is a LoRA adapter, not a model to load", model.display_name),
            )
            .into());
        }
        let mut state = lock(&self.shared.state);
        self.refuse_when_full(&state)?;
        let name = model.display_name.clone();
        let job = {
            let engine = lock(&self.engine);
            let engine = engine.as_ref().ok_or(ServiceError::Stopping)?;
            engine.preload(model, device, dtype)?
        };
        state.jobs.insert(
            job,
            new_entry(
                job,
                origin,
                JobKind::Preload,
                format!("load {name}"),
                name,
                None,
                0,
                0,
                None,
            ),
        );
        Ok(job)
    }

    /// Cancels a job: a waiting one is dropped, a running one stops within one step. Returns
    /// its state before the cancel.
    ///
    /// # Errors
    /// An unknown job, or an engine that stopped.
    pub fn cancel(&self, job: JobId) -> Result<JobState, ServiceError> {
        let state = {
            let state = lock(&self.shared.state);
            state.jobs.get(&job).map(|entry| entry.state).ok_or(ServiceError::UnknownJob(job))?
        };
        if !state.is_finished() {
            self.with_engine(|engine| engine.cancel(job))?;
        }
        Ok(state)
    }

    /// A1111's interrupt: cancels the running job (marked interrupted). Returns it, if any.
    ///
    /// # Errors
    /// An engine that stopped.
    pub fn interrupt(&self) -> Result<Option<JobId>, ServiceError> {
        let running = {
            let mut state = lock(&self.shared.state);
            let running = state.running;
            if let Some(entry) = running.and_then(|job| state.jobs.get_mut(&job)) {
                entry.interrupted = true;
            }
            running
        };
        if let Some(job) = running {
            self.with_engine(|engine| engine.cancel(job))?;
        }
        Ok(running)
    }

    /// A1111's skip: stops the running item and goes on with the next one.
    ///
    /// # Errors
    /// An engine that stopped.
    pub fn skip_current(&self) -> Result<(), ServiceError> {
        {
            let mut state = lock(&self.shared.state);
            if let Some(job) = state.running
                && let Some(entry) = state.jobs.get_mut(&job)
            {
                entry.skipped = true;
            }
        }
        self.with_engine(Engine::skip_current)
    }

    /// Drops every waiting job.
    ///
    /// # Errors
    /// An engine that stopped.
    pub fn clear_queue(&self) -> Result<(), ServiceError> {
        self.with_engine(Engine::clear_queue)
    }

    fn with_engine(
        &self,
        act: impl FnOnce(&Engine) -> Result<(), EngineError>,
    ) -> Result<(), ServiceError> {
        self.engine_do(act)
    }

    /// Runs `act` on the engine (the window's persistent-queue commands: pause, move, replace,
    /// resume, discard).
    ///
    /// # Errors
    /// The engine stopped, or what `act` returns.
    pub fn engine_do<T>(
        &self,
        act: impl FnOnce(&Engine) -> Result<T, EngineError>,
    ) -> Result<T, ServiceError> {
        let engine = lock(&self.engine);
        let engine = engine.as_ref().ok_or(ServiceError::Engine(EngineError::Stopped))?;
        Ok(act(engine)?)
    }

    /// A job as `GET /jobs/{id}` shows it.
    pub fn job(&self, job: JobId) -> Option<JobView> {
        lock(&self.shared.state).jobs.get(&job).map(JobEntry::view)
    }

    /// Every job remembered, oldest first.
    pub fn jobs(&self) -> Vec<JobView> {
        lock(&self.shared.state).jobs.values().map(JobEntry::view).collect()
    }

    /// Follows a job's state; the outcome arrives with its end.
    pub fn watch_job(&self, job: JobId) -> Option<watch::Receiver<JobPhase>> {
        lock(&self.shared.state).jobs.get(&job).map(|entry| entry.phase.subscribe())
    }

    /// A job's history so far and a live receiver that continues it without a gap.
    pub fn follow_job(&self, job: JobId) -> Option<(Vec<Arc<ApiEvent>>, LiveEvents)> {
        let state = lock(&self.shared.state);
        let entry = state.jobs.get(&job)?;
        Some((entry.history.clone(), self.shared.live.subscribe()))
    }

    /// The kept events of a job from index `from` on (a lagging stream catches up).
    pub fn history_from(&self, job: JobId, from: usize) -> Vec<Arc<ApiEvent>> {
        lock(&self.shared.state)
            .jobs
            .get(&job)
            .map(|entry| entry.history.iter().skip(from).cloned().collect())
            .unwrap_or_default()
    }

    /// The running job, for A1111's progress.
    pub fn running(&self) -> Option<RunningJob> {
        let state = lock(&self.shared.state);
        let entry = state.jobs.get(&state.running?)?;
        let (started, at) = entry.started?;
        Some(RunningJob {
            job: entry.id,
            origin: entry.origin,
            mode: entry.mode,
            images: entry.images,
            images_done: entry.saved.len(),
            progress: entry.progress,
            started,
            job_timestamp: at.format("%Y%m%d%H%M%S").to_string(),
            preview: entry.preview.clone(),
            message: entry.message.clone(),
            interrupted: entry.interrupted,
            skipped: entry.skipped,
        })
    }

    /// What `GET /health` says.
    pub fn health(&self) -> Health {
        let state = lock(&self.shared.state);
        let stopping = self.stopping.load(Ordering::SeqCst);
        Health {
            status: if stopping { "stopping" } else { "ok" }.to_owned(),
            version: crate::storage::metadata::version_string(),
            backend: self.backend_name.to_owned(),
            device: state.device.clone(),
            loaded_model: state.loaded_model.clone(),
            default_model: state.default_model.clone(),
            capabilities: self.capabilities,
            queue: state.queue,
            running_job: state.running,
            jobs_known: state.jobs.len(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            output_dir: self.shared.output_root.display().to_string(),
        }
    }

    /// Calls `on_event` on the dispatcher thread with every engine event from now on, until it
    /// returns `false`. It must not block for long: every front end waits while it runs.
    pub fn subscribe(&self, on_event: impl FnMut(&Event) -> bool + Send + 'static) {
        lock(&self.shared.subscribers).push(Box::new(on_event));
    }

    /// Blocks until every job in `jobs` has finished, or `stop` is asked for (graceful or not;
    /// returns `false` then, or on timeout).
    pub fn wait_finished(&self, jobs: &[JobId], timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let mut state = lock(&self.shared.state);
        loop {
            let pending = jobs
                .iter()
                .any(|job| state.jobs.get(job).is_some_and(|entry| !entry.state.is_finished()));
            if !pending {
                return true;
            }
            if let Some(deadline) = deadline
                && Instant::now() >= deadline
            {
                return false;
            }
            state = self
                .shared
                .finished
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Whether a graceful stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Begins a graceful stop: no new jobs are taken, and the engine gets a clean stop
    /// ([`StopMode::AfterImage`]): the waiting jobs end unstarted (reported as interrupted) and
    /// the running image finishes and is saved with its jobs-log line.
    pub fn begin_stop(&self) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            let reason = self.stop.reason();
            tracing::info!("stopping ({reason}): no new jobs; the running image finishes");
            if let Err(err) = self.with_engine(|engine| engine.stop(StopMode::AfterImage, &reason))
            {
                tracing::warn!("cannot stop the engine: {err}");
            }
        }
    }

    /// Stops now ([`StopMode::Now`]): the running image is cancelled within one step
    /// (nothing half-written is kept).
    pub fn stop_now(&self) {
        self.begin_stop();
        if !self.stopped_now.swap(true, Ordering::SeqCst) {
            let reason = self.stop.reason();
            if let Err(err) = self.with_engine(|engine| engine.stop(StopMode::Now, &reason)) {
                tracing::warn!("cannot stop the engine: {err}");
            }
        }
    }

    /// Whether the engine is idle: nothing waits and nothing runs.
    pub fn is_idle(&self) -> bool {
        let state = lock(&self.shared.state);
        state.running.is_none() && state.jobs.values().all(|job| job.state.is_finished())
    }

    /// Waits for the running job (a graceful stop) unless `stop_now` comes, then stops the
    /// engine and the dispatcher. Safe to call twice.
    pub fn shutdown(&self) {
        self.begin_stop();
        let running: Vec<JobId> = lock(&self.shared.state).running.into_iter().collect();
        while !self.wait_finished(&running, Some(Duration::from_millis(200))) {
            if self.stop.is_immediate() {
                self.stop_now();
            }
        }
        let engine = lock(&self.engine).take();
        if let Some(engine) = engine {
            for event in engine.shutdown() {
                self.shared.apply(event);
            }
        }
        let dispatcher = lock(&self.dispatcher).take();
        if let Some(dispatcher) = dispatcher
            && dispatcher.join().is_err()
        {
            tracing::error!("the dispatcher thread panicked");
        }
        // Subscribers hold their front end's channels; dropping them lets those end.
        lock(&self.shared.subscribers).clear();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the job table keeps of a plan queued by a front end.
struct Planned {
    origin: Origin,
    label: String,
    model: String,
    mode: Option<Mode>,
    items: usize,
    images: usize,
    request: Request,
}

impl Planned {
    fn of(plan: &Plan, submission: Submission) -> Self {
        let label =
            if submission.label.is_empty() { describe(&plan.request) } else { submission.label };
        let mut request = plan.request.clone();
        request.seed = Some(plan.seed_base);
        Planned {
            origin: submission.origin,
            label,
            model: plan
                .items
                .first()
                .map(|item| item.model.display_name.clone())
                .unwrap_or_default(),
            mode: Some(request.mode()),
            items: plan.items.len(),
            images: plan.image_count(),
            request,
        }
    }

    fn entry(self, job: JobId) -> JobEntry {
        new_entry(
            job,
            self.origin,
            JobKind::Generate,
            self.label,
            self.model,
            self.mode,
            self.items,
            self.images,
            Some(self.request),
        )
    }
}

#[allow(clippy::too_many_arguments, reason = "one constructor for both kinds of job")]
fn new_entry(
    id: JobId,
    origin: Origin,
    kind: JobKind,
    label: String,
    model: String,
    mode: Option<Mode>,
    items: usize,
    images: usize,
    request: Option<Request>,
) -> JobEntry {
    let (phase, _) = watch::channel(JobPhase { state: JobState::Queued, outcome: None });
    JobEntry {
        id,
        origin,
        kind,
        label,
        model,
        mode,
        items,
        images,
        request,
        state: JobState::Queued,
        history: Vec::new(),
        saved: Vec::new(),
        saved_full: Vec::new(),
        records: Vec::new(),
        progress: None,
        preview: None,
        message: None,
        summary: None,
        submitted_at: Local::now(),
        started: None,
        finished_at: None,
        interrupted: false,
        skipped: false,
        phase,
    }
}

/// A short label: the sweep and the start of the prompt.
fn describe(request: &Request) -> String {
    let prompt: String = request.prompt.chars().take(40).collect();
    match request.sweep {
        crate::request::Sweep::None => prompt,
        sweep => format!("[{}] {prompt}", sweep.slug()),
    }
}

/// The dispatcher thread: every engine event into the job table, the live streams and the
/// subscribers, until the engine's event channel closes.
fn dispatch(shared: &Shared, events: &Receiver<Event>) {
    while let Ok(event) = events.recv() {
        shared.apply(event.clone());
        let mut subscribers = lock(&shared.subscribers);
        subscribers.retain_mut(|on_event| on_event(&event));
    }
}

impl Shared {
    /// Folds one engine event into the job table and sends its client view to live streams.
    #[allow(clippy::too_many_lines, reason = "one arm per engine event, read top to bottom")]
    fn apply(&self, event: Event) {
        let api = Arc::new(ApiEvent::from_engine(&event, &self.output_root));
        let mut state = lock(&self.state);
        let state = &mut *state;
        if let Some(job) = event.job()
            && let Some(entry) = state.jobs.get_mut(&job)
        {
            match &event {
                Event::ModelLoading { message, model, .. } => {
                    entry.start();
                    state.running = Some(job);
                    entry.message = Some(format!("{model}: {message}"));
                }
                Event::ItemStarted { item, items, .. } => {
                    entry.start();
                    state.running = Some(job);
                    entry.message = None;
                    entry.progress = Some(StepProgress {
                        item: *item,
                        items: *items,
                        image: 0,
                        step: 0,
                        steps: 0,
                        it_per_s: 0.0,
                    });
                }
                Event::Progress { item, image, step, steps, it_per_s, .. } => {
                    entry.message = None;
                    let items = entry.progress.map_or(entry.items, |p| p.items);
                    entry.progress = Some(StepProgress {
                        item: *item,
                        items,
                        image: *image,
                        step: *step,
                        steps: *steps,
                        it_per_s: *it_per_s,
                    });
                }
                Event::Preview { .. } => {
                    if let ApiEvent::Preview { preview, .. } = api.as_ref() {
                        entry.preview = Some(Arc::clone(preview));
                    }
                }
                Event::ImageSaved { image, .. } => {
                    entry.saved.push(ImageRef::new(&self.output_root, &image.path, image.seed));
                    entry.saved_full.push((image.path.clone(), image.seed));
                }
                Event::ItemSaved { record, .. } => {
                    state.loaded_model = Some(record.model.clone());
                    state.device = Some(record.device.clone());
                    entry.records.push((**record).clone());
                }
                Event::ItemFailed { record, .. } | Event::ItemCancelled { record, .. } => {
                    if !record.device.is_empty() {
                        state.device = Some(record.device.clone());
                    }
                    entry.records.push((**record).clone());
                }
                Event::JobFinished { summary, .. } => {
                    let finished_state = JobState::of_summary(summary);
                    if entry.kind == JobKind::Preload && finished_state == JobState::Done {
                        state.loaded_model = Some(entry.model.clone());
                    }
                    entry.state = finished_state;
                    entry.summary = Some(relative_summary(summary, &self.output_root));
                    entry.finished_at = Some(Local::now());
                    entry.progress = None;
                    entry.message = None;
                    let outcome = JobOutcome {
                        state: finished_state,
                        summary: summary.clone(),
                        images: entry.saved_full.clone(),
                        records: entry.records.clone(),
                        job_timestamp: entry
                            .started
                            .map_or_else(Local::now, |(_, at)| at)
                            .format("%Y%m%d%H%M%S")
                            .to_string(),
                    };
                    entry.phase.send_replace(JobPhase {
                        state: finished_state,
                        outcome: Some(Arc::new(outcome)),
                    });
                    if state.running == Some(job) {
                        state.running = None;
                    }
                    state.finished.push_back(job);
                }
                Event::Queued { .. } | Event::QueueChanged(_) | Event::Warning(_) => {}
            }
            if api.is_kept() {
                entry.history.push(Arc::clone(&api));
            }
        }
        match &event {
            Event::QueueChanged(counts) => state.queue = *counts,
            Event::Warning(message) => tracing::warn!("{message}"),
            _ => {}
        }
        while state.finished.len() > self.keep_finished {
            if let Some(old) = state.finished.pop_front() {
                state.jobs.remove(&old);
            }
        }
        // Sent under the lock, so a stream that copies the history and subscribes under the
        // same lock sees every event exactly once.
        let _ = self.live.send(api);
        if matches!(event, Event::JobFinished { .. }) {
            self.finished.notify_all();
        }
    }
}
