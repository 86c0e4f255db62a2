//! The queue panel: the running job, the waiting ones in the order they will run (move up or
//! down, edit, cancel each; hold or start the queue), the finished ones, and — after a restart
//! with unfinished work in the persistent queue — the offer to resume it.

use crate::engine::{JobId, UnfinishedJob};

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
    /// Hold (`true`) or start (`false`) the queue.
    Pause(bool),
    /// Move a waiting job to `position` among the waiting ones (0 = next).
    Move {
        /// The job.
        job: JobId,
        /// Its new place.
        position: usize,
    },
    /// Load a waiting job's settings into the form to edit it.
    Edit(JobId),
    /// Replace the job being edited by the form's settings.
    SaveEdit,
    /// Leave the job being edited as it was.
    StopEditing,
    /// Resume the unfinished jobs of an earlier session; `paused`: into a held queue, to
    /// review them first.
    Resume {
        /// Hold the queue.
        paused: bool,
    },
    /// Do not resume them (they stay on disk, marked discarded).
    Discard,
}

/// The jobs of this session: the running one, the waiting ones in run order, the finished ones.
#[derive(Debug, Default)]
pub struct QueuePanel {
    /// Every job submitted; waiting ones in the order they will run.
    pub jobs: Vec<QueuedJob>,
    /// The queue is held (from the engine's stats).
    pub paused: bool,
    /// The waiting job whose settings are in the form, being edited.
    pub editing: Option<JobId>,
    /// Unfinished jobs of an earlier session, offered for resuming.
    pub offer: Vec<UnfinishedJob>,
}

impl QueuePanel {
    /// Sets a job's state.
    pub fn set_state(&mut self, job: JobId, state: JobState) {
        if let Some(entry) = self.jobs.iter_mut().find(|entry| entry.job == job) {
            entry.state = state;
        }
        if self.editing == Some(job) && state != JobState::Pending {
            self.editing = None;
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

    /// The waiting jobs in run order.
    pub fn pending(&self) -> Vec<JobId> {
        self.jobs.iter().filter(|e| e.state == JobState::Pending).map(|e| e.job).collect()
    }

    /// Moves waiting job `job` to `position` among the waiting ones, as the engine does.
    pub fn move_pending(&mut self, job: JobId, position: usize) {
        let Some(from) =
            self.jobs.iter().position(|e| e.job == job && e.state == JobState::Pending)
        else {
            return;
        };
        let entry = self.jobs.remove(from);
        let slots: Vec<usize> = self
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state == JobState::Pending)
            .map(|(index, _)| index)
            .collect();
        let at = match slots.get(position) {
            Some(index) => *index,
            None => slots.last().map_or(self.jobs.len(), |last| last + 1),
        };
        self.jobs.insert(at, entry);
    }

    /// A job replaced by its edited copy: the entry takes the copy's number and label.
    pub fn replaced(&mut self, job: JobId, copy: QueuedJob) {
        if let Some(entry) = self.jobs.iter_mut().find(|entry| entry.job == job) {
            *entry = copy;
        }
        if self.editing == Some(job) {
            self.editing = None;
        }
    }

    /// Draws the panel; returns the user's action, if any.
    pub fn ui(&mut self, ui: &mut egui::Ui) -> Option<QueueAction> {
        let mut action = None;
        if !self.offer.is_empty() {
            offer_ui(ui, &self.offer, &mut action);
        }
        let pending = self.pending();
        ui.horizontal(|ui| {
            ui.strong("Queue");
            let (text, paused) =
                if self.paused { ("Start queue", false) } else { ("Pause queue", true) };
            if ui.button(text).clicked() {
                action = Some(QueueAction::Pause(paused));
            }
            if ui.add_enabled(!pending.is_empty(), egui::Button::new("Clear queue")).clicked() {
                action = Some(QueueAction::Clear);
            }
            if self.paused {
                ui.label("held: nothing new starts");
            }
        });
        if let Some(job) = self.editing {
            ui.horizontal(|ui| {
                ui.label(format!("Editing job #{job}: change the settings on the left, then"));
                if ui.button("Save changes").clicked() {
                    action = Some(QueueAction::SaveEdit);
                }
                if ui.button("Stop editing").clicked() {
                    action = Some(QueueAction::StopEditing);
                }
            });
        }
        egui::ScrollArea::vertical().id_salt("queue").max_height(160.0).show(ui, |ui| {
            for entry in self.jobs.iter().filter(|e| e.state == JobState::Running) {
                job_row(ui, entry, None, &mut action);
            }
            for (position, job) in pending.iter().enumerate() {
                if let Some(entry) = self.jobs.iter().find(|e| e.job == *job) {
                    job_row(ui, entry, Some((position, pending.len())), &mut action);
                }
            }
            let finished = self
                .jobs
                .iter()
                .rev()
                .filter(|e| !matches!(e.state, JobState::Pending | JobState::Running));
            for entry in finished.take(50) {
                job_row(ui, entry, None, &mut action);
            }
        });
        action
    }
}

fn offer_ui(ui: &mut egui::Ui, offer: &[UnfinishedJob], action: &mut Option<QueueAction>) {
    egui::Frame::group(ui.style()).show(ui, |ui| {
        let images: usize = offer.iter().map(|job| job.images_left).sum();
        ui.label(format!(
            "{} unfinished job(s) from an earlier session, {images} image(s) left",
            offer.len()
        ));
        for job in offer.iter().take(5) {
            ui.small(format!(
                "{} · {}/{} img · {}",
                job.id, job.images_left, job.images, job.label
            ));
        }
        ui.horizontal(|ui| {
            if ui.button("Resume").clicked() {
                *action = Some(QueueAction::Resume { paused: false });
            }
            if ui.button("Resume paused").clicked() {
                *action = Some(QueueAction::Resume { paused: true });
            }
            if ui.button("Discard").clicked() {
                *action = Some(QueueAction::Discard);
            }
        });
    });
}

/// One job's line; `waiting` = its place among `n` waiting jobs (move, edit, cancel).
fn job_row(
    ui: &mut egui::Ui,
    entry: &QueuedJob,
    waiting: Option<(usize, usize)>,
    action: &mut Option<QueueAction>,
) {
    ui.horizontal(|ui| {
        let state = match entry.state {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "cancelled",
        };
        let job = entry.job;
        ui.label(format!("#{job} {state} · {} img · {}", entry.images, entry.label));
        if let Some((position, count)) = waiting {
            if ui
                .add_enabled(position > 0, egui::Button::new(format!("Up #{job}")).small())
                .clicked()
            {
                *action = Some(QueueAction::Move { job, position: position - 1 });
            }
            let down = egui::Button::new(format!("Down #{job}")).small();
            if ui.add_enabled(position + 1 < count, down).clicked() {
                *action = Some(QueueAction::Move { job, position: position + 1 });
            }
            if ui.small_button(format!("Edit #{job}")).clicked() {
                *action = Some(QueueAction::Edit(job));
            }
        }
        if matches!(entry.state, JobState::Pending | JobState::Running)
            && ui.small_button(format!("Cancel #{job}")).clicked()
        {
            *action = Some(QueueAction::Cancel(job));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(job: JobId, state: JobState) -> QueuedJob {
        QueuedJob { job, label: format!("job {job}"), images: 1, state }
    }

    #[test]
    fn moving_a_waiting_job_keeps_finished_and_running_ones_in_place() {
        let mut panel = QueuePanel {
            jobs: vec![
                entry(1, JobState::Done),
                entry(2, JobState::Running),
                entry(3, JobState::Pending),
                entry(4, JobState::Pending),
                entry(5, JobState::Pending),
            ],
            ..QueuePanel::default()
        };
        panel.move_pending(5, 0);
        assert_eq!(panel.pending(), [5, 3, 4]);
        panel.move_pending(5, 9);
        assert_eq!(panel.pending(), [3, 4, 5]);
        panel.move_pending(3, 1);
        assert_eq!(panel.pending(), [4, 3, 5]);
        panel.move_pending(1, 0);
        assert_eq!(panel.jobs[0].job, 1, "a finished job does not move");
    }
}
