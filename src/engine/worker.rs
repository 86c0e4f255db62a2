//! The engine thread's loop: one job at a time from a FIFO queue, one item at a time, commands
//! polled between denoising steps so cancel and skip act within one step.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::backend::{
    Backend, BackendError, GenerateParams, Generated, LoadProgress, LoadedModel, ModelKey,
    StepUpdate,
};
use super::protocol::{Command, Event, JobId, JobSummary, QueueStats, SavedImage, StopMode};
use crate::models::catalog::{ModelDefaults, ModelRef};
use crate::request::{Plan, Sweep, WorkItem};
use crate::storage::inputs;
use crate::storage::jobs_log::{self, ItemStatus, JobRecord};
use crate::storage::metadata::encode::encode_image;
use crate::storage::metadata::{GenerationInfo, version_string};
use crate::storage::naming::{image_stem, write_new_file};
use crate::vocab::{DeviceChoice, OutputFormat, Precision, SamplerKind, SaveOptions};

/// Wakes the front end after events were sent (`ctx.request_repaint` in the window).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Where the engine writes.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// The output root (`output_images/` by default).
    pub root: PathBuf,
    /// The jobs log file inside the root.
    pub log_path: PathBuf,
}

/// What interrupts the running item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    /// Cancel the whole running job.
    CancelJob,
    /// Skip the current item only.
    Skip,
    /// A clean stop ([`Command::Stop`]): the item is interrupted, resumable.
    Stop,
    /// Stop everything (the engine is going away): the item is interrupted, resumable.
    Shutdown,
}

impl Interrupt {
    /// Which wins when several arrive at once.
    fn rank(self) -> u8 {
        match self {
            Self::Skip => 0,
            Self::CancelJob => 1,
            Self::Stop => 2,
            Self::Shutdown => 3,
        }
    }

    /// Whether the work it stops is left for `imagelab resume` (a stop or a shutdown), rather
    /// than dropped on the user's word (cancel, skip).
    fn resumable(self) -> bool {
        matches!(self, Self::Stop | Self::Shutdown)
    }
}

/// A job waiting in the queue.
enum Pending {
    /// Images to make.
    Plan(Box<Plan>),
    /// A model to load ahead of the jobs behind it.
    Preload { model: Box<ModelRef>, device: DeviceChoice, dtype: Option<Precision> },
}

impl Pending {
    /// Items it would run (0 for a preload).
    fn items(&self) -> usize {
        match self {
            Self::Plan(plan) => plan.items.len(),
            Self::Preload { .. } => 0,
        }
    }
}

/// The command side of the worker: pending jobs, stats, event sending. Kept apart from the
/// backend so the step callback can poll commands while the backend runs.
struct Inbox {
    commands: Receiver<Command>,
    events: Sender<Event>,
    waker: Waker,
    pending: VecDeque<(JobId, Pending)>,
    stats: QueueStats,
    shutdown: bool,
    /// Set by [`Command::Stop`]: how, and why (for messages and the jobs log).
    stop: Option<(StopMode, String)>,
}

impl Inbox {
    /// Sends an event that must arrive (blocks while the front end catches up).
    fn emit(&self, event: Event) {
        if self.events.send(event).is_ok() {
            (self.waker)();
        }
    }

    /// Sends an event that may be dropped when the front end lags (progress, previews).
    fn emit_lossy(&self, event: Event) {
        match self.events.try_send(event) {
            Ok(()) => (self.waker)(),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }

    fn emit_stats(&mut self) {
        self.stats.queued = self.pending.len();
        self.emit(Event::QueueChanged(self.stats));
    }

    /// Applies a command; returns what it means for the running job, if one runs.
    fn apply(&mut self, command: Command, running: Option<JobId>) -> Option<Interrupt> {
        match command {
            Command::Submit { job, plan } => {
                if let Some((_, reason)) = &self.stop {
                    let why = format!("not started: the engine is stopping ({reason})");
                    self.drop_pending(job, &Pending::Plan(plan), &why, true);
                    return None;
                }
                self.enqueue(job, Pending::Plan(plan), running);
                None
            }
            Command::Preload { job, model, device, dtype } => {
                let pending = Pending::Preload { model, device, dtype };
                if let Some((_, reason)) = &self.stop {
                    let why = format!("not started: the engine is stopping ({reason})");
                    self.drop_pending(job, &pending, &why, true);
                    return None;
                }
                self.enqueue(job, pending, running);
                None
            }
            Command::Cancel(job) if Some(job) == running => Some(Interrupt::CancelJob),
            Command::Cancel(job) => {
                let index = self.pending.iter().position(|(pending, _)| *pending == job);
                if let Some((_, pending)) = index.and_then(|index| self.pending.remove(index)) {
                    self.drop_pending(job, &pending, "cancelled before it started", false);
                    self.emit_stats();
                }
                None
            }
            Command::SkipCurrent => running.map(|_| Interrupt::Skip),
            Command::ClearQueue => {
                let dropped: Vec<(JobId, Pending)> = self.pending.drain(..).collect();
                for (job, pending) in dropped {
                    self.drop_pending(job, &pending, "removed from the queue", false);
                }
                self.emit_stats();
                None
            }
            Command::Stop { mode, reason } => {
                let (mode, reason) = if let Some((current, first_reason)) = self.stop.take() {
                    (current.max(mode), first_reason)
                } else {
                    let dropped: Vec<(JobId, Pending)> = self.pending.drain(..).collect();
                    let why = format!("not started: stopped ({reason})");
                    for (job, pending) in dropped {
                        self.drop_pending(job, &pending, &why, true);
                    }
                    self.emit_stats();
                    (mode, reason)
                };
                self.stop = Some((mode, reason));
                (mode == StopMode::Now && running.is_some()).then_some(Interrupt::Stop)
            }
            Command::Shutdown => {
                self.shutdown = true;
                Some(Interrupt::Shutdown)
            }
        }
    }

    /// Queues a job (FIFO) and says where it stands.
    fn enqueue(&mut self, job: JobId, pending: Pending, running: Option<JobId>) {
        self.pending.push_back((job, pending));
        self.emit(Event::Queued {
            job,
            position: self.pending.len() - 1 + usize::from(running.is_some()),
        });
        self.emit_stats();
    }

    /// Reports a job that never started: every item counted as cancelled, or as interrupted
    /// when a stop or shutdown (not the user) dropped it.
    fn drop_pending(&mut self, job: JobId, pending: &Pending, why: &str, interrupted: bool) {
        self.stats.cancelled += 1;
        let items = pending.items();
        let (cancelled, interrupted) = if interrupted { (0, items) } else { (items, 0) };
        self.emit(Event::JobFinished {
            job,
            summary: JobSummary {
                items,
                cancelled,
                interrupted,
                errors: vec![why.to_owned()],
                ..JobSummary::default()
            },
        });
    }

    /// Why a stop interrupted an item, for its jobs-log line.
    fn stop_reason(&self) -> String {
        self.stop.as_ref().map_or_else(|| "stopped".to_owned(), |(_, reason)| reason.clone())
    }

    /// Applies every command waiting, without blocking; the strongest interrupt wins.
    fn poll(&mut self, running: JobId) -> Option<Interrupt> {
        let mut strongest: Option<Interrupt> = None;
        while let Ok(command) = self.commands.try_recv() {
            if let Some(interrupt) = self.apply(command, Some(running)) {
                strongest = Some(match strongest {
                    Some(current) if current.rank() >= interrupt.rank() => current,
                    _ => interrupt,
                });
            }
        }
        strongest
    }
}

/// The engine thread's state.
pub(crate) struct Worker {
    backend: Box<dyn Backend>,
    inbox: Inbox,
    outputs: Outputs,
    loaded: Option<(ModelKey, LoadedModel)>,
    want_previews: bool,
}

/// How one item ended.
enum ItemOutcome {
    Done,
    Failed,
    Cancelled(Interrupt),
}

impl Worker {
    pub(crate) fn new(
        backend: Box<dyn Backend>,
        commands: Receiver<Command>,
        events: Sender<Event>,
        waker: Waker,
        outputs: Outputs,
        want_previews: bool,
    ) -> Self {
        Self {
            backend,
            inbox: Inbox {
                commands,
                events,
                waker,
                pending: VecDeque::new(),
                stats: QueueStats::default(),
                shutdown: false,
                stop: None,
            },
            outputs,
            loaded: None,
            want_previews,
        }
    }

    /// Runs until `Shutdown` or until the front end is gone.
    pub(crate) fn run(mut self) {
        loop {
            if self.inbox.shutdown {
                break;
            }
            match self.inbox.pending.pop_front() {
                Some((job, Pending::Plan(plan))) => {
                    self.run_job(job, &plan);
                    continue;
                }
                Some((job, Pending::Preload { model, device, dtype })) => {
                    self.run_preload(job, &model, device, dtype);
                    continue;
                }
                None => {}
            }
            match self.inbox.commands.recv() {
                Ok(command) => {
                    self.inbox.apply(command, None);
                }
                Err(_) => break,
            }
        }
        // Anything still queued at shutdown is reported as dropped, left for `resume`.
        let dropped: Vec<(JobId, Pending)> = self.inbox.pending.drain(..).collect();
        for (job, pending) in dropped {
            self.inbox.drop_pending(job, &pending, "not started: the engine shut down", true);
        }
    }

    fn run_job(&mut self, job: JobId, plan: &Plan) {
        let started = Instant::now();
        self.inbox.stats.running = 1;
        self.inbox.emit_stats();
        let mut summary = JobSummary {
            items: plan.items.len(),
            run_dir: plan.run_dir.as_ref().map(|dir| self.outputs.root.join(dir)),
            ..JobSummary::default()
        };
        let mut stop: Option<Interrupt> = None;
        for item in &plan.items {
            if stop.is_none() {
                stop = self.inbox.poll(job).filter(|i| *i != Interrupt::Skip);
            }
            if stop.is_none() && self.inbox.stop.is_some() {
                stop = Some(Interrupt::Stop);
            }
            if let Some(interrupt) = stop {
                if interrupt.resumable() {
                    summary.interrupted += 1;
                } else {
                    summary.cancelled += 1;
                }
                continue;
            }
            match self.run_item(job, plan, item, &mut summary) {
                ItemOutcome::Done => summary.done += 1,
                ItemOutcome::Failed => summary.failed += 1,
                ItemOutcome::Cancelled(interrupt) => {
                    if interrupt.resumable() {
                        summary.interrupted += 1;
                    } else {
                        summary.cancelled += 1;
                    }
                    if interrupt != Interrupt::Skip {
                        stop = Some(interrupt);
                    }
                }
            }
        }
        summary.duration_s = started.elapsed().as_secs_f64();
        self.inbox.stats.running = 0;
        if summary.failed > 0 {
            self.inbox.stats.failed += 1;
        } else if stop.is_some() {
            self.inbox.stats.cancelled += 1;
        } else {
            self.inbox.stats.done += 1;
        }
        self.inbox.emit(Event::JobFinished { job, summary });
        self.inbox.emit_stats();
    }

    /// Loads a model ahead of the jobs queued behind it; the job ends with its summary (an
    /// error when the load failed). Commands are not polled while a model loads, as in a job.
    fn run_preload(
        &mut self,
        job: JobId,
        model: &ModelRef,
        device: DeviceChoice,
        dtype: Option<Precision>,
    ) {
        let started = Instant::now();
        self.inbox.stats.running = 1;
        self.inbox.emit_stats();
        let mut summary = JobSummary::default();
        if let Err(error) = self.ensure_loaded(job, model, device, dtype) {
            summary.errors.push(error);
        }
        summary.duration_s = started.elapsed().as_secs_f64();
        self.inbox.stats.running = 0;
        if summary.errors.is_empty() {
            self.inbox.stats.done += 1;
        } else {
            self.inbox.stats.failed += 1;
        }
        self.inbox.emit(Event::JobFinished { job, summary });
        self.inbox.emit_stats();
    }

    fn ensure_loaded(
        &mut self,
        job: JobId,
        model: &ModelRef,
        device: DeviceChoice,
        dtype: Option<Precision>,
    ) -> Result<LoadedModel, String> {
        let key = ModelKey::new(model, device, dtype);
        if let Some((loaded_key, loaded)) = &self.loaded
            && *loaded_key == key
        {
            return Ok(LoadedModel { load_s: 0.0, ..loaded.clone() });
        }
        let inbox = &self.inbox;
        let name = model.display_name.clone();
        let mut on_progress = |progress: LoadProgress| {
            inbox.emit_lossy(Event::ModelLoading {
                job,
                model: name.clone(),
                message: progress.message,
                fraction: progress.fraction,
            });
        };
        let loaded = self
            .backend
            .load(model, device, dtype, &mut on_progress)
            .map_err(|e| format!("loading {}: {e}", model.display_name))?;
        self.loaded = Some((key, loaded.clone()));
        Ok(loaded)
    }

    /// Runs one item to its jobs-log line and its event: load, resolve, every image.
    fn run_item(
        &mut self,
        job: JobId,
        plan: &Plan,
        item: &WorkItem,
        summary: &mut JobSummary,
    ) -> ItemOutcome {
        let started = Instant::now();
        self.inbox.emit(Event::ItemStarted {
            job,
            item: item.index,
            items: plan.items.len(),
            model: item.model.display_name.clone(),
            profile: item.profile.clone(),
            images: item.seeds.len(),
        });
        let mut record = new_record(job, plan, item);
        let outcome = match self.prepare_item(job, plan, item) {
            Ok(prepared) => {
                prepared.settings.fill(&mut record);
                record.model_id.clone_from(&prepared.loaded.model_id);
                self.generate_images(job, plan, item, &prepared, &mut record, summary)
            }
            Err(failure) => {
                failure.settings.fill(&mut record);
                record.error = Some(failure.error);
                ItemOutcome::Failed
            }
        };
        record.timestamp = chrono::Local::now().to_rfc3339();
        record.duration_s = started.elapsed().as_secs_f64();
        record.device = self.backend.device_label();
        match &outcome {
            ItemOutcome::Done => record.status = ItemStatus::Done,
            ItemOutcome::Failed => record.status = ItemStatus::Failed,
            ItemOutcome::Cancelled(interrupt) => {
                record.status = if interrupt.resumable() {
                    ItemStatus::Interrupted
                } else {
                    ItemStatus::Cancelled
                };
                record.error = Some(match interrupt {
                    Interrupt::Skip => "skipped by user".to_owned(),
                    Interrupt::CancelJob => "cancelled by user".to_owned(),
                    Interrupt::Stop => format!("interrupted: {}", self.inbox.stop_reason()),
                    Interrupt::Shutdown => "interrupted: the engine shut down".to_owned(),
                });
            }
        }
        if let Err(err) = jobs_log::append(&self.outputs.log_path, &record) {
            self.inbox.emit(Event::Warning(format!("jobs log not written: {err}")));
        }
        let record = Box::new(record);
        match &outcome {
            ItemOutcome::Done => {
                self.inbox.emit(Event::ItemSaved { job, item: item.index, record });
            }
            ItemOutcome::Failed => {
                let error = record.error.clone().unwrap_or_default();
                summary
                    .errors
                    .push(format!("{} / {}: {error}", item.model.display_name, item.profile));
                self.inbox.emit(Event::ItemFailed { job, item: item.index, error, record });
            }
            ItemOutcome::Cancelled(_) => {
                self.inbox.emit(Event::ItemCancelled { job, item: item.index, record });
            }
        }
        outcome
    }

    /// Loads the item's model and init image and resolves its settings, once. A failure still
    /// resolves them (from the catalog's defaults) for the jobs-log line.
    fn prepare_item(
        &mut self,
        job: JobId,
        plan: &Plan,
        item: &WorkItem,
    ) -> Result<PreparedItem, ItemFailure> {
        let catalog_settings = || ItemSettings::resolve(item, item.model.defaults, None);
        let loaded = self
            .ensure_loaded(job, &item.model, plan.request.device, plan.request.dtype)
            .map_err(|error| ItemFailure { settings: catalog_settings(), error })?;
        let init_image = match &plan.request.init_image {
            None => None,
            Some(path) => Some(inputs::load_image(path).map_err(|error| ItemFailure {
                settings: catalog_settings(),
                error: format!("init_image: {error}"),
            })?),
        };
        let init_size = init_image.as_ref().map(image::RgbImage::dimensions);
        let settings = ItemSettings::resolve(item, loaded.defaults, init_size);
        let (width, height) = (settings.width, settings.height);
        if width < 8 || height < 8 {
            return Err(ItemFailure {
                settings,
                error: format!(
                    "init_image: too small ({width}x{height} after rounding down to multiples of 8)"
                ),
            });
        }
        let init_image = init_image.map(|image| inputs::fit(image, width, height));
        Ok(PreparedItem { loaded, settings, init_image })
    }

    /// Makes and saves every image of a prepared item, polling commands between images.
    fn generate_images(
        &mut self,
        job: JobId,
        plan: &Plan,
        item: &WorkItem,
        prepared: &PreparedItem,
        record: &mut JobRecord,
        summary: &mut JobSummary,
    ) -> ItemOutcome {
        let out_dir = self.outputs.root.join(&item.out_dir);
        for (image_index, &seed) in item.seeds.iter().enumerate() {
            // Commands that came during the model load or the previous image; a clean stop
            // starts no new image.
            if let Some(interrupt) = self.inbox.poll(job) {
                return ItemOutcome::Cancelled(interrupt);
            }
            if self.inbox.stop.is_some() {
                return ItemOutcome::Cancelled(Interrupt::Stop);
            }
            let params = prepared.params(plan, item, seed, self.want_previews);
            let mut generated = match self.generate_one(job, item.index, image_index, &params) {
                Ok(generated) => generated,
                Err(Stopped::Interrupted(interrupt)) => return ItemOutcome::Cancelled(interrupt),
                Err(Stopped::Failed(error)) => {
                    record.error = Some(error);
                    return ItemOutcome::Failed;
                }
            };
            if image_index == 0 {
                generated.timings.load_s = prepared.loaded.load_s;
            }
            generated.sampler.cli_name().clone_into(&mut record.scheduler);
            for note in &generated.notes {
                if !record.notes.contains(note) {
                    record.notes.push(note.clone());
                }
            }
            let info =
                prepared.generation_info(plan, item, seed, &generated, self.backend.device_label());
            let options = plan.request.output;
            let saved = match save_image(&out_dir, &plan.request.prompt, &info, &generated, options)
            {
                Ok((saved, note)) => {
                    if let Some(note) = note
                        && !record.notes.contains(&note)
                    {
                        self.inbox.emit(Event::Warning(note.clone()));
                        record.notes.push(note);
                    }
                    saved
                }
                Err(error) => {
                    record.error = Some(error);
                    return ItemOutcome::Failed;
                }
            };
            record.seeds.push(seed);
            record.paths.push(relative_path(&self.outputs.root, &saved.path));
            summary.paths.push(saved.path.clone());
            self.inbox.emit(Event::ImageSaved { job, item: item.index, image: saved });
        }
        ItemOutcome::Done
    }

    /// One image from the backend, with progress and previews sent and commands polled after
    /// every step.
    fn generate_one(
        &mut self,
        job: JobId,
        item: usize,
        image: usize,
        params: &GenerateParams,
    ) -> Result<Generated, Stopped> {
        let mut interrupt = None;
        let mut last_step = Instant::now();
        let mut rate = 0.0f32;
        let inbox = &mut self.inbox;
        let mut on_step = |update: StepUpdate<'_>| {
            let elapsed = last_step.elapsed().as_secs_f32().max(1e-6);
            last_step = Instant::now();
            rate = if rate == 0.0 { 1.0 / elapsed } else { 0.7 * rate + 0.3 / elapsed };
            inbox.emit_lossy(Event::Progress {
                job,
                item,
                image,
                step: update.step,
                steps: update.steps,
                it_per_s: rate,
            });
            if let Some(preview) = update.preview {
                inbox.emit_lossy(Event::Preview { job, item, preview: preview.clone() });
            }
            match inbox.poll(job) {
                None => ControlFlow::Continue(()),
                Some(found) => {
                    interrupt = Some(found);
                    ControlFlow::Break(())
                }
            }
        };
        match self.backend.generate(params, &mut on_step) {
            Ok(generated) => Ok(generated),
            Err(BackendError::Cancelled) => {
                Err(Stopped::Interrupted(interrupt.unwrap_or(Interrupt::CancelJob)))
            }
            Err(error) => Err(Stopped::Failed(error.to_string())),
        }
    }
}

/// Why an image stopped short.
enum Stopped {
    /// A command interrupted it.
    Interrupted(Interrupt),
    /// The backend failed, with why.
    Failed(String),
}

/// An item's settings with every default resolved: the user's or the profile's where set,
/// else the loaded model's.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ItemSettings {
    width: u32,
    height: u32,
    steps: u32,
    cfg: f32,
    sampler: SamplerKind,
}

impl ItemSettings {
    /// `item`'s settings over `defaults`; with an init image and no size given, the image's
    /// own size rounded down to multiples of 8.
    fn resolve(item: &WorkItem, defaults: ModelDefaults, init_size: Option<(u32, u32)>) -> Self {
        let (width, height) = match (init_size, item.width, item.height) {
            (_, Some(width), Some(height)) => (width, height),
            (Some((width, height)), None, None) => inputs::own_size_rounded(width, height),
            (_, width, height) => {
                (width.unwrap_or(defaults.width), height.unwrap_or(defaults.height))
            }
        };
        Self {
            width,
            height,
            steps: item.steps.unwrap_or(defaults.steps),
            cfg: item.cfg.unwrap_or(defaults.cfg),
            sampler: item.scheduler.unwrap_or(defaults.scheduler),
        }
    }

    /// Writes the settings into the item's jobs-log line.
    fn fill(&self, record: &mut JobRecord) {
        record.width = self.width;
        record.height = self.height;
        record.steps = self.steps;
        record.cfg = self.cfg;
        self.sampler.cli_name().clone_into(&mut record.scheduler);
    }
}

/// An item ready to generate: its model loaded, its settings resolved, its init image fitted.
struct PreparedItem {
    loaded: LoadedModel,
    settings: ItemSettings,
    init_image: Option<image::RgbImage>,
}

/// Why an item could not be prepared, with the settings its jobs-log line records.
struct ItemFailure {
    settings: ItemSettings,
    error: String,
}

impl PreparedItem {
    /// What the backend gets for image `seed`.
    fn params(
        &self,
        plan: &Plan,
        item: &WorkItem,
        seed: u64,
        want_preview: bool,
    ) -> GenerateParams {
        GenerateParams {
            prompt: item.prompt.clone(),
            negative: item.negative.clone(),
            width: self.settings.width,
            height: self.settings.height,
            steps: self.settings.steps,
            cfg: self.settings.cfg,
            sampler: self.settings.sampler,
            schedule_type: plan.request.schedule_type,
            seed,
            init_image: self.init_image.clone(),
            strength: plan.request.strength,
            truncate_prompt: plan.request.truncate_prompt,
            save_latent: plan.request.save_latent,
            loras: plan.request.loras.clone(),
            want_preview,
        }
    }

    /// The metadata written into the PNG of image `seed`.
    fn generation_info(
        &self,
        plan: &Plan,
        item: &WorkItem,
        seed: u64,
        generated: &Generated,
        device: String,
    ) -> GenerationInfo {
        let request = &plan.request;
        GenerationInfo {
            prompt: item.prompt.clone(),
            negative: item.negative.clone(),
            user_prompt: request.prompt.clone(),
            user_negative: request.negative.clone(),
            profile: item.profile.clone(),
            model: item.model.display_name.clone(),
            model_id: self.loaded.model_id.clone(),
            model_revision: self.loaded.revision.clone(),
            sampler: generated.sampler,
            requested_sampler: self.settings.sampler,
            schedule_type: request.schedule_type,
            steps: self.settings.steps,
            cfg: self.settings.cfg,
            seed,
            width: generated.image.width(),
            height: generated.image.height(),
            mode: request.mode(),
            strength: request.init_image.as_ref().map(|_| request.strength),
            init_image: request.init_image.as_ref().map(|p| p.display().to_string()),
            noise_source: generated.noise_source.clone(),
            loras: request.loras.clone(),
            truncate_prompt: request.truncate_prompt,
            dtype: generated.dtype.clone(),
            device,
            version: version_string(),
            notes: generated.notes.clone(),
        }
    }
}

/// The jobs-log line of an item before it runs: what the plan says (settings, status and
/// timing are filled in as it runs).
fn new_record(job: JobId, plan: &Plan, item: &WorkItem) -> JobRecord {
    JobRecord {
        timestamp: String::new(),
        mode: plan.request.mode(),
        prompt: item.prompt.clone(),
        negative: item.negative.clone(),
        all_profiles: plan.request.sweep == Sweep::AllProfiles,
        all_models: plan.request.sweep == Sweep::AllModelsAllProfiles,
        profile: item.profile.clone(),
        model: item.model.display_name.clone(),
        model_id: item.model.model_id(),
        scheduler: String::new(),
        steps: 0,
        cfg: 0.0,
        width: 0,
        height: 0,
        batch_size: u32::try_from(item.seeds.len()).unwrap_or(u32::MAX),
        seed_base: plan.seed_base,
        seeds: Vec::new(),
        paths: Vec::new(),
        run_dir: plan.run_dir.as_ref().map(|dir| dir.to_string_lossy().replace('\\', "/")),
        error: None,
        duration_s: 0.0,
        device: String::new(),
        status: ItemStatus::Done,
        job,
        notes: Vec::new(),
        extra: serde_json::Map::new(),
        runner: plan.runner.clone(),
    }
}

/// Writes the image in the requested format (and the latent) under never-overwritten names.
/// A JPEG whose settings do not fit its 64 KiB metadata segments is saved as a PNG instead,
/// with a note: the image is never lost and always carries its settings.
fn save_image(
    out_dir: &Path,
    user_prompt: &str,
    info: &GenerationInfo,
    generated: &Generated,
    options: SaveOptions,
) -> Result<(SavedImage, Option<String>), String> {
    let image = &generated.image;
    let (width, height) = image.dimensions();
    let (bytes, format, note) = match encode_image(width, height, image.as_raw(), info, options) {
        Ok(bytes) => (bytes, options.format, None),
        Err(err) if err.is_metadata_too_large() => {
            let png = SaveOptions { format: OutputFormat::Png, ..options };
            let bytes = encode_image(width, height, image.as_raw(), info, png)
                .map_err(|e| e.to_string())?;
            (bytes, OutputFormat::Png, Some(format!("saved as PNG instead of JPEG: {err}")))
        }
        Err(err) => return Err(err.to_string()),
    };
    let timestamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    let stem = image_stem(&timestamp, &info.profile, user_prompt, info.seed);
    let path = write_new_file(out_dir, &stem, format.extension(), &bytes)
        .map_err(|e| format!("saving image: {e}"))?;
    let latent = match &generated.latent_safetensors {
        None => None,
        Some(latent) => {
            let stem =
                path.file_stem().map_or_else(|| stem.clone(), |s| s.to_string_lossy().into_owned());
            Some(
                write_new_file(out_dir, &stem, "latent", latent)
                    .map_err(|e| format!("saving latent: {e}"))?,
            )
        }
    };
    Ok((SavedImage { path, seed: info.seed, latent, timings: generated.timings.clone() }, note))
}

/// `path` relative to `root` with `/` separators (the jobs log and favourites use these).
pub fn relative_path(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().replace('\\', "/")
}
