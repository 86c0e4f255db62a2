//! The eframe app: owns the engine handle (its own engine, or the one `imagelab gui --serve`
//! shares with HTTP clients) and the panels. `logic()` drains engine and decoder results
//! within a small time budget; `ui()` draws the panels and turns their actions into engine
//! commands. The UI thread never waits on the engine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, TrySendError};

use crate::engine::{
    Backend, Capabilities, Engine, EngineConfig, Event, JobId, prepare_plan, relative_path,
};
use crate::request::Plan;
use crate::server::{Origin, Service, service::Submission};
use crate::models::catalog::Catalog;
use crate::request::Profiles;
use crate::request::restore::restore_settings;
use crate::storage::favorites;
use crate::storage::metadata::{Recovered, recover};

use super::controls::{ControlAction, ControlsContext, ControlsPanel};
use super::gallery::{GalleryAction, GalleryPanel};
use super::log::{LogPanel, Severity};
use super::model_status::{ModelStatusSource, NoModelStatus};
use super::queue::{JobState, QueueAction, QueuePanel, QueuedJob};
use super::settings::{FormSettings, STORAGE_KEY};
use super::thumbnails::{Loaded, ThumbnailLoader};
use super::watch::{JobProgress, WatchPanel};

/// Time spent draining engine events per frame; the rest waits for the next frame.
pub const EVENT_BUDGET: Duration = Duration::from_millis(4);
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
    Own(Engine),
    /// A server's engine; events arrive through a subscription.
    Shared {
        service: Arc<Service>,
        events: Receiver<Event>,
    },
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

    fn capabilities(&self) -> Capabilities {
        match self {
            Self::Own(engine) => engine.capabilities(),
            Self::Shared { service, .. } => service.capabilities(),
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
                .submit(plan, Submission { origin: Origin::Window, label: label.to_owned() }, |_| {})
                .map_err(|err| err.to_string()),
        }
    }

    fn cancel(&self, job: JobId) -> Result<(), String> {
        match self {
            Self::Own(engine) => engine.cancel(job).map_err(|err| err.to_string()),
            Self::Shared { service, .. } => service.cancel(job).map(|_| ()).map_err(|err| err.to_string()),
        }
    }

    fn skip_current(&self) -> Result<(), String> {
        match self {
            Self::Own(engine) => engine.skip_current().map_err(|err| err.to_string()),
            Self::Shared { service, .. } => service.skip_current().map_err(|err| err.to_string()),
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
            Self::Shared { service, .. } => service.stop_token().request_graceful(),
        }
    }
}

/// The lab window.
pub struct LabApp {
    engine: Option<EngineLink>,
    output_root: PathBuf,
    catalog: Catalog,
    profiles: Profiles,
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
    thumbnails: ThumbnailLoader,
    last_seed: Option<u64>,
    job_labels: HashMap<JobId, String>,
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
    pub fn with_form(ctx: &egui::Context, config: AppConfig, form: FormSettings) -> Self {
        let mut log = LogPanel::default();
        if let Some(notice) = config.notice {
            log.push(Severity::Warning, notice);
        }
        let profiles = Profiles::discover(config.profiles_path.as_deref()).unwrap_or_else(|err| {
            log.push(Severity::Error, format!("{err}; using the built-in profiles"));
            Profiles::builtin()
        });
        let repaint_ctx = ctx.clone();
        let waker: Arc<dyn Fn() + Send + Sync> = Arc::new(move || repaint_ctx.request_repaint());
        let engine_config = EngineConfig {
            output_root: config.output_root.clone(),
            instance_id: config.instance_id,
            previews: true,
        };
        let engine = match config.engine {
            WindowEngine::Spawn(backend) => match Engine::spawn(backend, engine_config, waker.clone()) {
                Ok(engine) => Some(EngineLink::Own(engine)),
                Err(err) => {
                    log.push(Severity::Error, format!("cannot start the engine: {err}"));
                    None
                }
            },
            WindowEngine::Shared(service) => Some(EngineLink::shared(service, waker.clone())),
        };
        if let Some(engine) = &engine {
            log.push(Severity::Info, format!("engine: {} backend", engine.backend_name()));
        }
        let thumbnails = ThumbnailLoader::spawn(waker).unwrap_or_else(|err| {
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
        Self {
            engine,
            output_root: config.output_root,
            catalog: Catalog::builtin(),
            profiles,
            model_status: Box::new(NoModelStatus),
            controls,
            watch: WatchPanel::default(),
            queue: QueuePanel::default(),
            gallery,
            log,
            thumbnails,
            last_seed: None,
            job_labels: HashMap::new(),
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

    /// Validates the form and queues it; errors go to the log and a toast.
    pub fn generate(&mut self) {
        let Some(engine) = &self.engine else {
            self.log.push(Severity::Error, "the engine is not running");
            return;
        };
        let form = &self.controls.form;
        let seed = if form.random_seed { crate::request::plan::random_seed() } else { form.seed };
        let request = form.to_request(seed);
        let plan =
            match prepare_plan(&request, &self.profiles, &self.catalog, &engine.capabilities()) {
                Ok(plan) => plan,
                Err(err) => {
                    self.log.push(Severity::Error, err.to_string());
                    return;
                }
            };
        let images = plan.image_count();
        let mut label: String = request.prompt.chars().take(40).collect();
        if request.sweep != crate::request::Sweep::None {
            label = format!("[{}] {label}", request.sweep.slug());
        }
        match engine.submit(plan, &label) {
            Ok(job) => {
                self.last_seed = Some(seed);
                self.job_labels.insert(job, label.clone());
                self.queue.jobs.push(QueuedJob { job, label, images, state: JobState::Pending });
                self.log
                    .push(Severity::Info, format!("job #{job}: {images} image(s), seed {seed}"));
            }
            Err(err) => self.log.push(Severity::Error, err),
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

    /// Stops the engine: cancels what runs and joins the thread (a server's engine is asked to
    /// stop gracefully instead). Safe to call twice.
    pub fn shutdown(&mut self) {
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
        if more {
            ctx.request_repaint();
        }
    }

    fn on_event(&mut self, ctx: &egui::Context, event: Event) {
        match event {
            Event::Queued { job, .. } => {
                if !self.queue.jobs.iter().any(|entry| entry.job == job)
                    && let Some(entry) = self.engine.as_ref().and_then(|engine| engine.describe(job))
                {
                    self.job_labels.insert(job, entry.label.clone());
                    self.queue.jobs.push(entry);
                }
                self.queue.set_state(job, JobState::Pending);
            }
            Event::QueueChanged(_) => {}
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
                    Ended::Cancelled => JobState::Cancelled,
                    _ if summary.done < summary.items => JobState::Cancelled,
                    _ => JobState::Done,
                };
                self.queue.set_state(job, state);
                if self.watch.progress.as_ref().is_some_and(|p| p.job == job) {
                    self.watch.progress = None;
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
            GalleryAction::SetFavorite(relative, starred) => {
                match favorites::set(&self.output_root, &relative, starred) {
                    Ok(all) => self.gallery.favorites = all,
                    Err(err) => self.log.push(Severity::Error, format!("favourites: {err}")),
                }
            }
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

    /// Lays the settings of a recovered image over the form; what could not be taken goes to
    /// the log.
    fn restore_settings(&mut self, found: &Recovered) {
        let restored = restore_settings(found, &self.catalog);
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
        let mut queue_action = None;
        egui::CentralPanel::default_margins().show(ui, |ui| {
            queue_action = self.queue.ui(ui);
            ui.separator();
            self.watch.ui(ui);
        });
        self.log.toasts_ui(&ctx);
        match control_action {
            Some(ControlAction::Generate) => self.generate(),
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
        if let Some(engine) = &self.engine {
            let result = match queue_action {
                Some(QueueAction::Cancel(job)) => engine.cancel(job),
                Some(QueueAction::Clear) => engine.clear_queue(),
                None => Ok(()),
            };
            if let Err(err) = result {
                self.log.push(Severity::Error, err);
            }
        }
        if let Some(action) = gallery_action {
            self.on_gallery_action(&ctx, action);
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
