//! The engine's protocol: `Command`s from a front end, `Event`s back. Every event names its
//! job (and item, where there is one).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::backend::{Preview, Timings};
use crate::models::catalog::ModelRef;
use crate::request::Plan;
use crate::storage::jobs_log::JobRecord;
use crate::storage::journal::JobHandle;
use crate::vocab::{DeviceChoice, Precision};

/// A job's number, unique within one engine.
pub type JobId = u64;

/// What a front end asks of the engine.
#[derive(Debug)]
pub enum Command {
    /// Queue a plan as job `job` (FIFO).
    Submit {
        /// The job's number (from `Engine::submit`).
        job: JobId,
        /// The validated plan.
        plan: Box<Plan>,
        /// The job in the persistent queue, already written (held until the job ends).
        journal: Box<JobHandle>,
        /// Its place in the persistent queue's order.
        rank: f64,
    },
    /// Hold the queue (`true`): the running job goes on, no waiting job starts until
    /// `Pause(false)`.
    Pause(bool),
    /// Move a waiting job to `position` among the waiting ones (0 = next); the new order is
    /// kept in the persistent queue.
    Move {
        /// The job.
        job: JobId,
        /// Its new place.
        position: usize,
    },
    /// Replace a waiting job by an edited copy, in its place; the original ends as cancelled
    /// ("replaced"), in the persistent queue too. If it already started, the copy is queued
    /// at the back.
    Replace {
        /// The job edited.
        job: JobId,
        /// The copy's number.
        new_job: JobId,
        /// The copy's plan.
        plan: Box<Plan>,
        /// The copy in the persistent queue.
        journal: Box<JobHandle>,
    },
    /// Queue a model load as job `job` (FIFO with the plans): the model is ready when the jobs
    /// behind it start. Ends with `JobFinished` (no items; `errors` says why a load failed).
    Preload {
        /// The job's number (from `Engine::preload`).
        job: JobId,
        /// The model to load.
        model: Box<ModelRef>,
        /// The device to load it on.
        device: DeviceChoice,
        /// Its precision (`None`: the device's default).
        dtype: Option<Precision>,
    },
    /// Cancel a job: a pending one is dropped, a running one stops within one denoising step.
    Cancel(JobId),
    /// Stop the current item (logged as cancelled) and go on with the next.
    SkipCurrent,
    /// Drop every pending job (the running one goes on).
    ClearQueue,
    /// Stop taking new work (a clean stop, e.g. on SIGTERM): pending jobs end unstarted, and
    /// the running image finishes ([`StopMode::AfterImage`]) or is cancelled within one
    /// denoising step ([`StopMode::Now`]). What was not done is reported as interrupted (the
    /// journal keeps it for `imagelab resume`); later submissions end at once, unstarted.
    Stop {
        /// How the running image is treated; a second, stronger stop upgrades the first.
        mode: StopMode,
        /// Why, for messages and the jobs log (`SIGTERM`, `window closed`…).
        reason: String,
    },
    /// Cancel everything and end the thread.
    Shutdown,
}

/// How a [`Command::Stop`] treats the image being generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// Let the running image finish and be saved (with its item's jobs-log line), then stop.
    AfterImage,
    /// Cancel the running image within one denoising step; nothing half-written is kept.
    Now,
}

/// Counts shown by the queue panel.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct QueueStats {
    /// Jobs waiting.
    pub queued: usize,
    /// Jobs running (0 or 1).
    pub running: usize,
    /// Jobs finished with every item done.
    pub done: usize,
    /// Jobs finished with at least one failed item.
    pub failed: usize,
    /// Jobs cancelled or dropped.
    pub cancelled: usize,
    /// The queue is held: no waiting job starts.
    #[serde(default)]
    pub paused: bool,
}

/// How a job ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobSummary {
    /// Items in the plan.
    pub items: usize,
    /// Items with every image saved.
    pub done: usize,
    /// Items that failed.
    pub failed: usize,
    /// Items cancelled or skipped (started ones) plus those never started after a cancel.
    pub cancelled: usize,
    /// Items stopped before they finished by a clean stop or a shutdown (started ones, and
    /// those never started because of it): the journal keeps them for `imagelab resume`.
    #[serde(default)]
    pub interrupted: usize,
    /// Every image written, full paths.
    pub paths: Vec<PathBuf>,
    /// Every error, as `model / profile: message`.
    pub errors: Vec<String>,
    /// The sweep folder, full path, if any.
    pub run_dir: Option<PathBuf>,
    /// Wall time of the job in seconds.
    pub duration_s: f64,
    /// The job's id in the persistent queue (`imagelab resume` takes it up).
    #[serde(default)]
    pub job_id: Option<String>,
}

/// One saved image, as the gallery and `--json` want it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedImage {
    /// Full path of the PNG.
    pub path: PathBuf,
    /// Its seed.
    pub seed: u64,
    /// Full path of the `.latent` file, when asked for.
    pub latent: Option<PathBuf>,
    /// Where the time went.
    pub timings: Timings,
}

/// What the engine reports. Progress and previews are lossy (dropped when the front end lags);
/// every other event is always delivered.
#[derive(Debug, Clone)]
pub enum Event {
    /// A job entered the queue; `position` 0 = next to run.
    Queued {
        /// The job.
        job: JobId,
        /// Jobs ahead of it.
        position: usize,
    },
    /// The queue changed.
    QueueChanged(QueueStats),
    /// A model is loading or downloading.
    ModelLoading {
        /// The job.
        job: JobId,
        /// Model display name.
        model: String,
        /// What is happening.
        message: String,
        /// Fraction done, when known.
        fraction: Option<f32>,
    },
    /// An item (model × profile) began.
    ItemStarted {
        /// The job.
        job: JobId,
        /// Item index in the plan.
        item: usize,
        /// Items in the plan.
        items: usize,
        /// Model display name.
        model: String,
        /// Profile name.
        profile: String,
        /// Images in this item.
        images: usize,
    },
    /// A denoising step finished.
    Progress {
        /// The job.
        job: JobId,
        /// The item.
        item: usize,
        /// Image within the item's batch.
        image: usize,
        /// Steps done, from 1.
        step: usize,
        /// Steps in all.
        steps: usize,
        /// Recent speed in iterations per second.
        it_per_s: f32,
    },
    /// The newest preview of the image forming (the window keeps only the newest).
    Preview {
        /// The job.
        job: JobId,
        /// The item.
        item: usize,
        /// The picture.
        preview: Preview,
    },
    /// One image is on disk.
    ImageSaved {
        /// The job.
        job: JobId,
        /// The item.
        item: usize,
        /// What was written.
        image: SavedImage,
    },
    /// An item finished with every image saved; `record` is its jobs-log line.
    ItemSaved {
        /// The job.
        job: JobId,
        /// The item.
        item: usize,
        /// The full record (paths + settings).
        record: Box<JobRecord>,
    },
    /// An item failed; the job goes on with the next item.
    ItemFailed {
        /// The job.
        job: JobId,
        /// The item.
        item: usize,
        /// What went wrong.
        error: String,
        /// Its jobs-log line.
        record: Box<JobRecord>,
    },
    /// An item was cancelled or skipped; images saved before that are kept.
    ItemCancelled {
        /// The job.
        job: JobId,
        /// The item.
        item: usize,
        /// Its jobs-log line.
        record: Box<JobRecord>,
    },
    /// A job ended (done, failed or cancelled).
    JobFinished {
        /// The job.
        job: JobId,
        /// What happened.
        summary: JobSummary,
    },
    /// Something the user should see that belongs to no item (log panel, stderr).
    Warning(String),
}

impl Event {
    /// The job an event belongs to, when it belongs to one.
    pub fn job(&self) -> Option<JobId> {
        match self {
            Self::Queued { job, .. }
            | Self::ModelLoading { job, .. }
            | Self::ItemStarted { job, .. }
            | Self::Progress { job, .. }
            | Self::Preview { job, .. }
            | Self::ImageSaved { job, .. }
            | Self::ItemSaved { job, .. }
            | Self::ItemFailed { job, .. }
            | Self::ItemCancelled { job, .. }
            | Self::JobFinished { job, .. } => Some(*job),
            Self::QueueChanged(_) | Self::Warning(_) => None,
        }
    }
}
