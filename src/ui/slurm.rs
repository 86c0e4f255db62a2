//! The window's Slurm side (shown when `sbatch` is found): "Submit to Slurm" under the sweep
//! launcher — partition, generic resources and time limit, checked before anything is
//! written — and a status view of the runs submitted from here: each task's Slurm state and
//! its images and items, with Refresh and Cancel.
//!
//! Everything that runs a Slurm command (sbatch, squeue, sacct, scancel) runs on the
//! `imagelab-slurm` thread ([`SlurmWorker`]), through the same `slurm` functions as `imagelab
//! slurm submit|status|cancel`; the UI thread only sends requests and draws the answers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::engine::UnfinishedJob;
use crate::request::Plan;
use crate::slurm::client::Client;
use crate::slurm::script::{DEFAULT_GRES, check_gres, check_time};
use crate::slurm::status::{RunStatus, status_of};
use crate::slurm::{self, HeldBySlurm, RunSetup, SbatchOptions, SlurmRun, Submission};

/// How often the status of a run with tasks still queued or running is asked again.
pub const STATUS_REFRESH: Duration = Duration::from_secs(5);
/// Requests waiting for the Slurm thread beyond this many are refused (said in the log).
const REQUESTS: usize = 16;

/// What the window needs to submit to Slurm.
#[derive(Debug, Clone)]
pub struct SlurmSetup {
    /// Where sbatch, squeue, sacct and scancel are.
    pub client: Client,
    /// The imagelab binary the tasks run (absolute; on the shared file system).
    pub imagelab: PathBuf,
    /// The model cache the tasks read (shared), exported to them with `HF_HUB_OFFLINE=1`.
    pub hub_cache: Option<PathBuf>,
}

/// The Slurm fields, as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmForm {
    /// `--partition`; empty: the cluster's default.
    pub partition: String,
    /// `--gres`; empty or `none`: no generic resources.
    pub gres: String,
    /// `--time`; empty: the partition's default.
    pub time: String,
}

impl Default for SlurmForm {
    fn default() -> Self {
        Self { partition: String::new(), gres: DEFAULT_GRES.to_owned(), time: String::new() }
    }
}

impl SlurmForm {
    /// The `#SBATCH` options these fields ask for, checked.
    ///
    /// # Errors
    /// The first bad field, named as the window labels it.
    pub fn options(&self, job_name: String) -> Result<SbatchOptions, String> {
        let text = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        let partition = text(&self.partition);
        if let Some(partition) = &partition
            && partition.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("Partition: {partition:?} holds a space"));
        }
        let gres = text(&self.gres).filter(|gres| gres != "none");
        if let Some(gres) = &gres {
            check_gres(gres).map_err(|err| format!("GRES: {err}"))?;
        }
        let time = text(&self.time);
        if let Some(time) = &time {
            check_time(time).map_err(|err| format!("Time limit: {err}"))?;
        }
        let options = SbatchOptions { job_name, partition, gres, time, ..SbatchOptions::default() };
        options.check()?;
        Ok(options)
    }
}

/// A run submitted from this window, as the status view shows it.
#[derive(Debug, Clone)]
pub struct RunView {
    /// The run (as submitted).
    pub run: SlurmRun,
    /// The newest status, once asked.
    pub status: Option<RunStatus>,
    /// A status request is on its way.
    pub asking: bool,
    /// When the status was last asked for.
    pub asked_at: Option<Instant>,
}

impl RunView {
    /// Whether the status should be asked again now: never asked, or some task may still
    /// change (work left, or Slurm has it queued or running) and the last answer is old.
    pub fn due(&self, now: Instant) -> bool {
        if self.asking {
            return false;
        }
        let Some(asked) = self.asked_at else { return true };
        let changing = self.status.as_ref().is_none_or(|status| {
            !status.unfinished_tasks.is_empty()
                || status.tasks.iter().any(|task| {
                    task.slurm_state.as_deref().is_some_and(|state| {
                        crate::slurm::parse::TaskState(state.to_owned()).is_active()
                    })
                })
        });
        changing && now.duration_since(asked) >= STATUS_REFRESH
    }
}

/// What the user asked for in the status view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlurmAction {
    /// Ask the status of run `n` again now.
    Refresh(usize),
    /// Cancel every submission of run `n` (`scancel`).
    Cancel(usize),
}

/// The status view's state and the Slurm fields of the launcher.
#[derive(Debug, Default)]
pub struct SlurmPanel {
    /// Whether sbatch was found: the launcher offers "Submit to Slurm".
    pub available: bool,
    /// The fields.
    pub form: SlurmForm,
    /// Why the last submission was refused.
    pub error: Option<String>,
    /// A submission is on its way.
    pub submitting: bool,
    /// Runs submitted from here, oldest first.
    pub runs: Vec<RunView>,
}

impl SlurmPanel {
    /// The launcher's Slurm fields and button (under Generate); `true` when "Submit to
    /// Slurm" was clicked.
    pub fn launcher_ui(&mut self, ui: &mut egui::Ui, images: usize) -> bool {
        let mut submit = false;
        egui::CollapsingHeader::new("Slurm cluster")
            .id_salt("slurm_launcher")
            .default_open(true)
            .show(ui, |ui| {
                let form = &mut self.form;
                egui::Grid::new("slurm-fields").num_columns(2).show(ui, |ui| {
                    let label = ui.label("Partition");
                    ui.add(
                        egui::TextEdit::singleline(&mut form.partition)
                            .desired_width(120.0)
                            .hint_text("default"),
                    )
                    .labelled_by(label.id);
                    ui.end_row();
                    let label = ui.label("GRES");
                    ui.add(
                        egui::TextEdit::singleline(&mut form.gres)
                            .desired_width(120.0)
                            .hint_text("gpu:1 or none"),
                    )
                    .labelled_by(label.id);
                    ui.end_row();
                    let label = ui.label("Time limit");
                    ui.add(
                        egui::TextEdit::singleline(&mut form.time)
                            .desired_width(120.0)
                            .hint_text("02:00:00"),
                    )
                    .labelled_by(label.id);
                    ui.end_row();
                });
                ui.horizontal(|ui| {
                    let button = ui.add_enabled(
                        !self.submitting,
                        egui::Button::new("Submit to Slurm").min_size(egui::vec2(110.0, 24.0)),
                    );
                    if button
                        .on_hover_text(format!(
                            "{images} image(s) as a Slurm job array into one run folder, as \
                             `imagelab slurm submit` does"
                        ))
                        .clicked()
                    {
                        submit = true;
                    }
                    if self.submitting {
                        ui.spinner();
                    }
                });
                if let Some(error) = &self.error {
                    ui.colored_label(ui.visuals().error_fg_color, error);
                }
            });
        submit
    }

    /// The status view: each run submitted from here, its tasks and their progress.
    pub fn ui(&mut self, ui: &mut egui::Ui) -> Option<SlurmAction> {
        let mut action = None;
        if self.runs.is_empty() {
            ui.label(
                "Runs submitted with \"Submit to Slurm\" show here: each task's Slurm state, \
                 its images and items, refreshed every few seconds.",
            );
            return None;
        }
        egui::ScrollArea::vertical().id_salt("slurm-runs").show(ui, |ui| {
            for (index, view) in self.runs.iter().enumerate().rev() {
                if let Some(found) = run_ui(ui, index, view) {
                    action = Some(found);
                }
                ui.separator();
            }
        });
        action
    }
}

fn run_ui(ui: &mut egui::Ui, index: usize, view: &RunView) -> Option<SlurmAction> {
    let mut action = None;
    let run = &view.run;
    let jobs: Vec<String> = run.submissions.iter().map(|s| s.job.to_string()).collect();
    ui.horizontal(|ui| {
        ui.strong(run.run_dir.display().to_string());
        ui.label(format!("Slurm job {}", jobs.join(", ")));
        if ui.add_enabled(!view.asking, egui::Button::new("Refresh")).clicked() {
            action = Some(SlurmAction::Refresh(index));
        }
        if ui.button("Cancel run").clicked() {
            action = Some(SlurmAction::Cancel(index));
        }
        if view.asking {
            ui.spinner();
        }
    });
    let Some(status) = &view.status else {
        ui.label("asking Slurm…");
        return action;
    };
    ui.label(format!(
        "images {}/{} done, {} failed item(s), {} task(s) with work left",
        status.done_images,
        status.planned_images,
        status.failed_items,
        status.unfinished_tasks.len()
    ));
    egui::Grid::new(("slurm-tasks", index)).striped(true).num_columns(6).show(ui, |ui| {
        for heading in ["task", "slurm id", "state", "images", "items done/failed", "share"] {
            ui.strong(heading);
        }
        ui.end_row();
        for task in &status.tasks {
            ui.label(task.task.to_string());
            ui.label(task.slurm_id.as_deref().unwrap_or("-"));
            let state = match &task.slurm_detail {
                Some(detail) if task.slurm_state.is_some() => {
                    format!("{} ({detail})", task.state_word())
                }
                _ => task.state_word(),
            };
            ui.label(state);
            let fraction = if task.images_planned == 0 {
                1.0
            } else {
                task.images_done as f32 / task.images_planned as f32
            };
            ui.add(
                egui::ProgressBar::new(fraction)
                    .desired_width(110.0)
                    .text(format!("{}/{}", task.images_done, task.images_planned)),
            );
            ui.label(format!("{}/{}", task.items_done, task.items_failed));
            ui.label(&task.label);
            ui.end_row();
        }
    });
    for note in &status.notes {
        ui.small(format!("note: {note}"));
    }
    action
}

/// A request for the Slurm thread.
#[derive(Debug)]
pub enum SlurmRequest {
    /// Plan the run and submit every task (`imagelab slurm submit`).
    Submit {
        /// The checked plan.
        plan: Box<Plan>,
        /// Where and how.
        setup: Box<RunSetup>,
    },
    /// Ask the status of run `index` (`imagelab slurm status`).
    Status {
        /// The run's place in the panel.
        index: usize,
        /// The run.
        run: Box<SlurmRun>,
    },
    /// Cancel every submission of run `index` (`imagelab slurm cancel`).
    Cancel {
        /// The run's place in the panel.
        index: usize,
        /// The run.
        run: Box<SlurmRun>,
    },
    /// Which of the offered unfinished jobs Slurm may still run.
    CheckOffer {
        /// The output root.
        root: PathBuf,
        /// Jobs of Slurm runs, held back from the offer until answered.
        jobs: Vec<UnfinishedJob>,
    },
}

/// An answer of the Slurm thread.
#[derive(Debug)]
pub enum SlurmReply {
    /// The submission: the run and its Slurm job, or why not.
    Submitted(Result<Box<(SlurmRun, Submission)>, String>),
    /// Run `index`'s status.
    Status {
        /// The run's place in the panel.
        index: usize,
        /// Its status.
        status: Box<RunStatus>,
    },
    /// What `scancel` did to run `index`: the ids cancelled, or why not.
    Cancelled {
        /// The run's place in the panel.
        index: usize,
        /// The ids cancelled, or the error.
        result: Result<Vec<String>, String>,
    },
    /// The jobs of [`SlurmRequest::CheckOffer`] and which Slurm still holds.
    Offer {
        /// The jobs asked about.
        jobs: Vec<UnfinishedJob>,
        /// Those not to offer, and why.
        held: HeldBySlurm,
    },
}

/// The `imagelab-slurm` thread: runs Slurm commands for the window, one request at a time,
/// and wakes the window with each answer. Ends when dropped.
#[derive(Debug)]
pub struct SlurmWorker {
    requests: Sender<SlurmRequest>,
    replies: Receiver<SlurmReply>,
}

impl SlurmWorker {
    /// Starts the thread with `client`.
    ///
    /// # Errors
    /// The thread could not start.
    pub fn spawn(client: Client, waker: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (request_sender, requests) = bounded::<SlurmRequest>(REQUESTS);
        let (reply_sender, replies) = bounded::<SlurmReply>(REQUESTS);
        // Not joined: it ends when the window drops its sender, after the command it runs
        // (a hanging Slurm command is not waited for).
        std::thread::Builder::new().name("imagelab-slurm".into()).spawn(move || {
            for request in requests {
                let reply = answer(&client, request);
                if reply_sender.send(reply).is_err() {
                    break;
                }
                waker();
            }
        })?;
        Ok(Self { requests: request_sender, replies })
    }

    /// Sends a request.
    ///
    /// # Errors
    /// Too many requests wait, or the thread ended.
    pub fn send(&self, request: SlurmRequest) -> Result<(), String> {
        self.requests.try_send(request).map_err(|err| match err {
            TrySendError::Full(_) => "the Slurm thread is busy; try again".to_owned(),
            TrySendError::Disconnected(_) => "the Slurm thread ended".to_owned(),
        })
    }

    /// The answers that arrived.
    pub fn replies(&self) -> &Receiver<SlurmReply> {
        &self.replies
    }
}

fn answer(client: &Client, request: SlurmRequest) -> SlurmReply {
    match request {
        SlurmRequest::Submit { plan, setup } => SlurmReply::Submitted(
            slurm::plan_and_submit(client, *plan, &setup)
                .map(Box::new)
                .map_err(|err| err.to_string()),
        ),
        SlurmRequest::Status { index, run } => {
            SlurmReply::Status { index, status: Box::new(status_of(client, &run)) }
        }
        SlurmRequest::Cancel { index, run } => {
            let mut cancelled = Vec::new();
            let mut result = Ok(());
            for submission in &run.submissions {
                let id = submission.job.to_string();
                match client.cancel(&id) {
                    Ok(()) => cancelled.push(id),
                    Err(err) => {
                        result = Err(err.to_string());
                        break;
                    }
                }
            }
            SlurmReply::Cancelled { index, result: result.map(|()| cancelled) }
        }
        SlurmRequest::CheckOffer { root, jobs } => {
            let held = slurm::held_by_slurm(client, &root, &jobs);
            SlurmReply::Offer { jobs, held }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked_and_named_as_the_window_labels_them() {
        let form =
            SlurmForm { partition: " gpu ".into(), gres: "gpu:a100:2".into(), time: "1-00".into() };
        let options = form.options("imagelab-all-profiles".into()).expect("valid");
        assert_eq!(options.partition.as_deref(), Some("gpu"));
        assert_eq!(options.gres.as_deref(), Some("gpu:a100:2"));
        assert_eq!(options.time.as_deref(), Some("1-00"));
        let none = SlurmForm { gres: "none".into(), ..SlurmForm::default() };
        let options = none.options("j".into()).expect("valid");
        assert_eq!((options.gres, options.partition, options.time), (None, None, None));
        let cases = [
            (SlurmForm { time: "2 hours".into(), ..SlurmForm::default() }, "Time limit:"),
            (SlurmForm { gres: "gpu:0".into(), ..SlurmForm::default() }, "GRES:"),
            (SlurmForm { partition: "a b".into(), ..SlurmForm::default() }, "Partition:"),
        ];
        for (form, start) in cases {
            let err = form.options("j".into()).unwrap_err();
            assert!(err.starts_with(start), "{err}");
        }
    }
}
