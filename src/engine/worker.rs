//! The engine thread's loop: one job at a time from a FIFO queue, one item at a time, commands
//! polled between denoising steps so cancel and skip act within one step.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::backend::{Backend, BackendError, GenerateParams, LoadProgress, LoadedModel};
use super::protocol::{Command, Event, JobId, JobSummary, QueueStats, SavedImage};
use crate::models::catalog::{ModelRef, ModelSource};
use crate::request::{DeviceChoice, Plan, Precision, Sweep, WorkItem};
use crate::storage::inputs;
use crate::storage::jobs_log::{self, ItemStatus, JobRecord};
use crate::storage::metadata::{GenerationInfo, png_io, version_string};
use crate::storage::naming::{image_stem, write_new_file};

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
    /// Stop everything.
    Shutdown,
}

/// The command side of the worker: pending jobs, stats, event sending. Kept apart from the
/// backend so the step callback can poll commands while the backend runs.
struct Inbox {
    commands: Receiver<Command>,
    events: Sender<Event>,
    waker: Waker,
    pending: VecDeque<(JobId, Box<Plan>)>,
    stats: QueueStats,
    shutdown: bool,
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
                self.pending.push_back((job, plan));
                self.emit(Event::Queued {
                    job,
                    position: self.pending.len() - 1 + usize::from(running.is_some()),
                });
                self.emit_stats();
                None
            }
            Command::Cancel(job) if Some(job) == running => Some(Interrupt::CancelJob),
            Command::Cancel(job) => {
                let index = self.pending.iter().position(|(pending, _)| *pending == job);
                if let Some((_, plan)) = index.and_then(|index| self.pending.remove(index)) {
                    self.drop_pending(job, &plan, "cancelled before it started");
                    self.emit_stats();
                }
                None
            }
            Command::SkipCurrent => running.map(|_| Interrupt::Skip),
            Command::ClearQueue => {
                let dropped: Vec<(JobId, Box<Plan>)> = self.pending.drain(..).collect();
                for (job, plan) in dropped {
                    self.drop_pending(job, &plan, "removed from the queue");
                }
                self.emit_stats();
                None
            }
            Command::Shutdown => {
                self.shutdown = true;
                Some(Interrupt::Shutdown)
            }
        }
    }

    /// Reports a job that never started: every item counted as cancelled.
    fn drop_pending(&mut self, job: JobId, plan: &Plan, why: &str) {
        self.stats.cancelled += 1;
        let items = plan.items.len();
        self.emit(Event::JobFinished {
            job,
            summary: JobSummary {
                items,
                cancelled: items,
                errors: vec![why.to_owned()],
                ..JobSummary::default()
            },
        });
    }

    /// Applies every command waiting, without blocking; the strongest interrupt wins.
    fn poll(&mut self, running: JobId) -> Option<Interrupt> {
        let mut strongest = None;
        while let Ok(command) = self.commands.try_recv() {
            if let Some(interrupt) = self.apply(command, Some(running)) {
                strongest = Some(match (strongest, interrupt) {
                    (Some(Interrupt::Shutdown), _) | (_, Interrupt::Shutdown) => {
                        Interrupt::Shutdown
                    }
                    (Some(Interrupt::CancelJob), _) | (_, Interrupt::CancelJob) => {
                        Interrupt::CancelJob
                    }
                    _ => Interrupt::Skip,
                });
            }
        }
        strongest
    }
}

/// The model the backend has ready, and for which device.
#[derive(Debug, Clone, PartialEq)]
struct LoadedKey {
    source: ModelSource,
    device: DeviceChoice,
    dtype: Option<Precision>,
}

/// The engine thread's state.
pub(crate) struct Worker {
    backend: Box<dyn Backend>,
    inbox: Inbox,
    outputs: Outputs,
    loaded: Option<(LoadedKey, LoadedModel)>,
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
            if let Some((job, plan)) = self.inbox.pending.pop_front() {
                self.run_job(job, &plan);
                continue;
            }
            match self.inbox.commands.recv() {
                Ok(command) => {
                    self.inbox.apply(command, None);
                }
                Err(_) => break,
            }
        }
        // Anything still queued at shutdown is reported as dropped.
        let dropped: Vec<JobId> = self.inbox.pending.drain(..).map(|(job, _)| job).collect();
        for job in dropped {
            self.inbox.emit(Event::JobFinished {
                job,
                summary: JobSummary {
                    errors: vec!["engine shut down".into()],
                    ..JobSummary::default()
                },
            });
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
            if stop.is_some() {
                summary.cancelled += 1;
                continue;
            }
            match self.run_item(job, plan, item, &mut summary) {
                ItemOutcome::Done => summary.done += 1,
                ItemOutcome::Failed => summary.failed += 1,
                ItemOutcome::Cancelled(interrupt) => {
                    summary.cancelled += 1;
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

    fn ensure_loaded(
        &mut self,
        job: JobId,
        model: &ModelRef,
        plan: &Plan,
    ) -> Result<LoadedModel, String> {
        let key = LoadedKey {
            source: model.source.clone(),
            device: plan.request.device,
            dtype: plan.request.dtype,
        };
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
            .load(model, plan.request.device, plan.request.dtype, &mut on_progress)
            .map_err(|e| format!("loading {}: {e}", model.display_name))?;
        self.loaded = Some((key, loaded.clone()));
        Ok(loaded)
    }

    #[allow(clippy::too_many_lines)]
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
        let mut record = JobRecord {
            timestamp: String::new(),
            mode: plan.request.mode(),
            prompt: item.prompt.clone(),
            negative: item.negative.clone(),
            all_profiles: plan.request.sweep == Sweep::AllProfiles,
            all_models: plan.request.sweep == Sweep::AllModelsAllProfiles,
            profile: item.profile.clone(),
            model: item.model.display_name.clone(),
            model_id: item.model.model_id(),
            scheduler: item
                .scheduler
                .unwrap_or(item.model.defaults.scheduler)
                .cli_name()
                .to_owned(),
            steps: item.steps.unwrap_or(item.model.defaults.steps),
            cfg: item.cfg.unwrap_or(item.model.defaults.cfg),
            width: item.width.unwrap_or(item.model.defaults.width),
            height: item.height.unwrap_or(item.model.defaults.height),
            batch_size: u32::try_from(item.seeds.len()).unwrap_or(u32::MAX),
            seed_base: plan.seed_base,
            seeds: Vec::new(),
            paths: Vec::new(),
            run_dir: plan.run_dir.as_ref().map(|dir| dir.to_string_lossy().replace('\\', "/")),
            error: None,
            duration_s: 0.0,
            device: self.backend.device_label(),
            status: ItemStatus::Done,
            job,
            notes: Vec::new(),
        };
        let outcome = self.generate_item(job, plan, item, &mut record, summary);
        record.timestamp = chrono::Local::now().to_rfc3339();
        record.duration_s = started.elapsed().as_secs_f64();
        record.device = self.backend.device_label();
        match &outcome {
            ItemOutcome::Done => record.status = ItemStatus::Done,
            ItemOutcome::Failed => record.status = ItemStatus::Failed,
            ItemOutcome::Cancelled(interrupt) => {
                record.status = ItemStatus::Cancelled;
                record.error = Some(match interrupt {
                    Interrupt::Skip => "skipped by user".to_owned(),
                    Interrupt::CancelJob => "cancelled by user".to_owned(),
                    Interrupt::Shutdown => "cancelled: engine shut down".to_owned(),
                });
            }
        }
        if let Err(err) = jobs_log::append(&self.outputs.log_path, &record) {
            self.inbox.emit(Event::Warning(format!("jobs log not written: {err}")));
        }
        let record = Box::new(record);
        match &outcome {
            ItemOutcome::Done => {
                self.inbox.emit(Event::ItemSaved { job, item: item.index, record })
            }
            ItemOutcome::Failed => {
                let error = record.error.clone().unwrap_or_default();
                summary
                    .errors
                    .push(format!("{} / {}: {error}", item.model.display_name, item.profile));
                self.inbox.emit(Event::ItemFailed { job, item: item.index, error, record });
            }
            ItemOutcome::Cancelled(_) => {
                self.inbox.emit(Event::ItemCancelled { job, item: item.index, record })
            }
        }
        outcome
    }

    #[allow(clippy::too_many_lines)]
    fn generate_item(
        &mut self,
        job: JobId,
        plan: &Plan,
        item: &WorkItem,
        record: &mut JobRecord,
        summary: &mut JobSummary,
    ) -> ItemOutcome {
        let loaded = match self.ensure_loaded(job, &item.model, plan) {
            Ok(loaded) => loaded,
            Err(error) => {
                record.error = Some(error);
                return ItemOutcome::Failed;
            }
        };
        let defaults = loaded.defaults;
        record.model_id = loaded.model_id.clone();
        let init_image = match &plan.request.init_image {
            None => None,
            Some(path) => match inputs::load_image(path) {
                Ok(image) => Some(image),
                Err(error) => {
                    record.error = Some(format!("init_image: {error}"));
                    return ItemOutcome::Failed;
                }
            },
        };
        let (width, height) = match (&init_image, item.width, item.height) {
            (_, Some(w), Some(h)) => (w, h),
            (Some(init), None, None) => inputs::own_size_rounded(init.width(), init.height()),
            (_, w, h) => (w.unwrap_or(defaults.width), h.unwrap_or(defaults.height)),
        };
        if width < 8 || height < 8 {
            record.error = Some(format!(
                "init_image: too small ({width}x{height} after rounding down to multiples of 8)"
            ));
            return ItemOutcome::Failed;
        }
        let init_image = init_image.map(|image| inputs::fit(image, width, height));
        let sampler = item.scheduler.unwrap_or(defaults.scheduler);
        let steps = item.steps.unwrap_or(defaults.steps);
        let cfg = item.cfg.unwrap_or(defaults.cfg);
        record.width = width;
        record.height = height;
        record.steps = steps;
        record.cfg = cfg;
        record.scheduler = sampler.cli_name().to_owned();

        let out_dir = self.outputs.root.join(&item.out_dir);
        for (image_index, &seed) in item.seeds.iter().enumerate() {
            if image_index > 0
                && let Some(interrupt) = self.inbox.poll(job)
            {
                return ItemOutcome::Cancelled(interrupt);
            }
            let params = GenerateParams {
                prompt: item.prompt.clone(),
                negative: item.negative.clone(),
                width,
                height,
                steps,
                cfg,
                sampler,
                schedule_type: plan.request.schedule_type,
                seed,
                init_image: init_image.clone(),
                strength: plan.request.strength,
                truncate_prompt: plan.request.truncate_prompt,
                save_latent: plan.request.save_latent,
                loras: plan.request.loras.clone(),
                want_preview: self.want_previews,
            };
            let mut interrupt = None;
            let mut last_step = Instant::now();
            let mut rate = 0.0f32;
            let inbox = &mut self.inbox;
            let mut on_step = |update: super::backend::StepUpdate<'_>| {
                let elapsed = last_step.elapsed().as_secs_f32().max(1e-6);
                last_step = Instant::now();
                rate = if rate == 0.0 { 1.0 / elapsed } else { 0.7 * rate + 0.3 / elapsed };
                inbox.emit_lossy(Event::Progress {
                    job,
                    item: item.index,
                    image: image_index,
                    step: update.step,
                    steps: update.steps,
                    it_per_s: rate,
                });
                if let Some(preview) = update.preview {
                    inbox.emit_lossy(Event::Preview {
                        job,
                        item: item.index,
                        preview: preview.clone(),
                    });
                }
                match inbox.poll(job) {
                    None => ControlFlow::Continue(()),
                    Some(found) => {
                        interrupt = Some(found);
                        ControlFlow::Break(())
                    }
                }
            };
            let result = self.backend.generate(&params, &mut on_step);
            let mut generated = match result {
                Ok(generated) => generated,
                Err(BackendError::Cancelled) => {
                    return ItemOutcome::Cancelled(interrupt.unwrap_or(Interrupt::CancelJob));
                }
                Err(error) => {
                    record.error = Some(error.to_string());
                    return ItemOutcome::Failed;
                }
            };
            if image_index == 0 {
                generated.timings.load_s = loaded.load_s;
            }
            record.scheduler = generated.sampler.cli_name().to_owned();
            for note in &generated.notes {
                if !record.notes.contains(note) {
                    record.notes.push(note.clone());
                }
            }
            let info = GenerationInfo {
                prompt: item.prompt.clone(),
                negative: item.negative.clone(),
                user_prompt: plan.request.prompt.clone(),
                user_negative: plan.request.negative.clone(),
                profile: item.profile.clone(),
                model: item.model.display_name.clone(),
                model_id: loaded.model_id.clone(),
                model_revision: loaded.revision.clone(),
                sampler: generated.sampler,
                requested_sampler: sampler,
                schedule_type: plan.request.schedule_type,
                steps,
                cfg,
                seed,
                width: generated.image.width(),
                height: generated.image.height(),
                mode: plan.request.mode(),
                strength: plan.request.init_image.as_ref().map(|_| plan.request.strength),
                init_image: plan.request.init_image.as_ref().map(|p| p.display().to_string()),
                noise_source: generated.noise_source.clone(),
                loras: plan.request.loras.clone(),
                truncate_prompt: plan.request.truncate_prompt,
                dtype: generated.dtype.clone(),
                device: self.backend.device_label(),
                version: version_string(),
                notes: generated.notes.clone(),
            };
            let saved = match save_image(&out_dir, &plan.request.prompt, &info, &generated) {
                Ok(saved) => saved,
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
}

/// Writes the PNG (and latent) under never-overwritten names.
fn save_image(
    out_dir: &Path,
    user_prompt: &str,
    info: &GenerationInfo,
    generated: &super::backend::Generated,
) -> Result<SavedImage, String> {
    let image = &generated.image;
    let bytes = png_io::encode_png(image.width(), image.height(), image.as_raw(), info)
        .map_err(|e| e.to_string())?;
    let timestamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    let stem = image_stem(&timestamp, &info.profile, user_prompt, info.seed);
    let path =
        write_new_file(out_dir, &stem, "png", &bytes).map_err(|e| format!("saving image: {e}"))?;
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
    Ok(SavedImage { path, seed: info.seed, latent, timings: generated.timings.clone() })
}

/// `path` relative to `root` with `/` separators (the jobs log and favourites use these).
pub fn relative_path(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().replace('\\', "/")
}
