//! The queue panel: jobs submitted this session, their state, cancel each, clear the queue.

use crate::engine::JobId;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting.
    Pending,
    /// Running now.
    Running,
    /// Finished, every item saved.
    Done,
    /// Finished with failures.
    Failed,
    /// Cancelled or dropped.
    Cancelled,
}

/// One submitted job.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedJob {
    /// Its number.
    pub job: JobId,
    /// Prompt (shortened) and sweep.
    pub label: String,
    /// Images it makes.
    pub images: usize,
    /// Where it stands.
    pub state: JobState,
}

/// What the user asked for in this panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueAction {
    /// Cancel one job.
    Cancel(JobId),
    /// Drop every pending job.
    Clear,
}

/// The jobs of this session, newest last.
#[derive(Debug, Default)]
pub struct QueuePanel {
    /// Every job submitted.
    pub jobs: Vec<QueuedJob>,
}

impl QueuePanel {
    /// Sets a job's state.
    pub fn set_state(&mut self, job: JobId, state: JobState) {
        if let Some(entry) = self.jobs.iter_mut().find(|entry| entry.job == job) {
            entry.state = state;
        }
    }

    /// The running job, if any.
    pub fn running(&self) -> Option<JobId> {
        self.jobs.iter().find(|entry| entry.state == JobState::Running).map(|entry| entry.job)
    }

    /// Whether anything waits or runs.
    pub fn busy(&self) -> bool {
        self.jobs.iter().any(|entry| matches!(entry.state, JobState::Pending | JobState::Running))
    }

    /// Draws the list; returns the user's action, if any.
    pub fn ui(&mut self, ui: &mut egui::Ui) -> Option<QueueAction> {
        let mut action = None;
        ui.horizontal(|ui| {
            ui.strong("Queue");
            let pending = self.jobs.iter().filter(|entry| entry.state == JobState::Pending).count();
            if ui.add_enabled(pending > 0, egui::Button::new("Clear queue")).clicked() {
                action = Some(QueueAction::Clear);
            }
        });
        egui::ScrollArea::vertical().id_salt("queue").max_height(140.0).show(ui, |ui| {
            for entry in self.jobs.iter().rev().take(50) {
                ui.horizontal(|ui| {
                    let state = match entry.state {
                        JobState::Pending => "pending",
                        JobState::Running => "running",
                        JobState::Done => "done",
                        JobState::Failed => "FAILED",
                        JobState::Cancelled => "cancelled",
                    };
                    ui.label(format!(
                        "#{} {state} · {} img · {}",
                        entry.job, entry.images, entry.label
                    ));
                    if matches!(entry.state, JobState::Pending | JobState::Running)
                        && ui.small_button(format!("Cancel #{}", entry.job)).clicked()
                    {
                        action = Some(QueueAction::Cancel(entry.job));
                    }
                });
            }
        });
        action
    }
}
