//! The engine: a named background thread that owns the backend, the loaded models and the
//! output folder, fed by [`Command`]s and answering with [`Event`]s over bounded channels.
//!
//! Front ends never block on it: they submit plans, poll events (the window within a time
//! budget each frame, the CLI by blocking on `recv`), and pass a waker that the engine calls
//! after each event.
//!
//! Every submitted job is written to the output folder's persistent queue before it is
//! queued ([`queue`]), so any front end's work survives a crash and can be resumed.

pub mod backend;
pub mod candle_backend;
pub mod mock;
pub mod protocol;
pub mod queue;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

pub use backend::{
    Backend, BackendError, Capabilities, GenerateParams, Generated, LoadOptions, LoadProgress,
    LoadedModel, ModelChecker, ModelKey, Preview, StepUpdate, Timings,
};
pub use protocol::{Command, Event, JobId, JobSummary, QueueStats, SavedImage, StopMode};
pub use worker::{Outputs, Waker, relative_path};

use crate::models::catalog::{Catalog, ModelRef, ModelSource};
use crate::models::layout::Layout;
use crate::request::{Plan, Profiles, Request, RequestError, build_plan};
use crate::storage::journal::{JobEnd, JobHandle, Journal, Shard};
use crate::storage::{inputs, jobs_log, naming};
use crate::vocab::{DeviceChoice, Precision};
pub use queue::{JobState, MaintenanceReport, UnfinishedJob};

/// Pending commands the front end may queue before it is refused (never blocks).
const COMMAND_CAPACITY: usize = 256;
/// Events buffered for a lagging front end; progress and previews beyond this are dropped.
const EVENT_CAPACITY: usize = 1024;

/// How to start an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The output root.
    pub output_root: PathBuf,
    /// `INSTANCE_ID`: selects `jobs_<id>.log` so instances sharing a folder never share a file.
    pub instance_id: Option<String>,
    /// Ask the backend for a preview every step (the window does, the CLI does not).
    pub previews: bool,
}

/// Why the engine could not start or take a command.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The output folder cannot be created or written.
    #[error("output_dir: {0}")]
    OutputDir(String),
    /// The engine thread could not be started.
    #[error("cannot start the engine thread: {0}")]
    Thread(#[from] std::io::Error),
    /// Too many commands are waiting.
    #[error("the engine queue is full; wait for jobs to finish")]
    QueueFull,
    /// The engine thread has ended.
    #[error("the engine has stopped")]
    Stopped,
    /// The persistent queue could not be written or read (nothing was queued).
    #[error("persistent queue: {0}")]
    Journal(String),
    /// Another live process holds the job (it runs or waits there).
    #[error("job {0} is held by another running process")]
    JobBusy(String),
}

/// How `Engine::resume` continues a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumeOptions {
    /// Also run again the items that failed (their saved images are kept).
    pub retry_failed: bool,
    /// Run on this device instead of the recorded one (the job moved to another machine).
    pub device: Option<DeviceChoice>,
    /// Run only this shard of the job (its items `index % count == shard`), alongside other
    /// processes running the other shards into the same folder.
    pub shard: Option<Shard>,
}

/// A job taken back from the persistent queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    /// Its number in this engine.
    pub job: JobId,
    /// Its id in the persistent queue.
    pub id: String,
    /// What is left of it, as queued.
    pub plan: Plan,
    /// What the reconciliation before it did (images found, lines written).
    pub notes: Vec<String>,
}

/// A handle on the engine thread. Dropping it cancels the running item and joins the thread.
pub struct Engine {
    commands: Sender<Command>,
    events: Receiver<Event>,
    thread: Option<JoinHandle<()>>,
    next_job: AtomicU64,
    capabilities: Capabilities,
    backend_name: &'static str,
    outputs: Outputs,
    journal: Journal,
    journal_ids: Mutex<HashMap<JobId, String>>,
    model_checker: ModelChecker,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.backend_name)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Checks the output folder, opens its persistent queue and settles what an earlier crash
    /// left there ([`queue::maintain`]: reported as [`Event::Warning`]s), and starts the
    /// `imagelab-engine` thread.
    ///
    /// # Errors
    /// An unusable output folder (named), or a thread that cannot start.
    pub fn spawn(
        backend: Box<dyn Backend>,
        config: EngineConfig,
        waker: Waker,
    ) -> Result<Self, EngineError> {
        inputs::check_output_dir(&config.output_root).map_err(EngineError::OutputDir)?;
        let journal = Journal::open(&config.output_root, config.instance_id.as_deref())
            .map_err(|err| EngineError::Journal(err.to_string()))?;
        let log_path =
            config.output_root.join(jobs_log::log_file_name(config.instance_id.as_deref()));
        let report = queue::maintain(&journal, &log_path);
        let outputs =
            Outputs { log_path, root: config.output_root, temp_tag: journal.writer().to_owned() };
        let (command_tx, command_rx) = bounded(COMMAND_CAPACITY);
        let (event_tx, event_rx) = bounded(EVENT_CAPACITY);
        for message in report.messages().into_iter().take(EVENT_CAPACITY / 2) {
            let _ = event_tx.try_send(Event::Warning(message));
        }
        let capabilities = backend.capabilities();
        let backend_name = backend.name();
        let model_checker = backend.model_checker();
        let worker = worker::Worker::new(
            backend,
            command_rx,
            event_tx,
            waker,
            outputs.clone(),
            config.previews,
        );
        let thread = std::thread::Builder::new()
            .name("imagelab-engine".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            commands: command_tx,
            events: event_rx,
            thread: Some(thread),
            next_job: AtomicU64::new(1),
            capabilities,
            backend_name,
            outputs,
            journal,
            journal_ids: Mutex::new(HashMap::new()),
            model_checker,
        })
    }

    /// Checks the models of `plan` with this engine's backend, before any work (see
    /// [`check_plan_models`]).
    ///
    /// # Errors
    /// A model whose files cannot be loaded, naming the file.
    pub fn check_models(&self, plan: &Plan) -> Result<(), RequestError> {
        check_plan_models(plan, &self.model_checker)
    }

    /// [`prepare_plan`] with this engine's capabilities, then [`Engine::check_models`]: all
    /// the checks a front end runs before it submits.
    ///
    /// # Errors
    /// The first problem, naming the field or file.
    pub fn prepare(
        &self,
        request: &Request,
        profiles: &Profiles,
        catalog: &Catalog,
    ) -> Result<Plan, RequestError> {
        let plan = prepare_plan(request, profiles, catalog, &self.capabilities)?;
        self.check_models(&plan)?;
        Ok(plan)
    }

    /// What the backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// `candle` or `mock`.
    pub fn backend_name(&self) -> &'static str {
        self.backend_name
    }

    /// Where images and the jobs log go.
    pub fn outputs(&self) -> &Outputs {
        &self.outputs
    }

    fn send(&self, command: Command) -> Result<(), EngineError> {
        self.control().send(command)
    }

    /// Writes a plan to the persistent queue and queues it; returns its job number at once.
    /// A sweep gets a folder of its own, even when another started in the same second.
    ///
    /// # Errors
    /// The persistent queue cannot be written (nothing queued), the command queue is full or
    /// the engine stopped.
    pub fn submit(&self, plan: Plan) -> Result<JobId, EngineError> {
        let (job, handle, plan) = self.journal_new(plan)?;
        let rank = handle.created_ms().unwrap_or_default();
        self.send_job(job, handle, |journal| Command::Submit { job, plan, journal, rank })?;
        Ok(job)
    }

    /// Claims a fresh sweep folder and writes the job file: the job is then durable.
    fn journal_new(&self, mut plan: Plan) -> Result<(JobId, JobHandle, Box<Plan>), EngineError> {
        let journal_error = |err: std::io::Error| EngineError::Journal(err.to_string());
        let claimed = claim_run_dir(&self.outputs.root, &mut plan).map_err(journal_error)?;
        let id = Journal::new_job_id(chrono::Local::now());
        let cwd = std::env::current_dir().ok();
        let handle = match self.journal.create_job(&id, self.backend_name, cwd, &plan) {
            Ok(handle) => handle,
            Err(err) => {
                if let Some(dir) = claimed {
                    let _ = fs_err::remove_dir(dir);
                }
                return Err(journal_error(err));
            }
        };
        let job = self.next_job.fetch_add(1, Ordering::Relaxed);
        self.journal_ids.lock().unwrap_or_else(PoisonError::into_inner).insert(job, id);
        Ok((job, handle, Box::new(plan)))
    }

    /// Sends a command carrying a journaled job; if it cannot be sent, the job is ended in the
    /// persistent queue (it was never queued).
    fn send_job(
        &self,
        job: JobId,
        handle: JobHandle,
        command: impl FnOnce(Box<JobHandle>) -> Command,
    ) -> Result<(), EngineError> {
        match self.commands.try_send(command(Box::new(handle))) {
            Ok(()) => Ok(()),
            Err(err) => {
                let (refused, why) = match err {
                    TrySendError::Full(command) => (command, EngineError::QueueFull),
                    TrySendError::Disconnected(command) => (command, EngineError::Stopped),
                };
                if let Command::Submit { mut journal, .. } | Command::Replace { mut journal, .. } =
                    refused
                {
                    let _ = journal.ended(JobEnd::Discarded, Some(&why.to_string()));
                }
                self.journal_ids.lock().unwrap_or_else(PoisonError::into_inner).remove(&job);
                Err(why)
            }
        }
    }

    /// The persistent-queue id of job `job` of this engine.
    pub fn journal_id(&self, job: JobId) -> Option<String> {
        self.journal_ids.lock().unwrap_or_else(PoisonError::into_inner).get(&job).cloned()
    }

    /// The unfinished jobs of the output folder's persistent queue, in queue order; `live`
    /// ones are held by a running process (this one included).
    ///
    /// # Errors
    /// The journal cannot be listed.
    pub fn unfinished_jobs(&self) -> Result<Vec<UnfinishedJob>, EngineError> {
        queue::unfinished(&self.outputs.root).map_err(|err| EngineError::Journal(err.to_string()))
    }

    /// Takes job `id` back from the persistent queue and queues what is left of it: the same
    /// folders, the same seeds, only the images not on disk. `Ok(None)` when nothing is left
    /// (the job is then marked finished).
    ///
    /// # Errors
    /// Another live process holds the job; the journal cannot be read; the command queue is
    /// full.
    pub fn resume(&self, id: &str, options: ResumeOptions) -> Result<Option<Resumed>, EngineError> {
        let journal_error = |err: std::io::Error| EngineError::Journal(err.to_string());
        let claimed = match options.shard {
            Some(shard) => self.journal.claim_shard(id, shard),
            None => self.journal.claim(id),
        };
        let mut handle =
            claimed.map_err(journal_error)?.ok_or_else(|| EngineError::JobBusy(id.to_owned()))?;
        let mut report = MaintenanceReport::default();
        let state = queue::reconcile_job(
            &self.outputs.root,
            &mut handle,
            &self.outputs.log_path,
            &mut report,
        )
        .map_err(journal_error)?;
        if state.end.is_some() {
            if !(options.retry_failed && state.reopens_for_retry()) {
                return Ok(None);
            }
            // Reopened: until it ends again, start-up maintenance must look at it (an image
            // saved by a crashed retry gets its jobs-log line).
            crate::storage::journal::unsettle(&self.outputs.root, id).map_err(journal_error)?;
        }
        let remaining = state.remaining_plan(options.retry_failed).and_then(|mut plan| {
            if let Some(shard) = options.shard {
                plan.items.retain(|item| shard.has_item(item.index));
            }
            (!plan.items.is_empty()).then_some(plan)
        });
        let Some(mut plan) = remaining else {
            if options.shard.is_none() {
                handle.ended(JobEnd::Finished, Some("nothing left")).map_err(journal_error)?;
            }
            return Ok(None);
        };
        if let Some(device) = options.device {
            plan.request.device = device;
        }
        let here = std::env::current_dir().ok();
        if state.file.cwd.is_some() && state.file.cwd != here {
            queue::resolve_relative_paths(&mut plan, state.file.cwd.as_deref());
        }
        let job = self.next_job.fetch_add(1, Ordering::Relaxed);
        self.journal_ids.lock().unwrap_or_else(PoisonError::into_inner).insert(job, id.to_owned());
        let queued = Box::new(plan.clone());
        let rank = state.rank;
        self.send_job(job, handle, |journal| Command::Submit { job, plan: queued, journal, rank })?;
        Ok(Some(Resumed { job, id: id.to_owned(), plan, notes: report.messages() }))
    }

    /// Writes a plan to the persistent queue without running it (`generate --queue-only`):
    /// `imagelab resume` — or several, one per shard — runs it later. Returns the job's id and
    /// the plan as written (its sweep folder claimed).
    ///
    /// # Errors
    /// The persistent queue cannot be written.
    pub fn queue_only(&self, plan: Plan) -> Result<(String, Plan), EngineError> {
        let (job, handle, plan) = self.journal_new(plan)?;
        self.journal_ids.lock().unwrap_or_else(PoisonError::into_inner).remove(&job);
        Ok((handle.id().to_owned(), *plan))
    }

    /// Marks job `id` of the persistent queue as not to be resumed.
    ///
    /// # Errors
    /// Another live process holds the job; the journal cannot be written.
    pub fn discard(&self, id: &str, reason: &str) -> Result<(), EngineError> {
        let journal_error = |err: std::io::Error| EngineError::Journal(err.to_string());
        let mut handle = self
            .journal
            .claim(id)
            .map_err(journal_error)?
            .ok_or_else(|| EngineError::JobBusy(id.to_owned()))?;
        handle.ended(JobEnd::Discarded, Some(reason)).map_err(journal_error)
    }

    /// Holds (`true`) or releases the queue: the running job goes on, no waiting job starts.
    ///
    /// # Errors
    /// The command queue is full or the engine stopped.
    pub fn pause(&self, paused: bool) -> Result<(), EngineError> {
        self.send(Command::Pause(paused))
    }

    /// Moves waiting job `job` to `position` among the waiting ones (0 = next).
    ///
    /// # Errors
    /// The command queue is full or the engine stopped.
    pub fn move_job(&self, job: JobId, position: usize) -> Result<(), EngineError> {
        self.send(Command::Move { job, position })
    }

    /// Replaces waiting job `job` by `plan` (an edited copy, a new job in the persistent
    /// queue), in its place; returns the copy's number.
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    pub fn replace(&self, job: JobId, plan: Plan) -> Result<JobId, EngineError> {
        let (new_job, handle, plan) = self.journal_new(plan)?;
        self.send_job(new_job, handle, |journal| Command::Replace { job, new_job, plan, journal })?;
        Ok(new_job)
    }

    /// Queues a load of `model` (FIFO with the plans); returns its job number at once. The job
    /// ends with `JobFinished` (no items; an error when the load failed).
    ///
    /// # Errors
    /// The command queue is full or the engine stopped.
    pub fn preload(
        &self,
        model: ModelRef,
        device: DeviceChoice,
        dtype: Option<Precision>,
    ) -> Result<JobId, EngineError> {
        let job = self.next_job.fetch_add(1, Ordering::Relaxed);
        self.send(Command::Preload { job, model: Box::new(model), device, dtype })?;
        Ok(job)
    }

    /// Cancels a job (pending: dropped; running: stops within one step).
    ///
    /// # Errors
    /// The command queue is full or the engine stopped.
    pub fn cancel(&self, job: JobId) -> Result<(), EngineError> {
        self.send(Command::Cancel(job))
    }

    /// Skips the running item.
    ///
    /// # Errors
    /// The command queue is full or the engine stopped.
    pub fn skip_current(&self) -> Result<(), EngineError> {
        self.send(Command::SkipCurrent)
    }

    /// Drops every pending job.
    ///
    /// # Errors
    /// The command queue is full or the engine stopped.
    pub fn clear_queue(&self) -> Result<(), EngineError> {
        self.send(Command::ClearQueue)
    }

    /// A clean stop (see [`Command::Stop`]): nothing new starts, the running image finishes
    /// or is cancelled within one step, and what was not done is reported as interrupted.
    ///
    /// # Errors
    /// The command queue is full or the engine stopped.
    pub fn stop(&self, mode: StopMode, reason: &str) -> Result<(), EngineError> {
        self.control().stop(mode, reason)
    }

    /// A handle that sends commands from any thread (a signal callback, a timer).
    pub fn control(&self) -> EngineControl {
        EngineControl { commands: self.commands.clone() }
    }

    /// The event stream (bounded). The window drains it with `try_recv`, the CLI with `recv`.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// Cancels whatever runs, stops the thread and waits for it, draining events meanwhile so
    /// the worker is never stuck on a full channel. Returns the events drained.
    pub fn shutdown(mut self) -> Vec<Event> {
        self.halt()
    }

    fn halt(&mut self) -> Vec<Event> {
        let mut drained = Vec::new();
        let Some(thread) = self.thread.take() else { return drained };
        // A full command queue must not keep Shutdown out: keep trying while draining.
        let mut sent = false;
        while !thread.is_finished() {
            if !sent {
                sent = match self.commands.try_send(Command::Shutdown) {
                    Ok(()) | Err(TrySendError::Disconnected(_)) => true,
                    Err(TrySendError::Full(_)) => false,
                };
            }
            if let Ok(event) = self.events.recv_timeout(Duration::from_millis(5)) {
                drained.push(event);
            }
        }
        drained.extend(self.events.try_iter());
        if thread.join().is_err() {
            tracing::error!("the engine thread panicked");
        }
        drained
    }
}

/// A cloneable, thread-safe handle on an engine's command queue, for callbacks that run on
/// other threads (signal handlers, timers). Commands sent after the engine ended are refused.
#[derive(Debug, Clone)]
pub struct EngineControl {
    commands: Sender<Command>,
}

impl EngineControl {
    fn send(&self, command: Command) -> Result<(), EngineError> {
        self.commands.try_send(command).map_err(|err| match err {
            TrySendError::Full(_) => EngineError::QueueFull,
            TrySendError::Disconnected(_) => EngineError::Stopped,
        })
    }

    /// See [`Engine::stop`].
    ///
    /// # Errors
    /// The command queue is full or the engine stopped.
    pub fn stop(&self, mode: StopMode, reason: &str) -> Result<(), EngineError> {
        self.send(Command::Stop { mode, reason: reason.to_owned() })
    }

    /// See [`Engine::cancel`].
    ///
    /// # Errors
    /// The command queue is full or the engine stopped.
    pub fn cancel(&self, job: JobId) -> Result<(), EngineError> {
        self.send(Command::Cancel(job))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Validates a request for a backend and expands it: fields, names, input files and the
/// backend's capabilities, all before any work.
///
/// # Errors
/// The first problem, naming the field.
pub fn prepare_plan(
    request: &Request,
    profiles: &Profiles,
    catalog: &Catalog,
    capabilities: &Capabilities,
) -> Result<Plan, RequestError> {
    let plan = build_plan(
        request,
        profiles,
        catalog,
        chrono::Local::now(),
        crate::request::plan::random_seed,
    )?;
    if let Some(path) = &request.init_image {
        check_init_image(path)?;
    }
    if request.sweep != crate::request::Sweep::AllModelsAllProfiles {
        for item in plan.items.iter().take(1) {
            check_local_checkpoint(&item.model)?;
        }
    }
    if let Some(vae) = &plan.vae {
        check_local_vae(vae)?;
    }
    let missing = capabilities.missing_for(&plan);
    if !missing.is_empty() {
        return Err(RequestError::new(
            "backend",
            format!("this backend does not support: {}", missing.join(", ")),
        ));
    }
    Ok(plan)
}

/// A chosen single file is read (header only) and refused now, naming what it looks like,
/// when it cannot be loaded; in an all-models sweep such a file fails as its own item.
fn check_local_checkpoint(model: &ModelRef) -> Result<(), RequestError> {
    let ModelSource::LocalFile(path) = &model.source else { return Ok(()) };
    match crate::models::layout::detect_layout(path) {
        Ok(Layout::SingleFile(file, _)) => crate::models::safetensors_header::read_header(&file)
            .and_then(|header| crate::models::checkpoint::inspect_checkpoint(&header))
            .map(drop)
            .map_err(|err| RequestError::new("model", err.to_string())),
        Ok(_) => Ok(()),
        Err(err) => Err(RequestError::new("model", err.to_string())),
    }
}

/// A local `--vae` file must be a VAE (a folder is checked when it loads).
fn check_local_vae(vae: &ModelRef) -> Result<(), RequestError> {
    let ModelSource::LocalFile(path) = &vae.source else { return Ok(()) };
    match crate::models::layout::classify_safetensors(path) {
        Ok(crate::models::layout::SafetensorsKind::Vae(_)) => Ok(()),
        Ok(_) => Err(RequestError::new(
            "vae",
            format!("not a VAE (no encoder.down/decoder.up tensors alone): {}", path.display()),
        )),
        Err(err) => Err(RequestError::new("vae", err.to_string())),
    }
}

/// Gives a sweep a folder of its own: `<time>_<sweep>`, or `-2`, `-3` … when another run took
/// that name (two sweeps started in the same second). Returns the folder created. The jobs of
/// an overnight runner share the one folder the runner chose for its run: not claimed again.
fn claim_run_dir(root: &Path, plan: &mut Plan) -> std::io::Result<Option<PathBuf>> {
    if plan.runner.is_some() {
        return Ok(None);
    }
    let Some(run_dir) = plan.run_dir.clone() else { return Ok(None) };
    let name = run_dir.to_string_lossy().into_owned();
    let claimed = naming::create_new_dir(root, &name)?;
    if claimed != name {
        plan.set_run_dir(PathBuf::from(&claimed));
    }
    Ok(Some(root.join(claimed)))
}

/// Checks every model of `plan` with `checker` (the backend's planning-time file checks),
/// each once. An "all models" sweep is not checked: it keeps going past a model that fails.
///
/// # Errors
/// The first model that cannot load, as a `model` error naming the file.
pub fn check_plan_models(plan: &Plan, checker: &ModelChecker) -> Result<(), RequestError> {
    if plan.request.sweep == crate::request::Sweep::AllModelsAllProfiles {
        return Ok(());
    }
    let mut seen = Vec::new();
    for item in &plan.items {
        // A catalog LoRA entry loads as its base with the LoRA: both are checked.
        let base = item.base_and_lora.as_ref().map(|(base, _)| base);
        for model in std::iter::once(&item.model).chain(base) {
            if seen.contains(&model) {
                continue;
            }
            seen.push(model);
            checker(model).map_err(|message| RequestError::new("model", message))?;
        }
    }
    Ok(())
}

/// The init image, decoded in full (a valid header over broken pixels is caught here, not
/// half-way through a job).
fn check_init_image(path: &Path) -> Result<(), RequestError> {
    let (width, height) = inputs::load_image(path)
        .map(|image| image.dimensions())
        .map_err(|message| RequestError::new("init_image", message))?;
    if width < 8 || height < 8 {
        return Err(RequestError::new(
            "init_image",
            format!("{width}x{height} is too small (at least 8x8): {}", path.display()),
        ));
    }
    Ok(())
}

/// A waker that does nothing (the CLI blocks on `recv` instead).
pub fn no_waker() -> Waker {
    Arc::new(|| {})
}
