//! What a headless run prints: progress on stderr (a bar on a terminal, plain lines
//! otherwise), and on stdout the files written (or one JSON object with `--json`).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::app::{StopRequest, StopSignal};
use crate::engine::{Event, JobSummary, SavedImage, StopMode, Timings};
use crate::storage::jobs_log::ItemStatus;

/// Progress on stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
    total_images: usize,
    saved: usize,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn new(total_images: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total_images as u64),
                ProgressDrawTarget::stderr(),
            );
            let style = ProgressStyle::with_template("{bar:30} {pos}/{len} images  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Self { bar, total_images, saved: 0 }
    }

    /// Updates the display for one engine event.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::ItemStarted { item, items, model, profile, .. } => {
                self.line(&format!("[{}/{}] {model} / {profile}", item + 1, items));
            }
            Event::ModelLoading { model, message, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("{model}: {message}"));
                }
            }
            Event::Progress { step, steps, it_per_s, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("step {step}/{steps}  {it_per_s:.2} it/s"));
                }
            }
            Event::ImageSaved { image, .. } => {
                self.saved += 1;
                if let Some(bar) = &self.bar {
                    bar.set_position(self.saved as u64);
                } else {
                    eprintln!(
                        "  saved {} ({}/{})",
                        image.path.display(),
                        self.saved,
                        self.total_images
                    );
                }
            }
            Event::ItemFailed { error, .. } => self.line(&format!("  failed: {error}")),
            Event::ItemCancelled { record, .. } if record.status == ItemStatus::Interrupted => {
                self.line(&format!("  interrupted ({} image(s) saved)", record.paths.len()));
            }
            Event::ItemCancelled { .. } => self.line("  cancelled"),
            Event::Warning(message) => self.line(&format!("warning: {message}")),
            _ => {}
        }
    }

    /// Says what a stop signal does now.
    pub fn on_stop(&self, request: StopRequest) {
        let name = request.signal.name();
        match request.mode {
            StopMode::AfterImage => self.line(&format!(
                "{name}: stopping after the running image; send it again to cancel that image"
            )),
            StopMode::Now => self.line(&format!("{name}: cancelling the running image")),
        }
    }

    /// A warning line.
    pub fn warn(&self, text: &str) {
        self.line(&format!("warning: {text}"));
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Saved images and their timings, in order.
#[derive(Debug, Default)]
pub struct Collected {
    /// Every image saved.
    pub images: Vec<SavedImage>,
}

impl Collected {
    /// Keeps what the summary needs.
    pub fn on_event(&mut self, event: &Event) {
        if let Event::ImageSaved { image, .. } = event {
            self.images.push(image.clone());
        }
    }
}

#[derive(Serialize)]
struct JsonFile<'a> {
    path: String,
    seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    latent: Option<String>,
    timings: &'a Timings,
}

#[derive(Serialize)]
struct JsonSummary<'a> {
    files: Vec<JsonFile<'a>>,
    run_dir: Option<String>,
    errors: &'a [String],
    timings: Timings,
    items: usize,
    done: usize,
    failed: usize,
    cancelled: usize,
    interrupted: usize,
    stopped_by: Option<&'static str>,
}

/// Totals over every image: load, encode and decode summed, every step in order, and the
/// job's wall time.
fn total_timings(images: &[SavedImage], job_s: f64) -> Timings {
    let mut total = Timings { total_s: job_s, ..Timings::default() };
    for image in images {
        total.load_s += image.timings.load_s;
        total.encode_s += image.timings.encode_s;
        total.decode_s += image.timings.decode_s;
        total.steps_s.extend_from_slice(&image.timings.steps_s);
    }
    total
}

/// Prints the summary on stdout: every file, one per line (or one JSON object). `stopped_by`
/// is the signal that stopped the run, if one did.
pub fn print_summary(
    summary: &JobSummary,
    collected: &Collected,
    json: bool,
    stopped_by: Option<StopSignal>,
) {
    if json {
        let files = collected
            .images
            .iter()
            .map(|image| JsonFile {
                path: image.path.display().to_string(),
                seed: image.seed,
                latent: image.latent.as_ref().map(|p| p.display().to_string()),
                timings: &image.timings,
            })
            .collect();
        let object = JsonSummary {
            files,
            run_dir: summary.run_dir.as_ref().map(|p| p.display().to_string()),
            errors: &summary.errors,
            timings: total_timings(&collected.images, summary.duration_s),
            items: summary.items,
            done: summary.done,
            failed: summary.failed,
            cancelled: summary.cancelled,
            interrupted: summary.interrupted,
            stopped_by: stopped_by.map(StopSignal::name),
        };
        match serde_json::to_string(&object) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("error: cannot write the JSON summary: {err}"),
        }
        return;
    }
    for image in &collected.images {
        println!("{}", image.path.display());
        if let Some(latent) = &image.latent {
            println!("{}", latent.display());
        }
    }
    for error in &summary.errors {
        eprintln!("error: {error}");
    }
    if let Some(dir) = &summary.run_dir {
        eprintln!("run folder: {}", dir.display());
    }
    if let Some(signal) = stopped_by {
        eprintln!("stopped by {}: {} item(s) interrupted", signal.name(), summary.interrupted);
    }
    eprintln!(
        "{} image(s) written; {} item(s) done, {} failed, {} cancelled in {:.1} s",
        collected.images.len(),
        summary.done,
        summary.failed,
        summary.cancelled,
        summary.duration_s
    );
}
