//! Readers of what Slurm's client commands print (Slurm 22.05 and later; recorded outputs in
//! `tests/fixtures/slurm/`). Pure functions over text: the commands are run by
//! [`super::client`].
//!
//! Array tasks are keyed on `(array job id, task id)`, never on the raw job id: Slurm gives
//! split tasks fresh ids and the task scheduled last inherits the array's own.

use std::fmt;

/// The squeue format [`parse_squeue`] reads: `-h -r -o` with this (one line per task with
/// `-r`; `%F` the array's id, `%K` the task's).
pub const SQUEUE_FORMAT: &str = "%i|%A|%F|%K|%T|%r|%b|%N|%M";
/// The sacct field list [`parse_sacct`] reads, with `-n -P -X` (`-P` because the table view
/// truncates `CANCELLED by 0` to `CANCELLED+`; `-X` drops the `.batch` and `.extern` steps).
pub const SACCT_FORMAT: &str = "JobID,State,ExitCode,Start,End,NodeList";

/// What `sbatch --parsable` printed: `<job id>` or `<job id>;<cluster>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The (array) job id.
    pub job: u64,
    /// The cluster, on a multi-cluster or federated setup.
    pub cluster: Option<String>,
}

/// Reads `sbatch --parsable`'s stdout.
///
/// # Errors
/// Anything else, quoted.
pub fn parse_submitted(stdout: &str) -> Result<Submitted, String> {
    let line = stdout.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or_default();
    let (id, cluster) = match line.split_once(';') {
        Some((id, cluster)) => (id, Some(cluster.trim().to_owned())),
        None => (line, None),
    };
    let job = id
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("sbatch --parsable printed {stdout:?}, not a job id"))?;
    Ok(Submitted { job, cluster: cluster.filter(|c| !c.is_empty()) })
}

/// The reason in `sbatch: error: Batch job submission failed: <reason>` (or the whole
/// stderr, trimmed, when it says something else).
pub fn submit_error(stderr: &str) -> String {
    let text = stderr.trim();
    text.lines()
        .rev()
        .find_map(|line| line.split_once("Batch job submission failed:").map(|(_, r)| r.trim()))
        .map_or_else(|| text.to_owned(), str::to_owned)
}

/// What `sbatch --test-only` printed on stderr when the script is accepted:
/// `sbatch: Job N to start at <time> using … in partition P` → the text after `Job N `
/// (N is provisional and means nothing).
pub fn test_only_verdict(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("sbatch: Job ")?;
        let (_, rest) = rest.split_once(' ')?;
        rest.starts_with("to start at").then(|| rest.to_owned())
    })
}

/// A task's state as Slurm names it (`PENDING`, `RUNNING`, `COMPLETED`, `CANCELLED`,
/// `FAILED`, `TIMEOUT`, `OUT_OF_MEMORY`, `NODE_FAIL`, `PREEMPTED`, …): the first word only
/// (`CANCELLED by 0` → `CANCELLED`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskState(pub String);

impl TaskState {
    fn new(text: &str) -> Self {
        Self(text.split_whitespace().next().unwrap_or("UNKNOWN").trim_end_matches('+').to_owned())
    }

    /// Waiting or running: the task may still write.
    pub fn is_active(&self) -> bool {
        matches!(
            self.0.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "REQUEUED"
                | "REQUEUE_FED"
                | "REQUEUE_HOLD"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
                | "SUSPENDED"
                | "STOPPED"
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One array task as `squeue` or `sacct` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// The array's job id.
    pub job: u64,
    /// The task id.
    pub task: u32,
    /// Its state.
    pub state: TaskState,
    /// Why it waits (squeue's `%r`: `Resources`, `Priority`, …), when it says.
    pub reason: Option<String>,
    /// The node(s) it runs or ran on.
    pub nodes: Option<String>,
    /// `status:signal` (sacct's `ExitCode`), once it ended.
    pub exit_code: Option<String>,
    /// Elapsed (squeue's `%M`) or start time (sacct), for people.
    pub time: Option<String>,
}

/// Reads `squeue -h -r -j JOB -o SQUEUE_FORMAT`: one row per task; lines of other jobs or
/// that do not parse are skipped.
pub fn parse_squeue(text: &str) -> Vec<TaskRow> {
    let mut rows = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.split('|').collect();
        let [_, _, array, task, state, reason, _, nodes, elapsed] = fields[..] else { continue };
        let Ok(job) = array.trim().parse::<u64>() else { continue };
        let reason = Some(reason.trim()).filter(|r| !r.is_empty() && *r != "None");
        for task in expand_tasks(task) {
            rows.push(TaskRow {
                job,
                task,
                state: TaskState::new(state),
                reason: reason.map(str::to_owned),
                nodes: non_empty(nodes),
                exit_code: None,
                time: non_empty(elapsed),
            });
        }
    }
    rows
}

/// Reads `sacct -n -P -X -j JOB --format=SACCT_FORMAT`: one row per task, the pending
/// remainder (`3_[2-4]`, possibly throttled `3_[2-4%1]`) expanded; steps (`3_0.batch`) and
/// lines that do not parse are skipped.
pub fn parse_sacct(text: &str) -> Vec<TaskRow> {
    let mut rows = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.split('|').collect();
        // JobID, State, ExitCode are enough (the fixtures' short form); Start, End and
        // NodeList are read when present.
        let [id, state, exit_code, ref rest @ ..] = fields[..] else { continue };
        let start = rest.first().copied().unwrap_or_default();
        let nodes = rest.get(2).copied().unwrap_or_default();
        if id.contains('.') {
            continue;
        }
        let Some((job, tasks)) = id.split_once('_') else { continue };
        let Ok(job) = job.parse::<u64>() else { continue };
        let tasks = tasks.trim_start_matches('[').trim_end_matches(']');
        for task in expand_tasks(tasks) {
            rows.push(TaskRow {
                job,
                task,
                state: TaskState::new(state),
                reason: None,
                nodes: non_empty(nodes).filter(|n| n != "None assigned"),
                exit_code: non_empty(exit_code),
                time: non_empty(start).filter(|s| s != "Unknown"),
            });
        }
    }
    rows
}

/// `2`, `2-4`, `1,3,5-7`, with an optional `%K` throttle: the task ids, in order. Parts that
/// do not parse are left out.
pub fn expand_tasks(spec: &str) -> Vec<u32> {
    let spec = spec.split('%').next().unwrap_or_default();
    let mut tasks = Vec::new();
    for part in spec.split(',').map(str::trim) {
        match part.split_once('-') {
            Some((from, to)) => {
                if let (Ok(from), Ok(to)) = (from.parse::<u32>(), to.parse::<u32>())
                    && from <= to
                {
                    tasks.extend(from..=to);
                }
            }
            None => tasks.extend(part.parse::<u32>().ok()),
        }
    }
    tasks
}

/// Task ids as `sbatch --array` takes them: runs folded (`0-3,5,7-8`).
pub fn array_spec(tasks: &[u32]) -> String {
    let mut sorted = tasks.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}

fn non_empty(text: &str) -> Option<String> {
    Some(text.trim()).filter(|t| !t.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/slurm")
            .join(name);
        fs_err::read_to_string(path).expect("fixture")
    }

    fn summary(rows: &[TaskRow]) -> Vec<(u64, u32, String)> {
        let mut seen: Vec<_> = rows.iter().map(|r| (r.job, r.task, r.state.0.clone())).collect();
        seen.sort();
        seen
    }

    #[test]
    fn sbatch_parsable_with_and_without_a_cluster() {
        assert_eq!(
            parse_submitted(&fixture("sbatch-parsable.out")),
            Ok(Submitted { job: 3, cluster: None })
        );
        assert_eq!(
            parse_submitted("812;gpu-cluster\n"),
            Ok(Submitted { job: 812, cluster: Some("gpu-cluster".into()) })
        );
        assert!(parse_submitted("").is_err());
        assert!(parse_submitted("Submitted batch job 3").is_err());
    }

    #[test]
    fn sbatch_errors_and_test_only() {
        assert_eq!(
            submit_error(&fixture("sbatch-refused.err")),
            "Requested node configuration is not available"
        );
        assert_eq!(submit_error("fatal: something else\n"), "fatal: something else");
        let verdict = test_only_verdict(&fixture("sbatch-test-only.err")).expect("accepted");
        assert!(verdict.starts_with("to start at 2026-12-03T13:25:33"), "{verdict}");
        assert!(verdict.ends_with("in partition debug"), "{verdict}");
        assert_eq!(test_only_verdict(&fixture("sbatch-refused.err")), None);
    }

    #[test]
    fn squeue_rows_key_on_the_array_and_task_not_the_raw_id() {
        let rows = parse_squeue(&fixture("squeue-running-tasks.out"));
        let running = |s: &str| s.to_owned();
        assert_eq!(
            summary(&rows),
            vec![
                (3, 0, running("RUNNING")),
                (3, 1, running("RUNNING")),
                (3, 2, running("PENDING")),
                (3, 3, running("PENDING")),
                (3, 4, running("PENDING")),
            ]
        );
        let task2 = rows.iter().find(|r| r.task == 2).expect("task 2");
        assert_eq!(task2.reason.as_deref(), Some("Resources"));
        assert_eq!(task2.nodes, None);
        let task0 = rows.iter().find(|r| r.task == 0).expect("task 0");
        assert_eq!(
            (task0.nodes.as_deref(), task0.reason.as_deref()),
            (Some("imagelab-node"), None)
        );
        assert_eq!(task0.time.as_deref(), Some("0:04"));
        // After cancels: task 1 and 3 are gone; task 2 runs under raw id 6.
        let after = parse_squeue(&fixture("squeue-after-cancel.out"));
        assert_eq!(
            summary(&after),
            vec![
                (3, 0, running("RUNNING")),
                (3, 2, running("RUNNING")),
                (3, 4, running("PENDING"))
            ]
        );
        assert!(parse_squeue("").is_empty());
    }

    #[test]
    fn sacct_rows_expand_the_pending_remainder_and_drop_steps() {
        // The long recorded format has more fields: read with ours it does not parse, so the
        // tests use the shape ours prints, cut from the recorded lines.
        let recorded = fixture("sacct-after-cancel-parsable.out");
        let ours: String = recorded
            .lines()
            .map(|line| {
                let f: Vec<&str> = line.split('|').collect();
                // JobID,JobIDRaw,JobName,State,ExitCode,Reason,Submit,Start,End,Elapsed,NodeList
                [f[0], f[3], f[4], f[7], f[8], f[10]].join("|") + "\n"
            })
            .collect();
        let rows = parse_sacct(&ours);
        let s = |t: &str| t.to_owned();
        assert_eq!(
            summary(&rows),
            vec![
                (3, 0, s("RUNNING")),
                (3, 1, s("CANCELLED")),
                (3, 2, s("PENDING")),
                (3, 3, s("PENDING")),
                (3, 4, s("PENDING")),
            ]
        );
        let pending = rows.iter().find(|r| r.task == 3).expect("task 3");
        assert_eq!((pending.nodes.as_deref(), pending.time.as_deref()), (None, None));
        let cancelled = rows.iter().find(|r| r.task == 1).expect("task 1");
        assert_eq!(cancelled.nodes.as_deref(), Some("imagelab-node"));
        assert_eq!(cancelled.exit_code.as_deref(), Some("0:0"));
    }

    #[test]
    fn sacct_final_states() {
        // Recorded with JobID,State,ExitCode only.
        let rows = parse_sacct(&fixture("sacct-final-tasks.out"));
        let s = |t: &str| t.to_owned();
        // Task 3 was cancelled while pending: no record at all.
        assert_eq!(
            summary(&rows),
            vec![
                (3, 0, s("COMPLETED")),
                (3, 1, s("CANCELLED")),
                (3, 2, s("FAILED")),
                (3, 4, s("COMPLETED"))
            ]
        );
        assert_eq!(
            rows.iter().find(|r| r.task == 2).and_then(|r| r.exit_code.clone()),
            Some("1:0".into())
        );
        assert!(rows.iter().all(|r| !r.state.is_active()));
    }

    #[test]
    fn task_lists() {
        assert_eq!(expand_tasks("2-4"), vec![2, 3, 4]);
        assert_eq!(expand_tasks("1,3,5-7%2"), vec![1, 3, 5, 6, 7]);
        assert_eq!(expand_tasks("4-2"), Vec::<u32>::new());
        assert_eq!(expand_tasks("x"), Vec::<u32>::new());
        assert_eq!(array_spec(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_spec(&[5, 0, 2, 3, 7, 8]), "0,2-3,5,7-8");
        assert_eq!(array_spec(&[4]), "4");
        assert_eq!(expand_tasks(&array_spec(&[9, 1, 2, 3, 11])), vec![1, 2, 3, 9, 11]);
        assert!(TaskState::new("CANCELLED by 0") == TaskState("CANCELLED".into()));
        assert!(TaskState::new("PENDING").is_active());
    }
}
