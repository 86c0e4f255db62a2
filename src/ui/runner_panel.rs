//! The Runner panel: a template file, limits and GPU choice, Start / Stop, jobs done, the
//! current prompt and images per hour of each worker, and the GPU table (refreshed by the
//! `imagelab-gpus` thread, never by the UI thread).

use crate::gpu::watch::Latest;
use crate::runner::{RunnerEvent, WorkerState};
use crate::storage::jobs_log::ItemStatus;

/// The panel's inputs, as typed (parsed when Start is pressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerForm {
    /// Template file; empty = the built-in one.
    pub templates: String,
    /// Job limit; empty = none.
    pub jobs: String,
    /// Duration limit (`8h`); empty = none.
    pub for_duration: String,
    /// Clock limit (`06:30`); empty = none.
    pub until: String,
    /// `auto`, `none` or `0,2`.
    pub gpus: String,
    /// Run seed; empty = random.
    pub seed: String,
    /// Models, comma-separated; empty = the templates' own.
    pub models: String,
    /// Profiles, comma-separated; empty = the templates' own.
    pub profiles: String,
}

impl Default for RunnerForm {
    fn default() -> Self {
        Self {
            templates: String::new(),
            jobs: "20".to_owned(),
            for_duration: String::new(),
            until: String::new(),
            gpus: "auto".to_owned(),
            seed: String::new(),
            models: String::new(),
            profiles: String::new(),
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerAction {
    /// Start a run with the form.
    Start,
    /// Stop (first press: finish the running images; second: cancel them).
    Stop,
}

/// One worker's line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerRow {
    /// `GPU 0`, `cpu`, …
    pub label: String,
    /// What it does.
    pub state: String,
    /// The prompt of its current (or last) job.
    pub prompt: String,
    /// Jobs finished.
    pub jobs: u64,
    /// Images written.
    pub images: u64,
    /// Seconds spent in jobs.
    pub busy_s: f64,
}

impl WorkerRow {
    /// Images per hour of busy time.
    pub fn images_per_hour(&self) -> f64 {
        if self.busy_s > 0.0 { self.images as f64 * 3600.0 / self.busy_s } else { 0.0 }
    }
}

/// The Runner panel's state.
#[derive(Debug, Default)]
pub struct RunnerPanel {
    /// The inputs.
    pub form: RunnerForm,
    /// A run is going.
    pub running: bool,
    /// Stop was pressed this many times during the run.
    pub stops: u8,
    /// One row per worker of the current (or last) run.
    pub workers: Vec<WorkerRow>,
    /// Jobs finished in the current (or last) run.
    pub jobs_done: u64,
    /// Images written.
    pub images: u64,
    /// Jobs failed.
    pub failed: u64,
    /// The last run's summary line.
    pub summary: Option<String>,
    /// Why the last start failed.
    pub error: Option<String>,
    /// The newest GPU list.
    pub gpus: Latest,
}

impl RunnerPanel {
    /// A run started with these worker labels.
    pub fn started(&mut self, labels: Vec<String>) {
        self.running = true;
        self.stops = 0;
        self.error = None;
        self.summary = None;
        self.jobs_done = 0;
        self.images = 0;
        self.failed = 0;
        self.workers = labels
            .into_iter()
            .map(|label| WorkerRow { label, state: "starting".into(), ..WorkerRow::default() })
            .collect();
    }

    /// Takes one runner event.
    pub fn on_event(&mut self, event: &RunnerEvent) {
        match event {
            RunnerEvent::Worker { slot, state } => {
                if let Some(row) = self.workers.get_mut(*slot) {
                    row.state = match state {
                        WorkerState::Starting => "starting".into(),
                        WorkerState::Working => "working".into(),
                        WorkerState::Waiting(why) => format!("waiting: {why}"),
                        WorkerState::Retired(why) => format!("retired: {why}"),
                        WorkerState::Finished => "finished".into(),
                    };
                }
            }
            RunnerEvent::JobStarted { slot, job } => {
                if let Some(row) = self.workers.get_mut(*slot) {
                    row.prompt = format!("#{} {}", job.number, job.prompt);
                }
            }
            RunnerEvent::JobFinished { slot, outcome } => {
                self.jobs_done += 1;
                self.images += outcome.images.len() as u64;
                if outcome.status == ItemStatus::Failed {
                    self.failed += 1;
                }
                if let Some(row) = self.workers.get_mut(*slot) {
                    row.jobs += 1;
                    row.images += outcome.images.len() as u64;
                    row.busy_s += outcome.duration_s;
                }
            }
            RunnerEvent::Progress { .. } => {}
            RunnerEvent::Finished(summary) => {
                self.running = false;
                self.summary = Some(format!(
                    "{} job(s), {} image(s), {} failed in {:.0} s ({:.1} images/hour)",
                    summary.jobs,
                    summary.images,
                    summary.failed,
                    summary.duration_s,
                    summary.images_per_hour
                ));
            }
        }
    }

    /// Draws the panel; returns the user's action, if any.
    pub fn ui(&mut self, ui: &mut egui::Ui) -> Option<RunnerAction> {
        let mut action = None;
        egui::Grid::new("runner_form").num_columns(2).show(ui, |ui| {
            let form = &mut self.form;
            for (label, value, hint) in [
                ("Templates file", &mut form.templates, "built-in"),
                ("Jobs", &mut form.jobs, "no limit"),
                ("For", &mut form.for_duration, "8h, 45m"),
                ("Until", &mut form.until, "06:30"),
                ("GPUs", &mut form.gpus, "auto, none, 0,2"),
                ("Run seed", &mut form.seed, "random"),
                ("Models", &mut form.models, "the templates' own"),
                ("Profiles", &mut form.profiles, "the templates' own"),
            ] {
                let label = ui.label(label);
                ui.add_enabled(
                    !self.running,
                    egui::TextEdit::singleline(value).desired_width(220.0).hint_text(hint),
                )
                .labelled_by(label.id);
                ui.end_row();
            }
        });
        ui.horizontal(|ui| {
            if self.running {
                let text = if self.stops == 0 { "Stop runner" } else { "Cancel now" };
                if ui.button(text).clicked() {
                    action = Some(RunnerAction::Stop);
                }
            } else if ui.button("Start runner").clicked() {
                action = Some(RunnerAction::Start);
            }
            ui.label(format!(
                "jobs done: {} · images: {} · failed: {}",
                self.jobs_done, self.images, self.failed
            ));
        });
        if let Some(error) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, error);
        }
        if let Some(summary) = &self.summary {
            ui.label(format!("last run: {summary}"));
        }
        if !self.workers.is_empty() {
            egui::Grid::new("runner_workers").num_columns(4).striped(true).show(ui, |ui| {
                for heading in ["Worker", "State", "Images/hour", "Current prompt"] {
                    ui.strong(heading);
                }
                ui.end_row();
                for row in &self.workers {
                    ui.label(&row.label);
                    ui.label(&row.state);
                    ui.label(format!("{:.1}", row.images_per_hour()));
                    ui.label(&row.prompt);
                    ui.end_row();
                }
            });
        }
        ui.separator();
        self.gpus_ui(ui);
        action
    }

    fn gpus_ui(&self, ui: &mut egui::Ui) {
        match &self.gpus {
            None => {
                ui.label("GPUs: looking…");
            }
            Some(Err(why)) => {
                ui.label(format!("GPUs: {why}"));
            }
            Some(Ok(snapshot)) => {
                egui::Grid::new("gpu_table").num_columns(6).striped(true).show(ui, |ui| {
                    for heading in ["GPU", "Name", "Memory MiB", "Util", "Processes", "State"] {
                        ui.strong(heading);
                    }
                    ui.end_row();
                    let na = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
                    for row in &snapshot.gpus {
                        let gpu = &row.gpu;
                        ui.label(gpu.index.to_string());
                        ui.label(&gpu.name);
                        ui.label(format!(
                            "{} / {}",
                            na(gpu.memory_used_mib),
                            na(gpu.memory_total_mib)
                        ));
                        ui.label(
                            gpu.utilization_percent
                                .map_or_else(|| "n/a".to_owned(), |p| format!("{p}%")),
                        );
                        ui.label(gpu.processes.len().to_string());
                        ui.label(
                            row.busy_reason
                                .as_deref()
                                .map_or_else(|| "idle".to_owned(), |r| format!("busy: {r}")),
                        );
                        ui.end_row();
                    }
                });
            }
        }
    }
}
