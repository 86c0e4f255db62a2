//! The engine thread's loop: one job at a time from a FIFO queue, one item at a time, commands
//! polled between denoising steps so cancel and skip act within one step.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::backend::{
    Backend, BackendError, GenerateParams, Generated, LoadOptions, LoadProgress, LoadedModel,
    ModelKey, StepUpdate,
};
use super::protocol::{Command, Event, JobId, JobSummary, QueueStats, SavedImage, StopMode};
use super::queue::{JobState, base_record};
use crate::models::catalog::{ModelDefaults, ModelRef};
use crate::request::{Plan, WorkItem};
use crate::storage::inputs;
use crate::storage::jobs_log::{self, ItemStatus, JobRecord};
use crate::storage::journal::{JobEnd, JobHandle};
use crate::storage::metadata::encode::encode_image;
use crate::storage::metadata::{GenerationInfo, JobRef, version_string};
use crate::storage::naming::{image_stem, write_new_file_as};
use crate::vocab::{DeviceChoice, LoraSpec, OutputFormat, Precision, SamplerKind, SaveOptions};

/// Wakes the front end after events were sent (`ctx.request_repaint` in the window).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Where the engine writes.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// The output root (`output_images/` by default).
    pub root: PathBuf,
    /// The jobs log file inside the root.
    pub log_path: PathBuf,
    /// This engine's journal writer: tags its temporary files (`storage::durable`).
    pub temp_tag: String,
}

/// A job waiting in (or taken from) the queue, and its place in it.
#[derive(Debug)]
pub(crate) struct PendingJob {
    job: JobId,
    work: PendingWork,
    rank: f64,
}

/// What a waiting job does.
#[derive(Debug)]
enum PendingWork {
    /// Images to make, with the job's persistent-queue handle.
    Plan { plan: Box<Plan>, journal: Box<JobHandle> },
    /// A model to load ahead of the jobs behind it (not persisted: nothing to resume).
    Preload { model: Box<ModelRef>, device: DeviceChoice, dtype: Option<Precision> },
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

/// The command side of the worker: pending jobs, stats, event sending. Kept apart from the
/// backend so the step callback can poll commands while the backend runs.
struct Inbox {
    commands: Receiver<Command>,
    events: Sender<Event>,
    waker: Waker,
    pending: VecDeque<PendingJob>,
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

    /// A warning for the front end, also kept in the job's summary when there is one.
    fn warn(&self, summary: Option<&mut JobSummary>, message: String) {
        if let Some(summary) = summary {
            summary.errors.push(message.clone());
        }
        self.emit(Event::Warning(message));
    }

    /// Queues a job (at the back), or ends it unstarted while the engine is stopping.
    fn enqueue(&mut self, pending: PendingJob, running: Option<JobId>) {
        if let Some((_, reason)) = &self.stop {
            let why = format!("not started: the engine is stopping ({reason})");
            self.drop_pending(pending, &why, true);
            return;
        }
        let job = pending.job;
        self.pending.push_back(pending);
        self.emit(Event::Queued {
            job,
            position: self.pending.len() - 1 + usize::from(running.is_some()),
        });
        self.emit_stats();
    }

    /// Takes a pending job out of the queue.
    fn take_pending(&mut self, job: JobId) -> Option<PendingJob> {
        let index = self.pending.iter().position(|pending| pending.job == job)?;
        self.pending.remove(index)
    }

    /// Ends every pending job unstarted.
    fn drop_all_pending(&mut self, why: &str, interrupted: bool) {
        let dropped: Vec<PendingJob> = self.pending.drain(..).collect();
        for pending in dropped {
            self.drop_pending(pending, why, interrupted);
        }
    }

    /// Moves a pending job to `position` among the pending ones and records its new rank.
    fn move_pending(&mut self, job: JobId, position: usize) {
        let Some(mut pending) = self.take_pending(job) else { return };
        let position = position.min(self.pending.len());
        let before = position.checked_sub(1).and_then(|i| self.pending.get(i)).map(|p| p.rank);
        let after = self.pending.get(position).map(|p| p.rank);
        pending.rank = match (before, after) {
            (Some(before), Some(after)) => before + (after - before) / 2.0,
            (Some(before), None) => before + 1.0,
            (None, Some(after)) => after - 1.0,
            (None, None) => pending.rank,
        };
        if let PendingWork::Plan { journal, .. } = &mut pending.work
            && let Err(err) = journal.ranked(pending.rank)
        {
            self.warn(None, format!("persistent queue: {err}"));
        }
        self.pending.insert(position, pending);
        self.emit_stats();
    }

    /// Applies a command; returns what it means for the running job, if one runs.
    fn apply(&mut self, command: Command, running: Option<JobId>) -> Option<Interrupt> {
        match command {
            Command::Submit { job, plan, journal, rank } => {
                self.enqueue(
                    PendingJob { job, work: PendingWork::Plan { plan, journal }, rank },
                    running,
                );
                None
            }
            Command::Preload { job, model, device, dtype } => {
                // Behind every job queued so far (FIFO), whatever their ranks.
                let rank = self.pending.back().map_or(0.0, |last| last.rank + 1.0);
                let work = PendingWork::Preload { model, device, dtype };
                self.enqueue(PendingJob { job, work, rank }, running);
                None
            }
            Command::Cancel(job) if Some(job) == running => Some(Interrupt::CancelJob),
            Command::Cancel(job) => {
                if let Some(pending) = self.take_pending(job) {
                    self.drop_pending(pending, "cancelled before it started", false);
                    self.emit_stats();
                }
                None
            }
            Command::SkipCurrent => running.map(|_| Interrupt::Skip),
            Command::ClearQueue => {
                self.drop_all_pending("removed from the queue", false);
                self.emit_stats();
                None
            }
            Command::Pause(paused) => {
                self.stats.paused = paused;
                self.emit_stats();
                None
            }
            Command::Move { job, position } => {
                self.move_pending(job, position);
                None
            }
            Command::Replace { job, new_job, plan, journal } => {
                let edited = PendingJob {
                    job: new_job,
                    work: PendingWork::Plan { plan, journal },
                    rank: 0.0,
                };
                if let Some(index) = self.pending.iter().position(|pending| pending.job == job) {
                    let mut edited = PendingJob { rank: self.pending[index].rank, ..edited };
                    if let PendingWork::Plan { journal, .. } = &mut edited.work
                        && let Err(err) = journal.ranked(edited.rank)
                    {
                        self.warn(None, format!("persistent queue: {err}"));
                    }
                    let old = std::mem::replace(&mut self.pending[index], edited);
                    self.emit(Event::Queued { job: new_job, position: index });
                    let why = format!("replaced by an edited copy (job #{new_job})");
                    self.drop_pending(old, &why, false);
                    self.emit_stats();
                } else {
                    self.emit(Event::Warning(format!(
                        "job #{job} had already started; the edited copy is queued as job \
                         #{new_job}"
                    )));
                    self.enqueue(edited, running);
                }
                None
            }
            Command::Stop { mode, reason } => {
                let (mode, reason) = if let Some((current, first_reason)) = self.stop.take() {
                    (current.max(mode), first_reason)
                } else {
                    self.drop_all_pending(&format!("not started: stopped ({reason})"), true);
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

    /// Reports a job that never started: every item counted as cancelled (and the job ended in
    /// the persistent queue), or as interrupted when a stop or shutdown (not the user) dropped
    /// it (left for `imagelab resume`). A preload has no items and no persistent record.
    fn drop_pending(&mut self, pending: PendingJob, why: &str, interrupted: bool) {
        self.stats.cancelled += 1;
        let job = pending.job;
        let (items, job_id) = match pending.work {
            PendingWork::Plan { plan, mut journal } => {
                if !interrupted && let Err(err) = journal.ended(JobEnd::Cancelled, Some(why)) {
                    self.warn(None, format!("persistent queue: {err}"));
                }
                (plan.items.len(), Some(journal.id().to_owned()))
            }
            PendingWork::Preload { .. } => (0, None),
        };
        let (cancelled, interrupted) = if interrupted { (0, items) } else { (items, 0) };
        self.emit(Event::JobFinished {
            job,
            summary: JobSummary {
                items,
                cancelled,
                interrupted,
                errors: vec![why.to_owned()],
                job_id,
                ..JobSummary::default()
            },
        });
    }

    /// A stop the engine decides itself (a full disk): as [`Command::Stop`] with
    /// [`StopMode::Now`].
    fn stop_now(&mut self, reason: &str) {
        self.apply(Command::Stop { mode: StopMode::Now, reason: reason.to_owned() }, None);
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
            if !self.inbox.stats.paused
                && let Some(pending) = self.inbox.pending.pop_front()
            {
                match pending.work {
                    PendingWork::Plan { plan, journal } => {
                        self.run_job(pending.job, &plan, journal);
                    }
                    PendingWork::Preload { model, device, dtype } => {
                        self.run_preload(pending.job, &model, device, dtype);
                    }
                }
                continue;
            }
            match self.inbox.commands.recv() {
                Ok(command) => {
                    self.inbox.apply(command, None);
                }
                Err(_) => break,
            }
        }
        // Anything still queued at shutdown is reported as dropped, left for `resume`.
        self.inbox.drop_all_pending("not started: the engine shut down", true);
    }

    /// Runs one job; its persistent-queue handle (and with it the job's lock) is released
    /// before `JobFinished`, so a front end may resume or list the job as soon as it hears.
    fn run_job(&mut self, job: JobId, plan: &Plan, mut journal: Box<JobHandle>) {
        let started = Instant::now();
        self.inbox.stats.running = 1;
        self.inbox.emit_stats();
        let mut summary = JobSummary {
            items: plan.items.len(),
            run_dir: plan.run_dir.as_ref().map(|dir| self.outputs.root.join(dir)),
            job_id: Some(journal.id().to_owned()),
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
            match self.run_item(job, plan, item, &mut journal, &mut summary) {
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
        // The persistent queue: a job stopped by a stop or a shutdown stays unfinished; a shard
        // ends the job only when every shard's items are done.
        let end = match stop {
            None | Some(Interrupt::Skip) if journal.shard().is_some() => {
                let whole_job_done = JobState::read(&self.outputs.root, journal.id())
                    .is_ok_and(|state| state.remaining_plan(false).is_none());
                whole_job_done.then_some((JobEnd::Finished, Some("every shard done")))
            }
            None | Some(Interrupt::Skip) => Some((JobEnd::Finished, None)),
            Some(Interrupt::CancelJob) => Some((JobEnd::Cancelled, Some("cancelled by user"))),
            Some(Interrupt::Stop | Interrupt::Shutdown) => None,
        };
        if let Some((end, reason)) = end
            && let Err(err) = journal.ended(end, reason)
        {
            self.inbox.warn(Some(&mut summary), format!("persistent queue: {err}"));
        }
        drop(journal);
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
        let options = LoadOptions { device, dtype, vae: None, loras: Vec::new() };
        if let Err(error) = self.load_model(job, model, &options, &model.display_name) {
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

    /// The item's model, loaded with the plan's VAE and LoRAs (a catalog LoRA entry, such as
    /// Pixel Art XL, is its base model with the LoRA at weight 1, before the request's own).
    fn ensure_loaded(
        &mut self,
        job: JobId,
        item: &WorkItem,
        plan: &Plan,
    ) -> Result<LoadedModel, String> {
        let mut options = LoadOptions {
            device: plan.request.device,
            dtype: plan.request.dtype,
            vae: plan.vae.clone(),
            loras: plan.loras.clone(),
        };
        let model = match &item.base_and_lora {
            Some((base, lora)) => {
                options.loras.insert(0, lora.clone());
                base
            }
            None => &item.model,
        };
        self.load_model(job, model, &options, &item.model.display_name)
    }

    /// Loads `model` with `options` unless it is the one loaded; `name` is what progress says.
    fn load_model(
        &mut self,
        job: JobId,
        model: &ModelRef,
        options: &LoadOptions,
        name: &str,
    ) -> Result<LoadedModel, String> {
        let key = ModelKey::new(model, options);
        if let Some((loaded_key, loaded)) = &self.loaded
            && *loaded_key == key
        {
            return Ok(LoadedModel { load_s: 0.0, ..loaded.clone() });
        }
        let inbox = &self.inbox;
        let progress_name = name.to_owned();
        let mut on_progress = |progress: LoadProgress| {
            inbox.emit_lossy(Event::ModelLoading {
                job,
                model: progress_name.clone(),
                message: progress.message,
                fraction: progress.fraction,
            });
        };
        let loaded = self
            .backend
            .load(model, options, &mut on_progress)
            .map_err(|e| format!("loading {name}: {e}"))?;
        self.loaded = Some((key, loaded.clone()));
        Ok(loaded)
    }

    /// Runs one item to its jobs-log line and its event: load, resolve, every image.
    fn run_item(
        &mut self,
        job: JobId,
        plan: &Plan,
        item: &WorkItem,
        journal: &mut JobHandle,
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
        let mut record = base_record(job, journal.id(), plan, item);
        let outcome = match self.prepare_item(job, plan, item) {
            Ok(prepared) => {
                prepared.settings.fill(&mut record);
                record.model_id.clone_from(&prepared.loaded.model_id);
                self.generate_images(job, plan, item, &prepared, &mut record, journal, summary)
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
        let logged = match jobs_log::append(&self.outputs.log_path, &record) {
            Ok(cut) => {
                if cut > 0 {
                    let message = format!("cut a torn last line ({cut} bytes) off the jobs log");
                    self.inbox.warn(None, message);
                }
                true
            }
            Err(err) => {
                self.inbox.warn(Some(summary), format!("jobs log not written: {err}"));
                false
            }
        };
        if let Err(err) = journal.item_ended(item.index, record.status, &record.paths, logged) {
            self.inbox.warn(Some(summary), format!("persistent queue: {err}"));
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
            .ensure_loaded(job, item, plan)
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
    #[allow(clippy::too_many_arguments, reason = "the item's context, passed down once")]
    fn generate_images(
        &mut self,
        job: JobId,
        plan: &Plan,
        item: &WorkItem,
        prepared: &PreparedItem,
        record: &mut JobRecord,
        journal: &mut JobHandle,
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
            let mut info =
                prepared.generation_info(plan, item, seed, &generated, self.backend.device_label());
            info.job = Some(JobRef { id: journal.id().to_owned(), item: item.index });
            let tag = &self.outputs.temp_tag;
            let options = plan.request.output;
            let saved =
                match save_image(&out_dir, &plan.request.prompt, &info, &generated, options, tag) {
                    Ok((saved, note)) => {
                        if let Some(note) = note
                            && !record.notes.contains(&note)
                        {
                            self.inbox.emit(Event::Warning(note.clone()));
                            record.notes.push(note);
                        }
                        saved
                    }
                    Err(error) if error.disk_full => {
                        // Every later image would fail the same way: stop, resumably, and say so.
                        let message = format!(
                            "disk full ({}); stopped: free some space, then run `imagelab resume`",
                            error.message
                        );
                        self.inbox.warn(Some(summary), message);
                        self.inbox.stop_now("disk full");
                        return ItemOutcome::Cancelled(Interrupt::Stop);
                    }
                    Err(error) => {
                        record.error = Some(error.message);
                        return ItemOutcome::Failed;
                    }
                };
            let relative = relative_path(&self.outputs.root, &saved.path);
            if let Err(err) = journal.image_saved(item.index, seed, &relative) {
                self.inbox.warn(Some(summary), format!("persistent queue: {err}"));
            }
            record.seeds.push(seed);
            record.paths.push(relative);
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
            loras: plan
                .loras
                .iter()
                .map(|choice| LoraSpec { source: choice.lora.model_id(), weight: choice.weight })
                .collect(),
            // A catalog LoRA entry's own LoRA comes first and is not the request's.
            lora_hashes: self
                .loaded
                .lora_hashes
                .iter()
                .skip(self.loaded.lora_hashes.len().saturating_sub(plan.loras.len()))
                .cloned()
                .collect(),
            truncate_prompt: request.truncate_prompt,
            dtype: generated.dtype.clone(),
            device,
            version: version_string(),
            notes: generated.notes.clone(),
            job: None,
        }
    }
}

/// Why an image could not be saved.
struct SaveError {
    message: String,
    /// The disk (or the quota) is full: later images would fail the same way.
    disk_full: bool,
}

impl SaveError {
    fn io(what: &str, err: &std::io::Error) -> Self {
        let disk_full = matches!(
            err.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        );
        Self { message: format!("saving {what}: {err}"), disk_full }
    }

    fn encoding(err: impl std::fmt::Display) -> Self {
        Self { message: err.to_string(), disk_full: false }
    }
}

/// Writes the image in the requested format (and the latent) under never-overwritten names;
/// `tag` names this writer in the temporary files. A JPEG whose settings do not fit its 64 KiB
/// metadata segments is saved as a PNG instead, with a note: the image is never lost and
/// always carries its settings.
fn save_image(
    out_dir: &Path,
    user_prompt: &str,
    info: &GenerationInfo,
    generated: &Generated,
    options: SaveOptions,
    tag: &str,
) -> Result<(SavedImage, Option<String>), SaveError> {
    let image = &generated.image;
    let (width, height) = image.dimensions();
    let (bytes, format, note) = match encode_image(width, height, image.as_raw(), info, options) {
        Ok(bytes) => (bytes, options.format, None),
        Err(err) if err.is_metadata_too_large() => {
            let png = SaveOptions { format: OutputFormat::Png, ..options };
            let bytes = encode_image(width, height, image.as_raw(), info, png)
                .map_err(SaveError::encoding)?;
            (bytes, OutputFormat::Png, Some(format!("saved as PNG instead of JPEG: {err}")))
        }
        Err(err) => return Err(SaveError::encoding(err)),
    };
    let timestamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    let stem = image_stem(&timestamp, &info.profile, user_prompt, info.seed);
    let path = write_new_file_as(out_dir, &stem, format.extension(), &bytes, tag)
        .map_err(|e| SaveError::io("image", &e))?;
    let latent = match &generated.latent_safetensors {
        None => None,
        Some(latent) => {
            let stem =
                path.file_stem().map_or_else(|| stem.clone(), |s| s.to_string_lossy().into_owned());
            Some(
                write_new_file_as(out_dir, &stem, "latent", latent, tag)
                    .map_err(|e| SaveError::io("latent", &e))?,
            )
        }
    };
    Ok((SavedImage { path, seed: info.seed, latent, timings: generated.timings.clone() }, note))
}

/// `path` relative to `root` with `/` separators (the jobs log and favourites use these).
pub fn relative_path(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().replace('\\', "/")
}
