//! The engine: a named background thread that owns the backend, the loaded models and the
//! output folder, fed by [`Command`]s and answering with [`Event`]s over bounded channels.
//!
//! Front ends never block on it: they submit plans, poll events (the window within a time
//! budget each frame, the CLI by blocking on `recv`), and pass a waker that the engine calls
//! after each event.

pub mod backend;
pub mod candle_backend;
pub mod mock;
pub mod protocol;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

pub use backend::{
    Backend, BackendError, Capabilities, GenerateParams, Generated, LoadProgress, LoadedModel,
    ModelKey, Preview, StepUpdate, Timings,
};
pub use protocol::{Command, Event, JobId, JobSummary, QueueStats, SavedImage, StopMode};
pub use worker::{Outputs, Waker, relative_path};

use crate::models::catalog::{Catalog, ModelRef};
use crate::request::{Plan, Profiles, Request, RequestError, build_plan};
use crate::storage::{inputs, jobs_log};
use crate::vocab::{DeviceChoice, Precision};

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
    /// Checks the output folder and starts the `imagelab-engine` thread.
    ///
    /// # Errors
    /// An unusable output folder (named), or a thread that cannot start.
    pub fn spawn(
        backend: Box<dyn Backend>,
        config: EngineConfig,
        waker: Waker,
    ) -> Result<Self, EngineError> {
        inputs::check_output_dir(&config.output_root).map_err(EngineError::OutputDir)?;
        let outputs = Outputs {
            log_path: config
                .output_root
                .join(jobs_log::log_file_name(config.instance_id.as_deref())),
            root: config.output_root,
        };
        let (command_tx, command_rx) = bounded(COMMAND_CAPACITY);
        let (event_tx, event_rx) = bounded(EVENT_CAPACITY);
        let capabilities = backend.capabilities();
        let backend_name = backend.name();
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
        })
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

    /// Queues a plan; returns its job number at once.
    ///
    /// # Errors
    /// The command queue is full or the engine stopped.
    pub fn submit(&self, plan: Plan) -> Result<JobId, EngineError> {
        let job = self.next_job.fetch_add(1, Ordering::Relaxed);
        self.send(Command::Submit { job, plan: Box::new(plan) })?;
        Ok(job)
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
    let missing = capabilities.missing_for(&plan);
    if !missing.is_empty() {
        return Err(RequestError::new(
            "backend",
            format!("this backend does not support: {}", missing.join(", ")),
        ));
    }
    Ok(plan)
}

fn check_init_image(path: &Path) -> Result<(), RequestError> {
    let (width, height) =
        inputs::check_image(path).map_err(|message| RequestError::new("init_image", message))?;
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
