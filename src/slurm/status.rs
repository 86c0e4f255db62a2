//! `imagelab slurm status`: each task's state as Slurm reports it (`squeue` while it is queued,
//! `sacct` after), joined with what the run folder itself says — the persistent queue (images
//! on disk, items done or failed) and the jobs logs (why an item failed). The folder is the
//! truth for images: a task cancelled while pending leaves no trace in Slurm at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::SlurmRun;
use super::client::{Client, ClientError};
use super::parse::TaskRow;
use crate::engine::queue::JobState;
use crate::storage::jobs_log::{self, ItemStatus};

/// A failed item, from its jobs-log line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemFailure {
    /// The plan's item index.
    pub item: usize,
    /// Its model.
    pub model: String,
    /// Its profile.
    pub profile: String,
    /// Why.
    pub error: String,
}

/// One task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskStatus {
    /// The array task id.
    pub task: u32,
    /// Its persistent-queue job.
    pub job: String,
    /// The model or item range.
    pub label: String,
    /// `<array job>_<task>` of the newest submission that covered it.
    pub slurm_id: Option<String>,
    /// Slurm's state of that task (`None`: in neither squeue nor sacct).
    pub slurm_state: Option<String>,
    /// Why it waits, or its exit code, or its node.
    pub slurm_detail: Option<String>,
    /// Images in its share.
    pub images_planned: usize,
    /// Images of its share on disk.
    pub images_done: usize,
    /// Items in its share.
    pub items_planned: usize,
    /// Items done.
    pub items_done: usize,
    /// Items failed.
    pub items_failed: usize,
    /// Why they failed.
    pub failures: Vec<ItemFailure>,
    /// A process holds its job now (on some node).
    pub live: bool,
}

impl TaskStatus {
    /// Images not made and not given up on (failed items count as ended).
    pub fn unfinished(&self) -> bool {
        self.items_done + self.items_failed < self.items_planned
    }

    /// One word for the table: Slurm's state, else what the folder says.
    pub fn state_word(&self) -> String {
        match (&self.slurm_state, &self.slurm_id) {
            (Some(state), _) => state.clone(),
            (None, None) => "NOT_SUBMITTED".to_owned(),
            (None, Some(_)) if !self.unfinished() => "ENDED".to_owned(),
            // Cancelled while pending (no record anywhere), or purged from squeue without
            // accounting.
            (None, Some(_)) => "GONE".to_owned(),
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStatus {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Slurm job ids of every submission, oldest first.
    pub slurm_jobs: Vec<u64>,
    /// Images planned.
    pub planned_images: usize,
    /// Images on disk.
    pub done_images: usize,
    /// Items that failed.
    pub failed_items: usize,
    /// Tasks with work left.
    pub unfinished_tasks: Vec<u32>,
    /// Every task.
    pub tasks: Vec<TaskStatus>,
    /// What could not be asked (no sacct, squeue failed, a job unreadable).
    pub notes: Vec<String>,
}

/// Slurm's view of every task of one array: squeue (live) over sacct (history).
pub fn merge_rows(queued: &[TaskRow], accounted: &[TaskRow]) -> BTreeMap<(u64, u32), TaskRow> {
    let mut rows = BTreeMap::new();
    for row in accounted.iter().chain(queued) {
        rows.insert((row.job, row.task), row.clone());
    }
    rows
}

/// Asks Slurm about every submission of `run` (a failure becomes a note: the folder's own
/// view still stands).
pub fn slurm_rows(
    client: &Client,
    run: &SlurmRun,
    notes: &mut Vec<String>,
) -> BTreeMap<(u64, u32), TaskRow> {
    let mut rows = BTreeMap::new();
    let mut sacct_note = false;
    for submission in &run.submissions {
        let queued = client.queued(submission.job).unwrap_or_else(|err| {
            notes.push(format!("squeue: {err}"));
            Vec::new()
        });
        let accounted = match client.accounted(submission.job) {
            Ok(rows) => rows,
            Err(err) => {
                if !sacct_note {
                    sacct_note = true;
                    let why = match &err {
                        ClientError::Failed { message, .. }
                            if message.contains("accounting storage is disabled") =>
                        {
                            "Slurm accounting is off here; ended tasks show the folder's view"
                                .to_owned()
                        }
                        other => other.to_string(),
                    };
                    notes.push(format!("sacct: {why}"));
                }
                Vec::new()
            }
        };
        rows.extend(merge_rows(&queued, &accounted));
    }
    rows
}

/// The run's status from the folder and `rows` (see [`slurm_rows`]).
pub fn collect(
    run: &SlurmRun,
    rows: &BTreeMap<(u64, u32), TaskRow>,
    mut notes: Vec<String>,
) -> RunStatus {
    let root = &run.output_root;
    let logs = jobs_log::read_all(root).unwrap_or_else(|err| {
        notes.push(format!("jobs logs: {err}"));
        jobs_log::LogContents::default()
    });
    let mut tasks = Vec::with_capacity(run.tasks.len());
    for task in &run.tasks {
        let submission = run.submission_of(task.task);
        let slurm_id = submission.map(|s| format!("{}_{}", s.job, task.task));
        let row = submission.and_then(|s| rows.get(&(s.job, task.task)));
        let slurm_detail = row.and_then(|row| {
            row.reason
                .clone()
                .or_else(|| {
                    row.exit_code.clone().filter(|code| code != "0:0").map(|c| format!("exit {c}"))
                })
                .or_else(|| row.nodes.clone())
        });
        let mut status = TaskStatus {
            task: task.task,
            job: task.job.clone(),
            label: task.label.clone(),
            slurm_id,
            slurm_state: row.map(|row| row.state.to_string()),
            slurm_detail,
            images_planned: task.images,
            images_done: 0,
            items_planned: task.items.len(),
            items_done: 0,
            items_failed: 0,
            failures: Vec::new(),
            live: crate::storage::journal::is_job_live(root, &task.job),
        };
        match JobState::read(root, &task.job) {
            Ok(state) => {
                status.images_done = state.images.len();
                for item_status in state.final_status.values() {
                    match item_status {
                        ItemStatus::Done => status.items_done += 1,
                        ItemStatus::Failed => status.items_failed += 1,
                        _ => {}
                    }
                }
                let failed: Vec<usize> = state
                    .final_status
                    .iter()
                    .filter(|(_, s)| **s == ItemStatus::Failed)
                    .map(|(item, _)| *item)
                    .collect();
                for item in failed {
                    let line = logs.records.iter().rev().find(|record| {
                        record.job_id.as_deref() == Some(task.job.as_str())
                            && record.item == Some(item)
                            && record.status == ItemStatus::Failed
                    });
                    status.failures.push(ItemFailure {
                        item,
                        model: line.map(|l| l.model.clone()).unwrap_or_default(),
                        profile: line.map(|l| l.profile.clone()).unwrap_or_default(),
                        error: line
                            .and_then(|l| l.error.clone())
                            .unwrap_or_else(|| "no jobs-log line".to_owned()),
                    });
                }
            }
            Err(err) => notes.push(format!("task {}: {err}", task.task)),
        }
        tasks.push(status);
    }
    RunStatus {
        run_dir: run.run_path(),
        slurm_jobs: run.submissions.iter().map(|s| s.job).collect(),
        planned_images: run.planned_images,
        done_images: tasks.iter().map(|t| t.images_done).sum(),
        failed_items: tasks.iter().map(|t| t.items_failed).sum(),
        unfinished_tasks: tasks.iter().filter(|t| t.unfinished()).map(|t| t.task).collect(),
        tasks,
        notes,
    }
}

/// The run's status, asking `client` (see [`slurm_rows`] and [`collect`]).
pub fn status_of(client: &Client, run: &SlurmRun) -> RunStatus {
    let mut notes = Vec::new();
    let rows = slurm_rows(client, run, &mut notes);
    collect(run, &rows, notes)
}

/// The status as a table for people.
pub fn format_text(status: &RunStatus) -> String {
    let mut s = String::new();
    let jobs: Vec<String> = status.slurm_jobs.iter().map(u64::to_string).collect();
    let _ = writeln!(
        s,
        "run {}  (Slurm job{} {})",
        status.run_dir.display(),
        if jobs.len() == 1 { "" } else { "s" },
        if jobs.is_empty() { "none: not submitted".to_owned() } else { jobs.join(", ") }
    );
    let _ = writeln!(
        s,
        "{:<5} {:<12} {:<14} {:>9} {:>11}  share",
        "task", "slurm id", "state", "images", "items d/f"
    );
    for task in &status.tasks {
        let state = match &task.slurm_detail {
            Some(detail) if task.slurm_state.is_some() && detail.len() < 24 => {
                format!("{} ({detail})", task.state_word())
            }
            _ => task.state_word(),
        };
        let _ = writeln!(
            s,
            "{:<5} {:<12} {:<14} {:>9} {:>11}  {}",
            task.task,
            task.slurm_id.as_deref().unwrap_or("-"),
            state,
            format!("{}/{}", task.images_done, task.images_planned),
            format!("{}/{}", task.items_done, task.items_failed),
            task.label
        );
    }
    let _ = writeln!(
        s,
        "images {}/{} done, {} failed item(s), {} task(s) with work left{}",
        status.done_images,
        status.planned_images,
        status.failed_items,
        status.unfinished_tasks.len(),
        if status.unfinished_tasks.is_empty() {
            String::new()
        } else {
            format!(" ({})", super::parse::array_spec(&status.unfinished_tasks))
        }
    );
    for task in &status.tasks {
        for failure in &task.failures {
            let _ = writeln!(
                s,
                "failed: task {} item {} ({}, {}): {}",
                task.task, failure.item, failure.model, failure.profile, failure.error
            );
        }
    }
    if status.failed_items > 0 {
        let _ = writeln!(
            s,
            "run the failed items again with `imagelab resume {} --retry-failed`",
            status.run_dir.display()
        );
    }
    for note in &status.notes {
        let _ = writeln!(s, "note: {note}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slurm::parse::{parse_sacct, parse_squeue};

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/slurm")
            .join(name);
        fs_err::read_to_string(path).expect("fixture")
    }

    #[test]
    fn squeue_wins_over_sacct_and_a_task_cancelled_while_pending_is_absent() {
        // Final sacct (task 3 has no record) with a stale "running" squeue view of task 0.
        let accounted = parse_sacct(&fixture("sacct-final-tasks.out"));
        let queued = parse_squeue("3_0|4|3|0|COMPLETING|None|gres:gpu:1|imagelab-node|0:09\n");
        let rows = merge_rows(&queued, &accounted);
        let states: Vec<(u32, &str)> =
            rows.values().map(|row| (row.task, row.state.0.as_str())).collect();
        assert_eq!(
            states,
            vec![(0, "COMPLETING"), (1, "CANCELLED"), (2, "FAILED"), (4, "COMPLETED")]
        );
        assert!(!rows.contains_key(&(3, 3)));
    }

    #[test]
    fn state_words() {
        let mut task = TaskStatus {
            task: 3,
            job: "j".into(),
            label: "items 6-7".into(),
            slurm_id: Some("3_3".into()),
            slurm_state: None,
            slurm_detail: None,
            images_planned: 2,
            images_done: 0,
            items_planned: 2,
            items_done: 0,
            items_failed: 0,
            failures: Vec::new(),
            live: false,
        };
        assert_eq!(task.state_word(), "GONE");
        task.items_done = 1;
        task.items_failed = 1;
        assert_eq!(task.state_word(), "ENDED");
        assert!(!task.unfinished());
        task.slurm_state = Some("COMPLETED".into());
        assert_eq!(task.state_word(), "COMPLETED");
        task.slurm_id = None;
        task.slurm_state = None;
        assert_eq!(task.state_word(), "NOT_SUBMITTED");
    }
}
