//! The eframe app: owns the engine handle (its own engine, or the one `imagelab gui --serve`
//! shares with HTTP clients) and the panels. `logic()` drains engine and decoder results
//! within a small time budget; `ui()` draws the panels and turns their actions into engine
//! commands. The UI thread never waits on the engine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, TrySendError};

use crate::app::StopSignals;
use crate::engine::{
    Backend, Engine, EngineConfig, EngineError, Event, JobId, ResumeOptions, Resumed, StopMode,
    UnfinishedJob, relative_path,
};
use crate::models::catalog::Catalog;
use crate::request::profiles::import_styles;
use crate::request::restore::restore_settings;
use crate::request::{Plan, Profiles, Request};
use crate::server::{Origin, Service, service::Submission};
use crate::slurm::client::Client;
use crate::storage::favorites;
use crate::storage::metadata::{Recovered, recover};

use super::controls::{ControlAction, ControlsContext, ControlsPanel};
use super::gallery::{GalleryAction, GalleryPanel};
use super::insights::{InsightsAction, InsightsPanel, InsightsResult, InsightsWorker};
use super::log::{LogPanel, Severity};
use super::model_status::{ModelStatusSource, NoModelStatus};
use super::queue::{JobState, QueueAction, QueuePanel, QueuedJob};
use super::runner_panel::{RunnerAction, RunnerPanel};
use super::settings::{FormSettings, STORAGE_KEY};
use super::slurm::{SlurmAction, SlurmPanel, SlurmReply, SlurmRequest, SlurmSetup, SlurmWorker};
use super::sweep::{SweepAction, SweepPanel};
use super::thumbnails::{Loaded, ThumbnailLoader};
use super::watch::{JobProgress, WatchPanel};
use crate::gpu::watch::GpuWatcher;
use crate::gpu::{IdleRule, Visibility};
use crate::runner::limits::{parse_duration, parse_until};
use crate::runner::pool::{GpuChoice, GpuOpener, plan_slots};
use crate::runner::{
    BackendFactory, Generator, JobSettings, RunChoices, RunnerEvent, RunnerHandle, RunnerSetup,
    Slot, StopLevel, StopToken, TemplateSet,
};

/// Time spent draining engine events per frame; the rest waits for the next frame.
pub const EVENT_BUDGET: Duration = Duration::from_millis(4);
/// How often the GPU table is refreshed (on its own thread).
pub const GPU_REFRESH: Duration = Duration::from_secs(2);
/// How often a runner worker looks at a busy GPU again.
pub const RUNNER_RECHECK: Duration = Duration::from_secs(10);
/// Time spent uploading decoded thumbnails per frame.
pub const THUMBNAIL_BUDGET: Duration = Duration::from_millis(3);

/// Which engine the window drives.
pub enum WindowEngine {
    /// Its own engine thread on this generator (candle or mock).
    Spawn(Box<dyn Backend>),
    /// The engine of a server (`imagelab gui --serve`): one queue for the window and the API.
    Shared(Arc<Service>),
}

/// How to start the window.
pub struct AppConfig {
    /// The output root.
    pub output_root: PathBuf,
    /// The engine to drive.
    pub engine: WindowEngine,
    /// A notice to show at start (e.g. why the mock runs instead of candle).
    pub notice: Option<String>,
    /// `INSTANCE_ID`: selects `jobs_<id>.log`.
    pub instance_id: Option<String>,
    /// A profiles file to use instead of `./profiles.ron` or the built-in profiles.
    pub profiles_path: Option<PathBuf>,
    /// Makes one backend per runner worker (`None`: the Runner panel cannot start runs).
    pub backend_factory: Option<BackendFactory>,
    /// Opens the GPU lister for the GPU table and `--gpus auto` (`None`: no GPU awareness).
    pub gpus: Option<GpuOpener>,
    /// `CUDA_VISIBLE_DEVICES` / `CUDA_DEVICE_ORDER`.
    pub visibility: Visibility,
    /// The models on offer: the catalog and what the models folders hold.
    pub catalog: Catalog,
    /// The user profiles file (imported styles), merged after the profiles; `None`: none, and
    /// "Import styles" says so.
    pub user_profiles_path: Option<PathBuf>,
    /// Submitting to Slurm (`None`: sbatch not found, no "Submit to Slurm"; the start-up
    /// offer still asks `squeue` on `PATH` about Slurm runs' jobs).
    pub slurm: Option<SlurmSetup>,
}

impl AppConfig {
    /// A window on `output_root` with `backend`: no notice, no instance id, the profiles of
    /// `./profiles.ron` or the built-in ones.
    pub fn new(output_root: PathBuf, backend: Box<dyn Backend>) -> Self {
        Self {
            output_root,
            engine: WindowEngine::Spawn(backend),
            notice: None,
            instance_id: None,
            profiles_path: None,
            backend_factory: None,
            gpus: None,
            visibility: Visibility::default(),
            catalog: Catalog::builtin(),
            user_profiles_path: None,
            slurm: None,
        }
    }
}

/// Events for the window beyond this many wait; progress and previews beyond it are dropped.
const SHARED_EVENT_CAPACITY: usize = 1024;
/// How long the server's dispatcher waits for a window that does not drain its events before
/// it drops one (so a stalled window never stalls the API).
const SHARED_EVENT_WAIT: Duration = Duration::from_secs(2);

/// The engine handle the window holds.
enum EngineLink {
    /// Its own engine.
    Own(Box<Engine>),
    /// A server's engine; events arrive through a subscription.
    Shared { service: Arc<Service>, events: Receiver<Event> },
}

impl EngineLink {
    /// Subscribes to a server's engine, waking the window on every event.
    fn shared(service: Arc<Service>, waker: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (sender, events) = crossbeam_channel::bounded(SHARED_EVENT_CAPACITY);
        service.subscribe(move |event| {
            let alive = match event {
                Event::Progress { .. } | Event::Preview { .. } | Event::ModelLoading { .. } => {
                    !matches!(sender.try_send(event.clone()), Err(TrySendError::Disconnected(_)))
                }
                _ => match sender.send_timeout(event.clone(), SHARED_EVENT_WAIT) {
                    Ok(()) => true,
                    Err(SendTimeoutError::Timeout(_)) => {
                        tracing::warn!("the window is not draining its events; one was dropped");
                        true
                    }
                    Err(SendTimeoutError::Disconnected(_)) => false,
                },
            };
            if alive {
                waker();
            }
            alive
        });
        Self::Shared { service, events }
    }

    fn events(&self) -> &Receiver<Event> {
        match self {
            Self::Own(engine) => engine.events(),
            Self::Shared { events, .. } => events,
        }
    }

    fn backend_name(&self) -> &'static str {
        match self {
            Self::Own(engine) => engine.backend_name(),
            Self::Shared { service, .. } => service.backend_name(),
        }
    }

    fn submit(&self, plan: Plan, label: &str) -> Result<JobId, String> {
        match self {
            Self::Own(engine) => engine.submit(plan).map_err(|err| err.to_string()),
            Self::Shared { service, .. } => service
                .submit(
                    plan,
                    Submission { origin: Origin::Window, label: label.to_owned() },
                    |_| {},
                )
                .map_err(|err| err.to_string()),
        }
    }

    /// Replaces waiting job `job` with `plan` (a server's job table learns of the new job).
    fn replace(&self, job: JobId, plan: Plan, label: &str) -> Result<JobId, String> {
        match self {
            Self::Own(engine) => engine.replace(job, plan).map_err(|err| err.to_string()),
            Self::Shared { service, .. } => service
                .replace(job, plan, Submission { origin: Origin::Window, label: label.to_owned() })
                .map_err(|err| err.to_string()),
        }
    }

    /// Takes unfinished job `id` back into the queue (a server's job table learns of it).
    fn resume(&self, id: &str, label: &str) -> Result<Option<Resumed>, String> {
        match self {
            Self::Own(engine) => {
                engine.resume(id, ResumeOptions::default()).map_err(|err| err.to_string())
            }
            Self::Shared { service, .. } => service
                .resume(
                    id,
                    ResumeOptions::default(),
                    Submission { origin: Origin::Window, label: label.to_owned() },
                )
                .map_err(|err| err.to_string()),
        }
    }

    /// All the checks before a submit: the request, then the models' files (a server's engine
    /// also confines paths to its allowed folders and uses its own profiles and catalog).
    fn prepare(
        &self,
        request: &Request,
        profiles: &Profiles,
        catalog: &Catalog,
    ) -> Result<Plan, String> {
        match self {
            Self::Own(engine) => {
                engine.prepare(request, profiles, catalog).map_err(|err| err.to_string())
            }
            Self::Shared { service, .. } => service.prepare(request).map_err(|err| err.to_string()),
        }
    }

    /// The persistent queue's commands (pause, move, replace, resume, discard) on the engine,
    /// its own or the server's.
    fn with_engine<T>(
        &self,
        act: impl FnOnce(&Engine) -> Result<T, EngineError>,
    ) -> Result<T, String> {
        match self {
            Self::Own(engine) => act(engine).map_err(|err| err.to_string()),
            Self::Shared { service, .. } => service.engine_do(act).map_err(|err| err.to_string()),
        }
    }

    fn cancel(&self, job: JobId) -> Result<(), String> {
        match self {
            Self::Own(engine) => engine.cancel(job).map_err(|err| err.to_string()),
            Self::Shared { service, .. } => {
                service.cancel(job).map(|_| ()).map_err(|err| err.to_string())
            }
        }
    }

    fn skip_current(&self) -> Result<(), String> {
        match self {
            Self::Own(engine) => engine.skip_current().map_err(|err| err.to_string()),
            Self::Shared { service, .. } => service.skip_current().map_err(|err| err.to_string()),
        }
    }

    /// A clean stop (SIGINT/SIGTERM): its own engine is told directly; a server's engine is
    /// stopped through the server's stop token, so the API stops taking work as well.
    fn stop(&self, mode: StopMode, reason: &str) -> Result<(), String> {
        match self {
            Self::Own(engine) => engine.stop(mode, reason).map_err(|err| err.to_string()),
            Self::Shared { service, .. } => {
                match mode {
                    StopMode::AfterImage => service.stop_token().request_graceful(reason),
                    StopMode::Now => service.stop_token().request_immediate(reason),
                }
                Ok(())
            }
        }
    }

    fn clear_queue(&self) -> Result<(), String> {
        match self {
            Self::Own(engine) => engine.clear_queue().map_err(|err| err.to_string()),
            Self::Shared { service, .. } => service.clear_queue().map_err(|err| err.to_string()),
        }
    }

    /// A job another front end submitted (the API), as the queue panel lists it.
    fn describe(&self, job: JobId) -> Option<QueuedJob> {
        let Self::Shared { service, .. } = self else { return None };
        let view = service.job(job)?;
        let origin = serde_json::to_value(view.origin).ok()?.as_str()?.to_owned();
        Some(QueuedJob {
            job,
            label: format!("[{origin}] {}", view.label),
            images: view.images,
            state: JobState::Pending,
        })
    }

    /// Stops the engine: its own is cancelled and joined; a server's is asked to stop
    /// gracefully (the running image finishes) and the server shuts it down.
    fn shutdown(self) {
        match self {
            Self::Own(engine) => {
                engine.shutdown();
            }
            Self::Shared { service, .. } => service.stop_token().request_graceful("window closed"),
        }
    }
}

/// What the central panel shows below the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CentralView {
    /// Live preview and progress.
    #[default]
    Preview,
    /// The sweep grid.
    Sweep,
    /// The Insights panel.
    Insights,
    /// The Slurm runs submitted from the window.
    Slurm,
}

/// The lab window.
pub struct LabApp {
    engine: Option<EngineLink>,
    output_root: PathBuf,
    catalog: Catalog,
    profiles: Profiles,
    profiles_path: Option<PathBuf>,
    user_profiles_path: Option<PathBuf>,
    model_status: Box<dyn ModelStatusSource>,
    /// The left panel.
    pub controls: ControlsPanel,
    /// Preview and progress.
    pub watch: WatchPanel,
    /// Submitted jobs.
    pub queue: QueuePanel,
    /// Images.
    pub gallery: GalleryPanel,
    /// Messages.
    pub log: LogPanel,
    /// The sweep grid.
    pub sweep: SweepPanel,
    /// What the favourites share.
    pub insights: InsightsPanel,
    /// What the central panel shows.
    pub view: CentralView,
    /// "Submit to Slurm" and the status of the runs submitted from here.
    pub slurm: SlurmPanel,
    slurm_setup: Option<SlurmSetup>,
    slurm_worker: Option<SlurmWorker>,
    insights_worker: InsightsWorker,
    /// The overnight runner and the GPU table.
    pub runner_panel: RunnerPanel,
    runner: Option<RunnerHandle>,
    gpu_watcher: Option<GpuWatcher>,
    backend_factory: Option<BackendFactory>,
    gpu_opener: Option<GpuOpener>,
    visibility: Visibility,
    instance_id: Option<String>,
    waker: Arc<dyn Fn() + Send + Sync>,
    thumbnails: ThumbnailLoader,
    last_seed: Option<u64>,
    job_labels: HashMap<JobId, String>,
    /// What each job of this session asked for (to edit a waiting one).
    job_requests: HashMap<JobId, Request>,
    /// SIGINT/SIGTERM: forwarded to the engine as a clean stop; the window closes when idle.
    stop_signals: Option<StopSignals>,
    /// The strongest stop sent to the engine so far.
    stop_sent: Option<StopMode>,
}

impl std::fmt::Debug for LabApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabApp").field("output_root", &self.output_root).finish_non_exhaustive()
    }
}

impl LabApp {
    /// Builds the app: restores the form from eframe storage, starts the engine (waking the
    /// window on every event) and the thumbnail decoder, and lists the output folder.
    pub fn new(cc: &eframe::CreationContext<'_>, config: AppConfig) -> Self {
        let form = cc
            .storage
            .and_then(|storage| eframe::get_value::<FormSettings>(storage, STORAGE_KEY))
            .unwrap_or_default();
        Self::with_form(&cc.egui_ctx, config, form)
    }

    /// Builds the app with a given form (tests, and `new` after reading storage).
    #[allow(clippy::too_many_lines, reason = "one field of the window after the other")]
    pub fn with_form(ctx: &egui::Context, config: AppConfig, form: FormSettings) -> Self {
        let mut log = LogPanel::default();
        if let Some(notice) = config.notice {
            log.push(Severity::Warning, notice);
        }
        let profiles = Profiles::discover(
            config.profiles_path.as_deref(),
            config.user_profiles_path.as_deref(),
        )
        .unwrap_or_else(|err| {
            log.push(Severity::Error, format!("{err}; using the built-in profiles"));
            Profiles::builtin()
        });
        let repaint_ctx = ctx.clone();
        let waker: Arc<dyn Fn() + Send + Sync> = Arc::new(move || repaint_ctx.request_repaint());
        let engine_config = EngineConfig {
            output_root: config.output_root.clone(),
            instance_id: config.instance_id.clone(),
            previews: true,
        };
        let gpu_watcher = config.gpus.as_ref().and_then(|open| {
            let open = Arc::clone(open);
            GpuWatcher::spawn(
                Box::new(move || open()),
                config.visibility.clone(),
                IdleRule::default(),
                GPU_REFRESH,
                waker.clone(),
            )
            .map_err(|err| {
                log.push(Severity::Error, format!("cannot start the GPU watcher: {err}"));
            })
            .ok()
        });
        let engine = start_engine(config.engine, engine_config, &waker, &mut log);
        let mut insights_worker = InsightsWorker::spawn(waker.clone()).unwrap_or_else(|err| {
            log.push(Severity::Error, format!("cannot start the insights worker: {err}"));
            InsightsWorker::inert()
        });
        let mut insights = InsightsPanel::default();
        insights.pending = insights_worker.analyze(&config.output_root, insights.min_support);
        insights_worker.sweeps(&config.output_root);
        let thumbnails = ThumbnailLoader::spawn(waker.clone()).unwrap_or_else(|err| {
            log.push(Severity::Error, format!("cannot start the thumbnail decoder: {err}"));
            ThumbnailLoader::inert()
        });
        thumbnails.scan(&config.output_root);
        let mut gallery = GalleryPanel::default();
        match favorites::read(&config.output_root) {
            Ok(starred) => gallery.favorites = starred,
            Err(err) => log.push(Severity::Warning, format!("favourites: {err}")),
        }
        let controls = ControlsPanel { form, ..ControlsPanel::default() };
        let client =
            config.slurm.as_ref().map_or_else(Client::on_path, |setup| setup.client.clone());
        let slurm_worker = SlurmWorker::spawn(client, waker.clone())
            .map_err(|err| {
                log.push(Severity::Error, format!("cannot start the Slurm thread: {err}"));
            })
            .ok();
        let (offer, slurm_jobs) = unfinished_offer(engine.as_ref(), &config.output_root, &mut log);
        if !slurm_jobs.is_empty() {
            // Offered once Slurm says their tasks are gone (asked off the UI thread).
            let request =
                SlurmRequest::CheckOffer { root: config.output_root.clone(), jobs: slurm_jobs };
            match &slurm_worker {
                Some(worker) => {
                    if let Err(err) = worker.send(request) {
                        log.push(Severity::Warning, format!("Slurm runs' jobs not offered: {err}"));
                    }
                }
                None => {
                    log.push(Severity::Warning, "Slurm runs' jobs not offered: no Slurm thread");
                }
            }
        }
        let queue = QueuePanel { offer, ..QueuePanel::default() };
        let slurm = SlurmPanel { available: config.slurm.is_some(), ..SlurmPanel::default() };
        Self {
            engine,
            output_root: config.output_root,
            catalog: config.catalog,
            profiles,
            profiles_path: config.profiles_path,
            user_profiles_path: config.user_profiles_path,
            model_status: Box::new(NoModelStatus),
            controls,
            watch: WatchPanel::default(),
            queue,
            gallery,
            log,
            sweep: SweepPanel::default(),
            insights,
            view: CentralView::default(),
            slurm,
            slurm_setup: config.slurm,
            slurm_worker,
            insights_worker,
            runner_panel: RunnerPanel::default(),
            runner: None,
            gpu_watcher,
            backend_factory: config.backend_factory,
            gpu_opener: config.gpus,
            visibility: config.visibility,
            instance_id: config.instance_id,
            waker,
            thumbnails,
            last_seed: None,
            job_labels: HashMap::new(),
            job_requests: HashMap::new(),
            stop_signals: None,
            stop_sent: None,
        }
    }

    /// Follows stop signals: the first lets the running image finish and starts nothing new,
    /// the second cancels it; the window closes once the queue is idle. Wakes the window on
    /// each signal.
    pub fn watch_stop_signals(&mut self, ctx: &egui::Context, signals: StopSignals) {
        let repaint = ctx.clone();
        signals.on_request(move |_| repaint.request_repaint());
        self.stop_signals = Some(signals);
    }

    /// Forwards a new stop request to the engine; closes the window when nothing runs.
    fn follow_stop_signals(&mut self, ctx: &egui::Context) {
        let Some(request) = self.stop_signals.as_ref().and_then(StopSignals::request) else {
            return;
        };
        if self.stop_sent.is_none_or(|sent| sent < request.mode) {
            self.stop_sent = Some(request.mode);
            let name = request.signal.name();
            let message = match request.mode {
                StopMode::AfterImage => {
                    format!("{name}: finishing the running image, then closing")
                }
                StopMode::Now => format!("{name}: cancelling the running image, then closing"),
            };
            self.log.push(Severity::Warning, message);
            if let Some(engine) = &self.engine
                && let Err(err) = engine.stop(request.mode, name)
            {
                self.log.push(Severity::Error, err);
            }
        }
        if !self.queue.busy() {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    /// Plugs in the real cached / not-downloaded source once `models::hub` provides one.
    pub fn set_model_status(&mut self, source: Box<dyn ModelStatusSource>) {
        self.model_status = source;
    }

    /// The output root.
    pub fn output_root(&self) -> &Path {
        &self.output_root
    }

    /// The profiles the menu offers (shipped, then imported).
    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// Imports an A1111 `styles.csv` or Fooocus style JSON into the user profiles file (the
    /// same import as `imagelab profiles import`) and reloads the profile menu.
    pub fn import_styles(&mut self, file: &Path) {
        let Some(user_file) = self.user_profiles_path.clone() else {
            self.log.push(Severity::Error, "styles import: no user profiles file is configured");
            return;
        };
        let imported = Profiles::shipped(self.profiles_path.as_deref())
            .and_then(|shipped| import_styles(file, &user_file, &shipped));
        match imported {
            Ok(report) => {
                for warning in &report.warnings {
                    self.log.push(Severity::Warning, format!("styles import: {warning}"));
                }
                match Profiles::discover(self.profiles_path.as_deref(), Some(&user_file)) {
                    Ok(profiles) => self.profiles = profiles,
                    Err(err) => self.log.push(Severity::Error, err.to_string()),
                }
                let count = report.added.len() + report.updated.len();
                self.log.push(
                    Severity::Info,
                    format!(
                        "imported {count} style{} from {} ({} new, {} updated) into {}",
                        if count == 1 { "" } else { "s" },
                        file.display(),
                        report.added.len(),
                        report.updated.len(),
                        report.user_file.display()
                    ),
                );
            }
            Err(err) => self.log.push(Severity::Error, format!("styles import: {err}")),
        }
    }

    /// Validates the form and queues it; errors go to the log and a toast.
    pub fn generate(&mut self) {
        let Some(engine) = &self.engine else {
            self.log.push(Severity::Error, "the engine is not running");
            return;
        };
        let form = &self.controls.form;
        let seed = if form.random_seed { crate::request::plan::random_seed() } else { form.seed };
        let request = form.to_request(seed);
        let plan = match engine.prepare(&request, &self.profiles, &self.catalog) {
            Ok(plan) => plan,
            Err(err) => {
                self.log.push(Severity::Error, err);
                return;
            }
        };
        let images = plan.image_count();
        let planned = plan.request.clone();
        let label = label_of(&request);
        match engine.submit(plan, &label) {
            Ok(job) => {
                self.last_seed = Some(seed);
                self.job_labels.insert(job, label.clone());
                self.job_requests.insert(job, planned);
                self.queue.jobs.push(QueuedJob { job, label, images, state: JobState::Pending });
                self.log
                    .push(Severity::Info, format!("job #{job}: {images} image(s), seed {seed}"));
            }
            Err(err) => self.log.push(Severity::Error, err),
        }
    }

    /// Replaces the waiting job being edited by the form's settings (a new job in its place).
    pub fn save_edit(&mut self) {
        let (Some(engine), Some(job)) = (&self.engine, self.queue.editing) else { return };
        let form = &self.controls.form;
        let seed = if form.random_seed { crate::request::plan::random_seed() } else { form.seed };
        let request = form.to_request(seed);
        let plan = match engine.prepare(&request, &self.profiles, &self.catalog) {
            Ok(plan) => plan,
            Err(err) => {
                self.log.push(Severity::Error, err);
                return;
            }
        };
        let images = plan.image_count();
        let planned = plan.request.clone();
        let label = label_of(&request);
        match engine.replace(job, plan, &label) {
            Ok(copy) => {
                self.job_labels.insert(copy, label.clone());
                self.job_requests.insert(copy, planned);
                let entry = QueuedJob { job: copy, label, images, state: JobState::Pending };
                self.queue.replaced(job, entry);
                self.log.push(Severity::Info, format!("job #{job} edited: now job #{copy}"));
            }
            Err(err) => self.log.push(Severity::Error, err),
        }
    }

    /// Takes the offered unfinished jobs back into the queue (held first when `paused`, to
    /// review them), or discards them.
    pub fn answer_offer(&mut self, resume: bool, paused: bool) {
        let Some(engine) = &self.engine else { return };
        let offer = std::mem::take(&mut self.queue.offer);
        if resume
            && paused
            && let Err(err) = engine.with_engine(|engine| engine.pause(true))
        {
            self.log.push(Severity::Error, err);
        }
        for job in offer {
            if !resume {
                match engine
                    .with_engine(|engine| engine.discard(&job.id, "discarded in the window"))
                {
                    Ok(()) => self.log.push(Severity::Info, format!("job {} discarded", job.id)),
                    Err(err) => self.log.push(Severity::Error, err),
                }
                continue;
            }
            match engine.resume(&job.id, &job.label) {
                Ok(Some(resumed)) => {
                    for note in resumed.notes {
                        self.log.push(Severity::Info, note);
                    }
                    let images = resumed.plan.image_count();
                    self.job_labels.insert(resumed.job, job.label.clone());
                    self.job_requests.insert(resumed.job, resumed.plan.request);
                    self.queue.jobs.push(QueuedJob {
                        job: resumed.job,
                        label: job.label,
                        images,
                        state: JobState::Pending,
                    });
                    self.log.push(
                        Severity::Info,
                        format!(
                            "job {} resumed as #{}: {images} image(s) left",
                            job.id, resumed.job
                        ),
                    );
                }
                Ok(None) => {
                    self.log.push(Severity::Info, format!("job {}: nothing left to do", job.id));
                }
                Err(err) => self.log.push(Severity::Error, err),
            }
        }
    }

    fn on_queue_action(&mut self, action: QueueAction) {
        let Some(engine) = &self.engine else { return };
        let result = match action {
            QueueAction::Cancel(job) => engine.cancel(job),
            QueueAction::Clear => engine.clear_queue(),
            QueueAction::Pause(paused) => engine.with_engine(|engine| engine.pause(paused)),
            QueueAction::Move { job, position } => {
                let moved = engine.with_engine(|engine| engine.move_job(job, position));
                if moved.is_ok() {
                    self.queue.move_pending(job, position);
                }
                moved
            }
            QueueAction::Edit(job) => {
                if let Some(request) = self.job_requests.get(&job) {
                    self.controls.form.load_request(request, &self.catalog);
                    self.queue.editing = Some(job);
                    self.log.push(Severity::Info, format!("editing job #{job}"));
                }
                Ok(())
            }
            QueueAction::SaveEdit => {
                self.save_edit();
                Ok(())
            }
            QueueAction::StopEditing => {
                self.queue.editing = None;
                Ok(())
            }
            QueueAction::Resume { paused } => {
                self.answer_offer(true, paused);
                Ok(())
            }
            QueueAction::Discard => {
                self.answer_offer(false, false);
                Ok(())
            }
        };
        if let Err(err) = result {
            self.log.push(Severity::Error, err);
        }
    }

    /// Cancels the running job.
    pub fn cancel_running(&mut self) {
        if let (Some(engine), Some(job)) = (&self.engine, self.queue.running())
            && let Err(err) = engine.cancel(job)
        {
            self.log.push(Severity::Error, err);
        }
    }

    /// Starts an overnight run from the Runner panel's form and the controls' size, steps,
    /// CFG, sampler and batch; problems go to the panel and the log.
    pub fn start_runner(&mut self) {
        if self.runner.is_some() {
            return;
        }
        match self.runner_setup() {
            Ok((setup, factory, notes)) => {
                for note in notes {
                    self.log.push(Severity::Warning, format!("runner: {note}"));
                }
                let labels = setup.slots.iter().map(Slot::label).collect();
                let seed = setup.generator.run_seed();
                match RunnerHandle::start(setup, factory, StopToken::new(), self.waker.clone()) {
                    Ok(handle) => {
                        self.runner = Some(handle);
                        self.runner_panel.started(labels);
                        self.log.push(Severity::Info, format!("runner started (seed {seed})"));
                    }
                    Err(err) => self.runner_failed(err),
                }
            }
            Err(err) => self.runner_failed(err),
        }
    }

    fn runner_failed(&mut self, err: String) {
        self.log.push(Severity::Error, format!("runner: {err}"));
        self.runner_panel.error = Some(err);
    }

    /// Stop once: running images finish; twice: they are cancelled.
    pub fn stop_runner(&mut self) {
        if let Some(runner) = &self.runner {
            let level = runner.stop_token().escalate();
            self.runner_panel.stops = self.runner_panel.stops.saturating_add(1);
            let what = if level == StopLevel::Cancel {
                "cancelling"
            } else {
                "finishing the running images"
            };
            self.log.push(Severity::Info, format!("runner: {what}"));
        }
    }

    fn runner_setup(&self) -> Result<(RunnerSetup, BackendFactory, Vec<String>), String> {
        let factory = self.backend_factory.clone().ok_or("this window has no backend factory")?;
        let form = &self.runner_panel.form;
        let profiles = self.profiles.clone();
        let catalog = self.catalog.clone();
        let set = if form.templates.trim().is_empty() {
            TemplateSet::builtin(&profiles, &catalog)
        } else {
            TemplateSet::load(Path::new(form.templates.trim()), &profiles, &catalog)
        }
        .map_err(|err| err.to_string())?;
        let number = |text: &str, what: &str| -> Result<Option<u64>, String> {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            text.parse().map(Some).map_err(|_| format!("{what}: {text:?} is not a whole number"))
        };
        let seed =
            number(&form.seed, "run seed")?.unwrap_or_else(crate::request::plan::random_seed);
        let list = |text: &str| -> Vec<String> {
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        };
        let choices = RunChoices { models: list(&form.models), profiles: list(&form.profiles) };
        let generator = Generator::new(set, seed, &choices, &profiles, &catalog)
            .map_err(|err| err.to_string())?;
        let max_jobs = number(&form.jobs, "jobs")?.filter(|jobs| *jobs > 0);
        let now = chrono::Local::now();
        let started = std::time::Instant::now();
        let mut deadline = None;
        if !form.for_duration.trim().is_empty() {
            deadline = Some(
                started + parse_duration(&form.for_duration).map_err(|e| format!("for: {e}"))?,
            );
        }
        if !form.until.trim().is_empty() {
            let at = parse_until(&form.until, now).map_err(|e| format!("until: {e}"))?;
            let at = started + (at - now).to_std().unwrap_or_default();
            deadline = Some(deadline.map_or(at, |d: std::time::Instant| d.min(at)));
        }
        let choice = GpuChoice::parse(&form.gpus)?;
        let opener: GpuOpener = self.gpu_opener.clone().unwrap_or_else(|| {
            Arc::new(|| Err(crate::gpu::GpuError::NoDriver("GPU awareness is off".into())))
        });
        let controls = &self.controls.form;
        let (slots, idle, notes) = plan_slots(
            &choice,
            controls.device,
            &opener,
            &self.visibility,
            IdleRule::default(),
            RUNNER_RECHECK,
        )
        .map_err(|err| err.to_string())?;
        let setup = RunnerSetup {
            generator,
            profiles,
            catalog,
            max_jobs,
            deadline,
            slots,
            idle,
            settings: JobSettings {
                batch: controls.batch,
                width: Some(controls.width_px),
                height: Some(controls.height_px),
                steps: Some(controls.steps),
                cfg: Some(controls.cfg),
                scheduler: controls.scheduler,
                schedule_type: controls.schedule_type,
                dtype: None,
            },
            output_root: self.output_root.clone(),
            instance_id: self.instance_id.clone(),
            run_dir: PathBuf::from(format!("{}_runner", now.format("%Y%m%d-%H%M%S"))),
            max_failures: 3,
            lookahead: 256,
        };
        setup.validate().map_err(|err| err.to_string())?;
        Ok((setup, factory, notes))
    }

    /// Whether an overnight run is going.
    pub fn runner_running(&self) -> bool {
        self.runner.is_some()
    }

    fn drain_runner(&mut self) {
        let Some(runner) = &self.runner else { return };
        let started = std::time::Instant::now();
        let mut finished = false;
        while started.elapsed() < EVENT_BUDGET {
            let Ok(event) = runner.events().try_recv() else { break };
            self.runner_panel.on_event(&event);
            match &event {
                RunnerEvent::JobFinished { outcome, .. } => {
                    for path in &outcome.images {
                        let relative = relative_path(&self.output_root, path);
                        self.thumbnails.request(path);
                        self.gallery.add_session_image(path.clone(), relative);
                    }
                    if let Some(error) = &outcome.error
                        && outcome.status == crate::storage::jobs_log::ItemStatus::Failed
                    {
                        self.log
                            .push(Severity::Error, format!("runner #{}: {error}", outcome.number));
                    }
                }
                RunnerEvent::Finished(_) => finished = true,
                _ => {}
            }
        }
        if finished {
            if let Some(summary) = &self.runner_panel.summary {
                self.log.push(Severity::Info, format!("runner finished: {summary}"));
            }
            self.runner = None;
        }
    }

    /// Stops the engine: cancels what runs and joins the thread (a server's engine is asked to
    /// stop gracefully instead). Safe to call twice.
    pub fn shutdown(&mut self) {
        self.runner = None;
        self.gpu_watcher = None;
        if let Some(engine) = self.engine.take() {
            engine.shutdown();
        }
    }

    /// Whether the engine thread is still held.
    pub fn engine_running(&self) -> bool {
        self.engine.is_some()
    }

    /// Drains engine events and decoded thumbnails within their budgets.
    pub fn drain(&mut self, ctx: &egui::Context) {
        let started = std::time::Instant::now();
        let mut more = false;
        while let Some(engine) = &self.engine {
            if started.elapsed() >= EVENT_BUDGET {
                more = !engine.events().is_empty();
                break;
            }
            let Ok(event) = engine.events().try_recv() else { break };
            self.on_event(ctx, event);
        }
        for message in self.model_status.take_messages() {
            match message {
                Ok(text) => self.log.push(Severity::Info, text),
                Err(text) => self.log.push(Severity::Error, text),
            }
        }
        self.drain_runner();
        self.drain_slurm(ctx);
        if let Some(watcher) = &self.gpu_watcher {
            self.runner_panel.gpus = watcher.latest();
        }
        for loaded in self.thumbnails.drain(ctx, THUMBNAIL_BUDGET) {
            match loaded {
                Loaded::Thumbnail { path, info, .. } => {
                    self.gallery.set_info(&path, info.map(|info| *info));
                }
                Loaded::Listing(paths) => self.gallery.add_listing(&self.output_root, paths),
                Loaded::Failed { path, error } => {
                    self.log.push(Severity::Warning, format!("{error} ({})", path.display()));
                }
            }
        }
        for answer in self.insights_worker.drain() {
            match answer {
                InsightsResult::Analysis(result) => self.insights.set_result(result),
                InsightsResult::Sheet(run_dir, Ok(layout)) => {
                    self.sweep.layout = Some(*layout);
                    self.sweep.error = None;
                    if !self.sweep.sweeps.contains(&run_dir) {
                        self.sweep.sweeps.insert(0, run_dir);
                    }
                }
                InsightsResult::Sheet(run_dir, Err(error)) => {
                    self.sweep.error = Some(format!("{error} ({})", run_dir.display()));
                }
                InsightsResult::Sweeps(found) => self.sweep.sweeps = found,
            }
        }
        self.follow_stop_signals(ctx);
        if more {
            ctx.request_repaint();
        }
    }

    /// Asks the worker for a fresh analysis of the stars.
    pub fn refresh_insights(&mut self) {
        let min_support = self.insights.min_support;
        if self.insights_worker.analyze(&self.output_root, min_support) {
            self.insights.pending = true;
        }
    }

    /// Shows a sweep folder in the sweep grid (laid out off the UI thread).
    pub fn show_sweep(&mut self, run_dir: &Path) {
        self.insights_worker.sheet(run_dir);
        self.view = CentralView::Sweep;
    }

    /// Stars or un-stars an image (path relative to the output root); the insights follow.
    pub fn set_favorite(&mut self, relative: &str, starred: bool) {
        match favorites::set(&self.output_root, relative, starred) {
            Ok(all) => self.gallery.favorites = all,
            Err(err) => self.log.push(Severity::Error, format!("favourites: {err}")),
        }
        self.refresh_insights();
    }

    /// A job entered the queue; one another front end submitted (the API of `gui --serve`)
    /// is listed too.
    fn on_queued(&mut self, job: JobId) {
        if !self.queue.jobs.iter().any(|entry| entry.job == job)
            && let Some(entry) = self.engine.as_ref().and_then(|engine| engine.describe(job))
        {
            self.job_labels.insert(job, entry.label.clone());
            self.queue.jobs.push(entry);
        }
        self.queue.set_state(job, JobState::Pending);
    }

    fn on_event(&mut self, ctx: &egui::Context, event: Event) {
        match event {
            Event::Queued { job, .. } => self.on_queued(job),
            Event::QueueChanged(stats) => self.queue.paused = stats.paused,
            Event::ModelLoading { job, model, message, fraction } => {
                let progress = self.watch.progress.get_or_insert_with(JobProgress::default);
                progress.job = job;
                progress.loading = Some((format!("{model}: {message}"), fraction));
            }
            Event::ItemStarted { job, item, items, model, profile, images } => {
                self.queue.set_state(job, JobState::Running);
                let previous = self.watch.progress.take().filter(|p| p.job == job);
                let job_images = self
                    .queue
                    .jobs
                    .iter()
                    .find(|entry| entry.job == job)
                    .map_or(images, |entry| entry.images);
                self.watch.progress = Some(JobProgress {
                    job,
                    label: format!("#{job} · {model} · {profile}"),
                    item,
                    items,
                    images_in_item: images,
                    loading: previous.as_ref().and_then(|p| p.loading.clone()),
                    job_images,
                    job_images_saved: previous.map_or(0, |p| p.job_images_saved),
                    ..JobProgress::default()
                });
            }
            Event::Progress { job, item, image, step, steps, it_per_s } => {
                let progress = self.watch.progress.get_or_insert_with(JobProgress::default);
                progress.job = job;
                progress.item = item;
                progress.image = image;
                progress.step = step;
                progress.steps = steps;
                progress.it_per_s = it_per_s;
                progress.loading = None;
            }
            Event::Preview { preview, .. } => self.watch.set_preview(ctx, &preview),
            Event::ImageSaved { job, image, .. } => {
                if let Some(progress) = self.watch.progress.as_mut().filter(|p| p.job == job) {
                    progress.job_images_saved += 1;
                }
                let relative = relative_path(&self.output_root, &image.path);
                self.thumbnails.request(&image.path);
                self.gallery.add_session_image(image.path, relative);
            }
            Event::ItemSaved { record, .. } => {
                let first = record.paths.first().map_or("", String::as_str);
                let more = record.paths.len().saturating_sub(1);
                let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                self.log.push(
                    Severity::Info,
                    format!("saved {first}{more} ({} / {})", record.model, record.profile),
                );
            }
            Event::ItemFailed { error, record, .. } => {
                self.log.push(
                    Severity::Error,
                    format!("{} / {}: {error}", record.model, record.profile),
                );
            }
            Event::ItemCancelled { record, .. } => {
                self.log.push(
                    Severity::Info,
                    format!("cancelled {} / {}", record.model, record.profile),
                );
            }
            Event::JobFinished { job, summary } => {
                use crate::server::events::JobState as Ended;
                let state = match Ended::of_summary(&summary) {
                    Ended::Failed => JobState::Failed,
                    Ended::Cancelled | Ended::Interrupted => JobState::Cancelled,
                    _ if summary.done < summary.items => JobState::Cancelled,
                    _ => JobState::Done,
                };
                self.queue.set_state(job, state);
                if self.watch.progress.as_ref().is_some_and(|p| p.job == job) {
                    self.watch.progress = None;
                }
                // New images change every count; a finished sweep shows as its grid.
                self.refresh_insights();
                if let Some(run_dir) = &summary.run_dir
                    && summary.done > 0
                {
                    self.show_sweep(&run_dir.clone());
                }
                self.log.push(
                    Severity::Info,
                    format!(
                        "job #{job} finished: {} done, {} failed, {} cancelled in {:.1} s",
                        summary.done, summary.failed, summary.cancelled, summary.duration_s
                    ),
                );
            }
            Event::Warning(text) => self.log.push(Severity::Warning, text),
        }
    }

    fn on_gallery_action(&mut self, ctx: &egui::Context, action: GalleryAction) {
        match action {
            GalleryAction::UseSettings(info) => {
                let recovered = Recovered::from_generation_info(*info);
                self.restore_settings(&recovered);
                self.log.push(Severity::Info, "settings restored from the image");
            }
            GalleryAction::SetFavorite(relative, starred) => self.set_favorite(&relative, starred),
            GalleryAction::Copy(text) => ctx.copy_text(text),
            GalleryAction::OpenFolder(path) => {
                let folder =
                    path.parent().map_or_else(|| self.output_root.clone(), Path::to_path_buf);
                if let Err(err) = open_folder(&folder) {
                    self.log
                        .push(Severity::Error, format!("cannot open {}: {err}", folder.display()));
                }
            }
        }
    }

    fn on_sweep_action(&mut self, action: SweepAction) {
        match action {
            SweepAction::Open(path) => {
                if !self.gallery.entries.iter().any(|entry| entry.path == path) {
                    self.gallery.add_listing(&self.output_root, vec![path.clone()]);
                }
                self.gallery.selected = Some(path);
            }
            SweepAction::SetFavorite(relative, starred) => self.set_favorite(&relative, starred),
            SweepAction::Show(run_dir) => self.show_sweep(&run_dir),
        }
    }

    fn on_insights_action(&mut self, action: InsightsAction) {
        match action {
            InsightsAction::Refresh => self.refresh_insights(),
            InsightsAction::UseBundle(request) => match request.to_overlay() {
                Ok(overlay) => {
                    self.controls.form.apply_overlay(&overlay);
                    self.log.push(Severity::Info, "settings taken from the bundle");
                }
                Err(err) => self.log.push(Severity::Error, err.to_string()),
            },
        }
    }

    /// Lays the settings of a recovered image over the form; what could not be taken goes to
    /// the log.
    fn restore_settings(&mut self, found: &Recovered) {
        let restored = restore_settings(found, &self.catalog, &self.profiles);
        self.controls.form.apply_overlay(&restored.overlay);
        for note in restored.notes {
            self.log.push(Severity::Warning, note);
        }
    }

    /// A file dropped on the window: a PNG of ours restores its settings; any other image
    /// becomes the img2img source.
    pub fn on_dropped_file(&mut self, path: &Path) {
        let bytes = match fs_err::read(path) {
            Ok(bytes) => bytes,
            Err(err) => {
                self.log.push(Severity::Error, err.to_string());
                return;
            }
        };
        match recover(&bytes) {
            Ok(found) => {
                self.restore_settings(&found);
                let message = if found.generation.is_some() {
                    format!("settings restored from {}", path.display())
                } else {
                    format!(
                        "settings restored from a {} image: {}",
                        found.source.display_name(),
                        path.display()
                    )
                };
                self.log.push(Severity::Info, message);
            }
            Err(_) => {
                if image::guess_format(&bytes).is_ok() {
                    self.controls.form.init_image = Some(path.to_owned());
                    self.log.push(Severity::Info, format!("img2img source: {}", path.display()));
                } else {
                    self.log.push(Severity::Error, format!("not an image: {}", path.display()));
                }
            }
        }
    }
}

impl LabApp {
    /// "Submit to Slurm": the form checked and planned as Generate would (the same checks),
    /// the Slurm fields checked, then planned and submitted on the Slurm thread as `imagelab
    /// slurm submit` does.
    pub fn submit_to_slurm(&mut self) {
        let (Some(engine), Some(setup), Some(worker)) =
            (&self.engine, &self.slurm_setup, &self.slurm_worker)
        else {
            self.log.push(Severity::Error, "Slurm: sbatch was not found when the window started");
            return;
        };
        let form = &self.controls.form;
        let seed = if form.random_seed { crate::request::plan::random_seed() } else { form.seed };
        let request = form.to_request(seed);
        let job_name = format!("imagelab-{}", request.sweep.slug());
        let sbatch = match self.slurm.form.options(job_name) {
            Ok(options) => options,
            Err(err) => {
                self.slurm.error = Some(err.clone());
                self.log.push(Severity::Error, format!("Slurm: {err}"));
                return;
            }
        };
        let plan = match engine.prepare(&request, &self.profiles, &self.catalog) {
            Ok(plan) => plan,
            Err(err) => {
                self.slurm.error = Some(err.clone());
                self.log.push(Severity::Error, format!("Slurm: {err}"));
                return;
            }
        };
        let run_setup = crate::slurm::RunSetup {
            output_root: self.output_root.clone(),
            backend: engine.backend_name().to_owned(),
            imagelab: setup.imagelab.clone(),
            hub_cache: setup.hub_cache.clone(),
            tasks: None,
            sbatch,
            task_args: Vec::new(),
        };
        let images = plan.image_count();
        match worker.send(SlurmRequest::Submit { plan: Box::new(plan), setup: Box::new(run_setup) })
        {
            Ok(()) => {
                self.slurm.error = None;
                self.slurm.submitting = true;
                self.last_seed = Some(seed);
                self.log.push(Severity::Info, format!("Slurm: submitting {images} image(s)"));
            }
            Err(err) => self.log.push(Severity::Error, format!("Slurm: {err}")),
        }
    }

    fn on_slurm_action(&mut self, action: SlurmAction) {
        let (SlurmAction::Refresh(index) | SlurmAction::Cancel(index)) = action;
        let (Some(worker), Some(view)) = (&self.slurm_worker, self.slurm.runs.get_mut(index))
        else {
            return;
        };
        let run = Box::new(view.run.clone());
        let request = match action {
            SlurmAction::Refresh(_) => {
                view.asking = true;
                view.asked_at = Some(std::time::Instant::now());
                SlurmRequest::Status { index, run }
            }
            SlurmAction::Cancel(_) => SlurmRequest::Cancel { index, run },
        };
        if let Err(err) = worker.send(request) {
            view.asking = false;
            self.log.push(Severity::Error, format!("Slurm: {err}"));
        }
    }

    /// The Slurm thread's answers; a status request for each run due one.
    fn drain_slurm(&mut self, ctx: &egui::Context) {
        let Some(worker) = &self.slurm_worker else { return };
        let replies: Vec<SlurmReply> = worker.replies().try_iter().collect();
        for reply in replies {
            match reply {
                SlurmReply::Submitted(Ok(submitted)) => {
                    let (run, submission) = *submitted;
                    self.slurm.submitting = false;
                    self.log.push(
                        Severity::Info,
                        format!(
                            "Slurm: submitted job {} (array {}): {} image(s) in {} task(s) into {}",
                            submission.job,
                            submission.array,
                            run.planned_images,
                            run.tasks.len(),
                            run.run_path().display()
                        ),
                    );
                    self.slurm.runs.push(super::slurm::RunView {
                        run,
                        status: None,
                        asking: false,
                        asked_at: None,
                    });
                    self.view = CentralView::Slurm;
                }
                SlurmReply::Submitted(Err(err)) => {
                    self.slurm.submitting = false;
                    self.slurm.error = Some(err.clone());
                    self.log.push(Severity::Error, format!("Slurm: {err}"));
                }
                SlurmReply::Status { index, status } => {
                    if let Some(view) = self.slurm.runs.get_mut(index) {
                        view.asking = false;
                        view.status = Some(*status);
                    }
                }
                SlurmReply::Cancelled { index, result } => {
                    match result {
                        Ok(ids) => self
                            .log
                            .push(Severity::Info, format!("Slurm: cancelled {}", ids.join(", "))),
                        Err(err) => self.log.push(Severity::Error, format!("Slurm: {err}")),
                    }
                    self.on_slurm_action(SlurmAction::Refresh(index));
                }
                SlurmReply::Offer { jobs, held } => {
                    for note in held.notes {
                        self.log.push(Severity::Info, note);
                    }
                    self.queue
                        .offer
                        .extend(jobs.into_iter().filter(|job| !held.held.contains(&job.id)));
                }
            }
        }
        let now = std::time::Instant::now();
        let due: Vec<usize> =
            (0..self.slurm.runs.len()).filter(|index| self.slurm.runs[*index].due(now)).collect();
        for index in due {
            self.on_slurm_action(SlurmAction::Refresh(index));
        }
        if !self.slurm.runs.is_empty() {
            ctx.request_repaint_after(super::slurm::STATUS_REFRESH);
        }
    }
}

/// What the user asked for in the central panel this frame.
#[derive(Debug, Default)]
struct CentralActions {
    queue: Option<QueueAction>,
    runner: Option<RunnerAction>,
    sweep: Option<SweepAction>,
    insights: Option<InsightsAction>,
    slurm: Option<SlurmAction>,
}

impl LabApp {
    /// The queue, the runner, then the chosen view: preview, sweep grid or insights.
    fn central_ui(&mut self, ui: &mut egui::Ui) -> CentralActions {
        let mut actions = CentralActions { queue: self.queue.ui(ui), ..CentralActions::default() };
        ui.separator();
        egui::CollapsingHeader::new("Runner").id_salt("runner_panel").show(ui, |ui| {
            actions.runner = self.runner_panel.ui(ui);
        });
        ui.separator();
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.view, CentralView::Preview, "Preview");
            ui.selectable_value(&mut self.view, CentralView::Sweep, "Sweep grid");
            ui.selectable_value(&mut self.view, CentralView::Insights, "Insights");
            if self.slurm.available || !self.slurm.runs.is_empty() {
                ui.selectable_value(&mut self.view, CentralView::Slurm, "Slurm runs");
            }
        });
        ui.separator();
        match self.view {
            CentralView::Preview => self.watch.ui(ui),
            CentralView::Sweep => {
                actions.sweep = self.sweep.ui(
                    ui,
                    &mut self.thumbnails,
                    &self.gallery.favorites,
                    &self.output_root,
                );
            }
            CentralView::Insights => actions.insights = self.insights.ui(ui),
            CentralView::Slurm => actions.slurm = self.slurm.ui(ui),
        }
        actions
    }
}

/// The window's engine: its own, spawned here, or a server's; said in the log.
fn start_engine(
    engine: WindowEngine,
    engine_config: EngineConfig,
    waker: &Arc<dyn Fn() + Send + Sync>,
    log: &mut LogPanel,
) -> Option<EngineLink> {
    let engine = match engine {
        WindowEngine::Spawn(backend) => {
            match Engine::spawn(backend, engine_config, waker.clone()) {
                Ok(engine) => Some(EngineLink::Own(Box::new(engine))),
                Err(err) => {
                    log.push(Severity::Error, format!("cannot start the engine: {err}"));
                    None
                }
            }
        }
        WindowEngine::Shared(service) => Some(EngineLink::shared(service, waker.clone())),
    };
    if let Some(engine) = &engine {
        log.push(Severity::Info, format!("engine: {} backend", engine.backend_name()));
    }
    engine
}

/// Work an earlier session left unfinished (a crash, a closed window), offered back; and,
/// apart, the unfinished jobs of Slurm runs' array tasks: offered only once Slurm says their
/// tasks are gone (it may still start or run them).
fn unfinished_offer(
    engine: Option<&EngineLink>,
    root: &Path,
    log: &mut LogPanel,
) -> (Vec<UnfinishedJob>, Vec<UnfinishedJob>) {
    let Some(engine) = engine else { return (Vec::new(), Vec::new()) };
    match engine.with_engine(Engine::unfinished_jobs) {
        Ok(jobs) => jobs
            .into_iter()
            .filter(|job| !job.live)
            .partition(|job| !crate::slurm::is_slurm_job(root, job)),
        Err(err) => {
            log.push(Severity::Warning, err);
            (Vec::new(), Vec::new())
        }
    }
}

/// A job's label in the queue: the prompt's start, and the sweep.
fn label_of(request: &Request) -> String {
    let label: String = request.prompt.chars().take(40).collect();
    if request.sweep == crate::request::Sweep::None {
        label
    } else {
        format!("[{}] {label}", request.sweep.slug())
    }
}

/// Opens a folder in the desktop's file manager; a named thread reaps the child.
fn open_folder(folder: &Path) -> std::io::Result<()> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(target_os = "windows") {
        "explorer"
    } else {
        "xdg-open"
    };
    let mut child = std::process::Command::new(opener).arg(folder).spawn()?;
    std::thread::Builder::new().name("imagelab-open-folder".into()).spawn(move || {
        let _ = child.wait();
    })?;
    Ok(())
}

impl eframe::App for LabApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.drain(ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        let dropped: Vec<PathBuf> = ctx.input(|input| {
            input
                .raw
                .dropped_files
                .iter()
                .map(|file| file.path().to_path_buf())
                .filter(|path| !path.as_os_str().is_empty())
                .collect()
        });
        for path in dropped {
            self.on_dropped_file(&path);
        }
        let mut control_action = None;
        if ControlsPanel::shortcut_pressed(&ctx)
            && self.controls.request_generate(&self.profiles, &self.catalog)
        {
            control_action = Some(ControlAction::Generate);
        }
        let busy = self.queue.busy();
        egui::Panel::left("controls").default_size(320.0).show(ui, |ui| {
            let mut cx = ControlsContext {
                catalog: &self.catalog,
                profiles: &self.profiles,
                model_status: self.model_status.as_ref(),
                last_seed: self.last_seed,
                busy,
                thumbnails: &mut self.thumbnails,
                slurm: Some(&mut self.slurm),
            };
            if let Some(action) = self.controls.ui(ui, &mut cx) {
                control_action = Some(action);
            }
        });
        egui::Panel::bottom("log").resizable(true).min_size(110.0).show(ui, |ui| {
            self.log.ui(ui);
        });
        let mut gallery_action = None;
        egui::Panel::right("gallery").min_size(420.0).show(ui, |ui| {
            gallery_action = self.gallery.ui(ui, &mut self.thumbnails);
        });
        let mut central = CentralActions::default();
        egui::CentralPanel::default_margins().show(ui, |ui| central = self.central_ui(ui));
        let CentralActions {
            queue: queue_action,
            runner: runner_action,
            sweep: sweep_action,
            insights: insights_action,
            slurm: slurm_action,
        } = central;
        self.log.toasts_ui(&ctx);
        match control_action {
            Some(ControlAction::Generate) => self.generate(),
            Some(ControlAction::ImportStyles(file)) => self.import_styles(&file),
            Some(ControlAction::SubmitToSlurm) => self.submit_to_slurm(),
            Some(ControlAction::Cancel) => self.cancel_running(),
            Some(ControlAction::Download(model)) => {
                match self.model_status.start_download(&model) {
                    Ok(()) => self.log.push(Severity::Info, format!("{model}: downloading")),
                    Err(err) => self.log.push(Severity::Error, err),
                }
            }
            Some(ControlAction::Skip) => {
                if let Some(engine) = &self.engine
                    && let Err(err) = engine.skip_current()
                {
                    self.log.push(Severity::Error, err);
                }
            }
            None => {}
        }
        if let Some(action) = queue_action {
            self.on_queue_action(action);
        }
        match runner_action {
            Some(RunnerAction::Start) => self.start_runner(),
            Some(RunnerAction::Stop) => self.stop_runner(),
            None => {}
        }
        if let Some(action) = gallery_action {
            self.on_gallery_action(&ctx, action);
        }
        if let Some(action) = sweep_action {
            self.on_sweep_action(action);
        }
        if let Some(action) = insights_action {
            self.on_insights_action(action);
        }
        if let Some(action) = slurm_action {
            self.on_slurm_action(action);
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.controls.form);
    }

    fn on_exit(&mut self) {
        self.shutdown();
    }
}

impl Drop for LabApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}
