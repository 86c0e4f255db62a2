//! What a client sees of a job as it runs: the engine's events in the one JSON shape that the
//! Server-Sent Events stream (`GET /jobs/{id}/events`) and stdio mode both write.
//!
//! Paths are relative to the output folder (and served under `/images/`), previews are small
//! PNGs in base64, and every event names its job.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::Serialize;

use crate::engine::{Event, JobId, JobSummary, Preview, QueueStats, Timings, relative_path};
use crate::storage::jobs_log::JobRecord;

/// How a job ended, or where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in the queue.
    Queued,
    /// Running now.
    Running,
    /// Finished with every item done.
    Done,
    /// Finished with at least one failed item (or a failed model load).
    Failed,
    /// Cancelled, skipped or dropped from the queue before it finished.
    Cancelled,
    /// Stopped by a clean stop (SIGTERM, server-stop, the window closing) before it finished:
    /// what was not done is in the jobs log as `interrupted`, for `imagelab resume`.
    Interrupted,
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled | Self::Interrupted)
    }

    /// How a job with this summary ended. A preload has no items: it failed when it reports
    /// an error that is not a drop.
    pub fn of_summary(summary: &JobSummary) -> Self {
        if summary.failed > 0 {
            Self::Failed
        } else if summary.interrupted > 0 || dropped_by(summary, "not started:") {
            Self::Interrupted
        } else if summary.cancelled > 0
            || dropped_by(summary, "cancelled before it started")
            || dropped_by(summary, "removed from the queue")
        {
            Self::Cancelled
        } else if summary.errors.is_empty() {
            Self::Done
        } else {
            Self::Failed
        }
    }
}

/// Whether the engine dropped this job before it ran for `why` (its reason in `errors`; the
/// only way a preload, which has no items to count, says it was dropped).
fn dropped_by(summary: &JobSummary, why: &str) -> bool {
    summary.done == 0 && summary.errors.iter().any(|error| error.starts_with(why))
}

/// One image on disk, as clients address it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ImageRef {
    /// Path relative to the output folder, `/`-separated.
    pub path: String,
    /// Where the server serves it (`/images/<path>`).
    pub url: String,
    /// Its seed.
    pub seed: u64,
}

impl ImageRef {
    /// The reference to `path` (a full path below `root`).
    pub fn new(root: &Path, path: &Path, seed: u64) -> Self {
        let relative = relative_path(root, path);
        Self { url: format!("/images/{}", url_path(&relative)), path: relative, seed }
    }
}

/// `relative` with every byte outside the URL path's safe set percent-encoded.
fn url_path(relative: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(relative.len());
    for byte in relative.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A preview encoded once for every client that asks (SSE streams, `/sdapi/v1/progress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PreviewImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Always `png`.
    pub format: &'static str,
    /// The PNG, base64 (no `data:` prefix).
    pub data: String,
}

impl PreviewImage {
    /// Encodes an engine preview as a PNG (fast compression: it is thrown away after one step).
    pub fn encode(preview: &Preview) -> Option<Self> {
        use image::ImageEncoder as _;
        let mut png = Vec::new();
        let encoder = image::codecs::png::PngEncoder::new_with_quality(
            &mut png,
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::Sub,
        );
        encoder
            .write_image(
                &preview.rgb,
                preview.width,
                preview.height,
                image::ExtendedColorType::Rgb8,
            )
            .ok()?;
        Some(Self {
            width: preview.width,
            height: preview.height,
            format: "png",
            data: base64::engine::general_purpose::STANDARD.encode(png),
        })
    }
}

/// What a client sees of a job, in order. `event` names the kind.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ApiEvent {
    /// The job entered the queue; `position` 0 = next to run.
    Queued {
        /// The job.
        job: JobId,
        /// Jobs ahead of it.
        position: usize,
    },
    /// A model is loading or downloading (lossy: only the newest matters).
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
    /// A denoising step finished (lossy: a slow client may miss some).
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
    /// The newest preview of the image forming (lossy).
    Preview {
        /// The job.
        job: JobId,
        /// The item.
        item: usize,
        /// The picture.
        #[serde(serialize_with = "shared_preview")]
        #[schemars(with = "PreviewImage")]
        preview: Arc<PreviewImage>,
    },
    /// One image is on disk.
    ImageSaved {
        /// The job.
        job: JobId,
        /// The item.
        item: usize,
        /// Where it is.
        image: ImageRef,
        /// Where the time went.
        timings: Timings,
    },
    /// An item finished with every image saved; `record` is its jobs-log line.
    ItemSaved {
        /// The job.
        job: JobId,
        /// The item.
        item: usize,
        /// The jobs-log line.
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
        /// The jobs-log line.
        record: Box<JobRecord>,
    },
    /// An item was cancelled or skipped; images saved before that are kept.
    ItemCancelled {
        /// The job.
        job: JobId,
        /// The item.
        item: usize,
        /// The jobs-log line.
        record: Box<JobRecord>,
    },
    /// The job ended; the last event of its stream.
    Finished {
        /// The job.
        job: JobId,
        /// How it ended.
        state: JobState,
        /// Counts, paths (relative to the output folder) and errors.
        summary: JobSummary,
    },
    /// The queue changed (not tied to a job).
    Queue {
        /// The counts.
        stats: QueueStats,
    },
    /// Something a user should see that belongs to no item.
    Warning {
        /// The message.
        message: String,
    },
}

impl ApiEvent {
    /// The client's view of an engine event; paths become relative to `root`.
    pub fn from_engine(event: &Event, root: &Path) -> Self {
        match event {
            Event::Queued { job, position } => Self::Queued { job: *job, position: *position },
            Event::QueueChanged(stats) => Self::Queue { stats: *stats },
            Event::ModelLoading { job, model, message, fraction } => Self::ModelLoading {
                job: *job,
                model: model.clone(),
                message: message.clone(),
                fraction: *fraction,
            },
            Event::ItemStarted { job, item, items, model, profile, images } => Self::ItemStarted {
                job: *job,
                item: *item,
                items: *items,
                model: model.clone(),
                profile: profile.clone(),
                images: *images,
            },
            Event::Progress { job, item, image, step, steps, it_per_s } => Self::Progress {
                job: *job,
                item: *item,
                image: *image,
                step: *step,
                steps: *steps,
                it_per_s: *it_per_s,
            },
            Event::Preview { job, item, preview } => match PreviewImage::encode(preview) {
                Some(image) => Self::Preview { job: *job, item: *item, preview: Arc::new(image) },
                None => Self::Warning { message: format!("job {job}: preview not encoded") },
            },
            Event::ImageSaved { job, item, image } => Self::ImageSaved {
                job: *job,
                item: *item,
                image: ImageRef::new(root, &image.path, image.seed),
                timings: image.timings.clone(),
            },
            Event::ItemSaved { job, item, record } => {
                Self::ItemSaved { job: *job, item: *item, record: record.clone() }
            }
            Event::ItemFailed { job, item, error, record } => Self::ItemFailed {
                job: *job,
                item: *item,
                error: error.clone(),
                record: record.clone(),
            },
            Event::ItemCancelled { job, item, record } => {
                Self::ItemCancelled { job: *job, item: *item, record: record.clone() }
            }
            Event::JobFinished { job, summary } => Self::Finished {
                job: *job,
                state: JobState::of_summary(summary),
                summary: relative_summary(summary, root),
            },
            Event::Warning(message) => Self::Warning { message: message.clone() },
        }
    }

    /// The job it belongs to, if any.
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
            | Self::Finished { job, .. } => Some(*job),
            Self::Queue { .. } | Self::Warning { .. } => None,
        }
    }

    /// Whether a job's stream must carry it (kept in the job's history); model loading,
    /// progress and previews are lossy.
    pub fn is_kept(&self) -> bool {
        !matches!(self, Self::ModelLoading { .. } | Self::Progress { .. } | Self::Preview { .. })
            && self.job().is_some()
    }

    /// The SSE event name (`queued`, `progress`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued { .. } => "queued",
            Self::ModelLoading { .. } => "model_loading",
            Self::ItemStarted { .. } => "item_started",
            Self::Progress { .. } => "progress",
            Self::Preview { .. } => "preview",
            Self::ImageSaved { .. } => "image_saved",
            Self::ItemSaved { .. } => "item_saved",
            Self::ItemFailed { .. } => "item_failed",
            Self::ItemCancelled { .. } => "item_cancelled",
            Self::Finished { .. } => "finished",
            Self::Queue { .. } => "queue",
            Self::Warning { .. } => "warning",
        }
    }
}

/// Serialises a shared preview as the preview itself.
fn shared_preview<S: serde::Serializer>(
    preview: &Arc<PreviewImage>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    preview.as_ref().serialize(serializer)
}

/// A summary with its paths relative to the output folder.
pub fn relative_summary(summary: &JobSummary, root: &Path) -> JobSummary {
    JobSummary {
        paths: summary
            .paths
            .iter()
            .map(|path| std::path::PathBuf::from(relative_path(root, path)))
            .collect(),
        run_dir: summary
            .run_dir
            .as_ref()
            .map(|dir| std::path::PathBuf::from(relative_path(root, dir))),
        ..summary.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_escape_what_a_path_may_hold() {
        let image = ImageRef::new(Path::new("/out"), Path::new("/out/run 1/a#b.png"), 7);
        assert_eq!(image.path, "run 1/a#b.png");
        assert_eq!(image.url, "/images/run%201/a%23b.png");
    }

    #[test]
    fn states_follow_the_summary() {
        let done = JobSummary { items: 2, done: 2, ..JobSummary::default() };
        assert_eq!(JobState::of_summary(&done), JobState::Done);
        let failed = JobSummary { items: 2, done: 1, failed: 1, ..JobSummary::default() };
        assert_eq!(JobState::of_summary(&failed), JobState::Failed);
        let cancelled = JobSummary { items: 2, done: 1, cancelled: 1, ..JobSummary::default() };
        assert_eq!(JobState::of_summary(&cancelled), JobState::Cancelled);
        let dropped = JobSummary {
            items: 1,
            cancelled: 1,
            errors: vec!["removed from the queue".into()],
            ..JobSummary::default()
        };
        assert_eq!(JobState::of_summary(&dropped), JobState::Cancelled);
        let preload_failed =
            JobSummary { errors: vec!["loading X: no such file".into()], ..JobSummary::default() };
        assert_eq!(JobState::of_summary(&preload_failed), JobState::Failed);
        let preloaded = JobSummary::default();
        assert_eq!(JobState::of_summary(&preloaded), JobState::Done);
        let stopped = JobSummary {
            items: 1,
            interrupted: 1,
            errors: vec!["not started: stopped (SIGTERM)".into()],
            ..JobSummary::default()
        };
        assert_eq!(JobState::of_summary(&stopped), JobState::Interrupted);
        let preload_stopped = JobSummary {
            errors: vec!["not started: the engine shut down".into()],
            ..JobSummary::default()
        };
        assert_eq!(JobState::of_summary(&preload_stopped), JobState::Interrupted);
    }
}
