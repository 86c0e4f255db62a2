//! Sweeps across machines on Slurm: a plan split into job-array tasks that all write into one
//! shared output folder, coming back as one run folder that looks like a local run.
//!
//! ```text
//! <output root>/
//!   .imagelab/jobs/<id>/…          one persistent-queue job per array task (its share of the plan)
//!   jobs_<slurm job>-<task>.log    each task's jobs log (INSTANCE_ID=<job>_<task>)
//!   <run folder>/                  the sweep folder (a plain run: <time>_slurm, images in the root)
//!     <model>/…                    the images, named as a local run names them
//!     slurm/run.json               the run: tasks → jobs, items, every submission (SlurmRun)
//!     slurm/imagelab.sbatch        the script: readable, editable, resubmittable by hand
//!     slurm/logs/<job>_<task>.out  each task's stdout/stderr
//! ```
//!
//! A task runs `imagelab resume <root> --job <its job>`: the persistent queue (issue 16) does
//! the images of its share not yet on disk and marks items done, so a first run, a requeue
//! after a node failure and a resubmission of unfinished tasks are one command. Tasks are
//! keyed on `<array job>_<task>`, never on Slurm's raw job ids.

pub mod client;
pub mod parse;
pub mod script;
pub mod split;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::queue::UnfinishedJob;
use crate::request::Plan;
use crate::storage::journal::Journal;
use crate::storage::{durable, naming};
use crate::vocab::DeviceChoice;

pub use script::SbatchOptions;

/// The run's Slurm folder inside its run folder.
pub const SLURM_DIR: &str = "slurm";
/// The run file's name in the Slurm folder.
pub const RUN_FILE: &str = "run.json";
/// The tasks' output files' folder in the Slurm folder.
pub const LOG_DIR: &str = "logs";
/// `format` of a run file.
pub const RUN_FORMAT: &str = "imagelab-slurm-run";
/// `version` of the run file this build writes (and the newest it reads).
pub const RUN_VERSION: u32 = 1;
/// The journal writer name of the submitting process.
const SUBMIT_INSTANCE: &str = "slurm-submit";

/// One array task of a run: its share of the plan and its persistent-queue job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTask {
    /// The array task id.
    pub task: u32,
    /// Its persistent-queue job id.
    pub job: String,
    /// The model, or the item range.
    pub label: String,
    /// The plan's item indices it runs.
    pub items: Vec<usize>,
    /// Images in its share.
    pub images: usize,
}

/// One `sbatch` of the run's script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The array job id.
    pub job: u64,
    /// The cluster, when sbatch named one.
    pub cluster: Option<String>,
    /// The task ids it covered (`--array`).
    pub array: String,
    /// RFC 3339 time.
    pub submitted: String,
    /// Its tasks ran with `--retry-failed` (`imagelab resume --retry-failed`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_failed: bool,
}

/// A Slurm run: `slurm/run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlurmRun {
    /// Always [`RUN_FORMAT`].
    pub format: String,
    /// [`RUN_VERSION`].
    pub version: u32,
    /// RFC 3339 time it was planned.
    pub created: String,
    /// The output root (absolute, on the shared file system).
    pub output_root: PathBuf,
    /// The run folder, relative to the output root.
    pub run_dir: PathBuf,
    /// `candle` or `mock`.
    pub backend: String,
    /// The device each task asks for.
    pub device: String,
    /// The imagelab binary the tasks run.
    pub imagelab: PathBuf,
    /// The `#SBATCH` options.
    pub sbatch: SbatchOptions,
    /// Further `imagelab resume` flags of every task (`--for`, `--until`).
    #[serde(default)]
    pub task_args: Vec<String>,
    /// Images in the whole plan.
    pub planned_images: usize,
    /// Every task, by task id (index = task id).
    pub tasks: Vec<RunTask>,
    /// Every submission, oldest first.
    pub submissions: Vec<Submission>,
}

impl SlurmRun {
    /// The run folder (absolute).
    pub fn run_path(&self) -> PathBuf {
        self.output_root.join(&self.run_dir)
    }

    /// The Slurm folder (absolute).
    pub fn slurm_dir(&self) -> PathBuf {
        self.run_path().join(SLURM_DIR)
    }

    /// The script.
    pub fn script(&self) -> PathBuf {
        script::script_path(&self.slurm_dir())
    }

    /// The newest submission that covered task `task`.
    pub fn submission_of(&self, task: u32) -> Option<&Submission> {
        self.submissions
            .iter()
            .rev()
            .find(|submission| parse::expand_tasks(&submission.array).contains(&task))
    }

    /// Reads `slurm_dir/run.json`.
    ///
    /// # Errors
    /// Missing, unreadable, not a run file, or of a newer version (named).
    pub fn read(slurm_dir: &Path) -> io::Result<Self> {
        let path = slurm_dir.join(RUN_FILE);
        let bytes = fs_err::read(&path)?;
        let invalid = |message: String| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {message}", path.display()))
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|err| invalid(err.to_string()))?;
        if value.get("format").and_then(serde_json::Value::as_str) != Some(RUN_FORMAT) {
            return Err(invalid(format!("not an {RUN_FORMAT} file")));
        }
        let version = value.get("version").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if version > u64::from(RUN_VERSION) {
            return Err(invalid(format!(
                "version {version} is newer than this build reads ({RUN_VERSION})"
            )));
        }
        serde_json::from_value(value).map_err(|err| invalid(err.to_string()))
    }

    /// Writes `run.json` whole (temporary file + rename): a reader never sees half of it.
    ///
    /// # Errors
    /// I/O errors name the path.
    pub fn write(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        durable::write_atomic(&self.slurm_dir().join(RUN_FILE), &bytes, durable::process_tag())
    }
}

/// The Slurm folder of `dir`: `dir/slurm` when it holds a run file, or `dir` itself when it
/// is one.
pub fn find_run(dir: &Path) -> Option<PathBuf> {
    [dir.join(SLURM_DIR), dir.to_path_buf()]
        .into_iter()
        .find(|candidate| candidate.join(RUN_FILE).is_file())
}

/// `path` made absolute against the working folder (the tasks run elsewhere).
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| path.to_path_buf(), |cwd| cwd.join(path))
    }
}

/// What [`plan_run`] needs besides the plan.
#[derive(Debug, Clone)]
pub struct RunSetup {
    /// The output root (made absolute here).
    pub output_root: PathBuf,
    /// `candle` or `mock`.
    pub backend: String,
    /// The imagelab binary the tasks run (absolute).
    pub imagelab: PathBuf,
    /// The Hugging Face cache the tasks read.
    pub hub_cache: Option<PathBuf>,
    /// `--tasks`.
    pub tasks: Option<usize>,
    /// The `#SBATCH` options.
    pub sbatch: SbatchOptions,
    /// Further `imagelab resume` flags of every task (`--for 7200s`, `--until 06:00`).
    pub task_args: Vec<String>,
}

/// The device a task asks for: a GPU task sees the GPU(s) Slurm gave it from ordinal 0 on
/// (through `CUDA_VISIBLE_DEVICES`), so `cuda:N` becomes `cuda:0`; the rest as asked.
pub fn task_device(device: DeviceChoice) -> DeviceChoice {
    match device {
        DeviceChoice::Cuda(_) => DeviceChoice::Cuda(0),
        other => other,
    }
}

/// Plans a Slurm run: claims the run folder, splits the plan into tasks, writes one
/// persistent-queue job per task, the script and `run.json` (no submission yet). Nothing is
/// left behind when it fails before the run file is written.
///
/// # Errors
/// A bad `--tasks` or sbatch option (named, before anything is written); I/O errors (named).
pub fn plan_run(mut plan: Plan, setup: &RunSetup) -> Result<SlurmRun, PlanRunError> {
    setup.sbatch.check().map_err(PlanRunError::Usage)?;
    let shares = split::split(&plan, setup.tasks).map_err(PlanRunError::Usage)?;
    fs_err::create_dir_all(&setup.output_root)?;
    let root = fs_err::canonicalize(&setup.output_root)?;
    let now = chrono::Local::now();
    let wanted = plan.run_dir.clone().map_or_else(
        || format!("{}_slurm", now.format("%Y%m%d-%H%M%S")),
        |dir| dir.to_string_lossy().into_owned(),
    );
    let claimed = naming::create_new_dir(&root, &wanted)?;
    if plan.run_dir.is_some() && claimed != wanted {
        plan.set_run_dir(PathBuf::from(&claimed));
    }
    let run_path = root.join(&claimed);
    let written = (|| -> io::Result<SlurmRun> {
        let journal = Journal::open(&root, Some(SUBMIT_INSTANCE))?;
        let cwd = std::env::current_dir().ok();
        let mut tasks = Vec::with_capacity(shares.len());
        for (task, share) in shares.into_iter().enumerate() {
            let items: Vec<_> = plan
                .items
                .iter()
                .filter(|item| share.items.contains(&item.index))
                .cloned()
                .collect();
            let sub = Plan { items, ..plan.clone() };
            let (id, handle) = create_job(&journal, &setup.backend, cwd.clone(), &sub)?;
            drop(handle);
            tasks.push(RunTask {
                task: u32::try_from(task).map_err(io::Error::other)?,
                job: id,
                label: share.label,
                images: sub.image_count(),
                items: share.items,
            });
        }
        let device = task_device(plan.request.device).to_string();
        let run = SlurmRun {
            format: RUN_FORMAT.to_owned(),
            version: RUN_VERSION,
            created: now.to_rfc3339(),
            output_root: root.clone(),
            run_dir: PathBuf::from(&claimed),
            backend: setup.backend.clone(),
            device,
            imagelab: setup.imagelab.clone(),
            sbatch: setup.sbatch.clone(),
            task_args: setup.task_args.clone(),
            planned_images: plan.image_count(),
            tasks,
            submissions: Vec::new(),
        };
        fs_err::create_dir_all(run.slurm_dir().join(LOG_DIR))?;
        write_script(&run, setup.hub_cache.as_deref())?;
        run.write()?;
        Ok(run)
    })();
    written.map_err(|err| {
        // The folder was made just now for this run: nothing else is in it.
        let _ = fs_err::remove_dir_all(&run_path);
        PlanRunError::Io(err)
    })
}

/// A job with a fresh id (ids carry a random part; a clash is retried).
fn create_job(
    journal: &Journal,
    backend: &str,
    cwd: Option<PathBuf>,
    plan: &Plan,
) -> io::Result<(String, crate::storage::journal::JobHandle)> {
    let mut last = None;
    for _ in 0..8 {
        let id = Journal::new_job_id(chrono::Local::now());
        match journal.create_job(&id, backend, cwd.clone(), plan) {
            Ok(handle) => return Ok((id, handle)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free job id")))
}

/// Writes the run's script (every task listed; `--array` all of them).
///
/// # Errors
/// I/O errors name the path.
pub fn write_script(run: &SlurmRun, hub_cache: Option<&Path>) -> io::Result<()> {
    let tasks: Vec<(String, String)> =
        run.tasks.iter().map(|task| (task.job.clone(), task.label.clone())).collect();
    let ids: Vec<u32> = run.tasks.iter().map(|task| task.task).collect();
    let text = script::render(&script::ScriptInput {
        options: &run.sbatch,
        array: &parse::array_spec(&ids),
        imagelab: &run.imagelab,
        output_root: &run.output_root,
        log_dir: &run.slurm_dir().join(LOG_DIR),
        tasks: &tasks,
        backend: &run.backend,
        device: &run.device,
        hub_cache,
        written: &run.created,
        resume_args: &run.task_args,
    });
    let path = run.script();
    durable::write_atomic(&path, text.as_bytes(), durable::process_tag())?;
    set_executable(&path)
}

#[cfg(unix)]
fn set_executable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Submits `tasks` of the run's script (their `imagelab resume` with `--retry-failed` when
/// `retry_failed`) and records the submission in `run.json`. What `imagelab slurm submit`,
/// `imagelab resume RUN_DIR` and the window's "Submit to Slurm" all do.
///
/// # Errors
/// sbatch refused (the run stays written, to fix and submit by hand); the submission could
/// not be recorded.
pub fn submit(
    client: &client::Client,
    run: &mut SlurmRun,
    tasks: &[u32],
    retry_failed: bool,
) -> Result<Submission, SubmitError> {
    let array = parse::array_spec(tasks);
    let array_arg = match run.sbatch.max_parallel {
        Some(k) => format!("--array={array}%{k}"),
        None => format!("--array={array}"),
    };
    let script = run.script();
    let script_args: Vec<String> =
        if retry_failed { vec!["--retry-failed".to_owned()] } else { Vec::new() };
    let submitted =
        client.submit(&script, &[array_arg], &script_args, &run.slurm_dir()).map_err(|err| {
            SubmitError::Refused { why: err, run_dir: run.run_path(), script: script.clone() }
        })?;
    let submission = Submission {
        job: submitted.job,
        cluster: submitted.cluster,
        array,
        submitted: chrono::Local::now().to_rfc3339(),
        retry_failed,
    };
    run.submissions.push(submission.clone());
    run.write().map_err(|err| SubmitError::NotRecorded { job: submission.job, why: err })?;
    Ok(submission)
}

/// Plans a run (see [`plan_run`]) and submits every task of it.
///
/// # Errors
/// As [`plan_run`] (nothing written) and [`submit`] (the run stays written).
pub fn plan_and_submit(
    client: &client::Client,
    plan: Plan,
    setup: &RunSetup,
) -> Result<(SlurmRun, Submission), SubmitError> {
    let mut run = plan_run(plan, setup)?;
    let all: Vec<u32> = run.tasks.iter().map(|task| task.task).collect();
    let submission = submit(client, &mut run, &all, false)?;
    Ok((run, submission))
}

/// Which unfinished jobs of an output folder Slurm may still run: the window offers to
/// resume an array task's job only once its Slurm task is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldBySlurm {
    /// Job ids not to run here now.
    pub held: BTreeSet<String>,
    /// For people: why (per run).
    pub notes: Vec<String>,
}

/// Whether `job` belongs to a Slurm run (its sweep folder holds a run file), cheaply (no
/// Slurm command).
pub fn is_slurm_job(root: &Path, job: &UnfinishedJob) -> bool {
    job.run_dir.as_ref().is_some_and(|dir| find_run(&root.join(dir)).is_some())
}

/// The jobs among `jobs` (of output root `root`) that are array tasks of a Slurm run whose
/// task Slurm still has pending or running (`squeue`). When Slurm cannot be asked (no
/// `squeue` here, no configuration), every submitted task's job of that run is held: a
/// pending task would otherwise start later on a job already taken. A task never submitted
/// (a dry run) or gone from the queue is not held.
pub fn held_by_slurm(client: &client::Client, root: &Path, jobs: &[UnfinishedJob]) -> HeldBySlurm {
    let mut held = HeldBySlurm::default();
    let mut runs: BTreeMap<PathBuf, Vec<&UnfinishedJob>> = BTreeMap::new();
    for job in jobs {
        if let Some(dir) = &job.run_dir {
            runs.entry(dir.clone()).or_default().push(job);
        }
    }
    for (dir, jobs) in runs {
        let Some(slurm_dir) = find_run(&root.join(&dir)) else { continue };
        let run = match SlurmRun::read(&slurm_dir) {
            Ok(run) => run,
            Err(err) => {
                held.notes.push(format!("{err}: its jobs are not offered here"));
                held.held.extend(jobs.iter().map(|job| job.id.clone()));
                continue;
            }
        };
        let mut active = BTreeSet::new();
        let mut unasked = None;
        for submission in &run.submissions {
            match client.queued(submission.job) {
                Ok(rows) => active.extend(
                    rows.iter().filter(|row| row.state.is_active()).map(|row| (row.job, row.task)),
                ),
                Err(err) => {
                    unasked = Some(err);
                    break;
                }
            }
        }
        let mut count = 0;
        for job in jobs {
            let Some(task) = run.tasks.iter().find(|task| task.job == job.id) else { continue };
            let Some(submission) = run.submission_of(task.task) else { continue };
            if unasked.is_some() || active.contains(&(submission.job, task.task)) {
                held.held.insert(job.id.clone());
                count += 1;
            }
        }
        if count == 0 {
            continue;
        }
        let run_path = run.run_path();
        held.notes.push(match unasked {
            Some(err) => format!(
                "{count} job(s) of Slurm run {} not offered: cannot ask Slurm whether they still \
                 run ({err}); `imagelab resume {}` resubmits what is left",
                run_path.display(),
                run_path.display()
            ),
            None => format!(
                "{count} job(s) of Slurm run {} not offered: Slurm still has their tasks pending \
                 or running",
                run_path.display()
            ),
        });
    }
    held
}

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The run could not be planned (nothing was written).
    #[error(transparent)]
    Plan(#[from] PlanRunError),
    /// sbatch refused or is missing; the run is written.
    #[error(
        "{why}; the run is written in {}: fix the script and submit it with `sbatch {}`",
        .run_dir.display(),
        .script.display()
    )]
    Refused {
        /// Slurm's words.
        why: client::ClientError,
        /// The run folder.
        run_dir: PathBuf,
        /// Its script.
        script: PathBuf,
    },
    /// Submitted, but `run.json` could not be updated.
    #[error("submitted as Slurm job {job}, but {why}: status and resume will not know it")]
    NotRecorded {
        /// The array job id.
        job: u64,
        /// The write error.
        why: io::Error,
    },
}

/// Why [`plan_run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanRunError {
    /// A bad option (the message names it); nothing was written.
    #[error("{0}")]
    Usage(String),
    /// The files could not be written.
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::queue;
    use crate::models::catalog::Catalog;
    use crate::request::{Profiles, Request, Sweep, build_plan};

    /// A stand-in `squeue` in a fresh folder printing `out` (or failing like a missing
    /// configuration when `None`).
    fn fake_squeue(dir: &Path, out: Option<&str>) -> client::Client {
        use std::os::unix::fs::PermissionsExt;
        let script = match out {
            Some(text) => format!("#!/bin/sh\nprintf '%s' '{text}'\n"),
            None => "#!/bin/sh\necho 'squeue: error: Could not establish a configuration source' >&2\nexit 1\n".to_owned(),
        };
        let path = dir.join("squeue");
        fs_err::write(&path, script).expect("squeue");
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        client::Client::in_dir(dir)
    }

    #[test]
    fn only_the_jobs_of_tasks_slurm_still_runs_are_held() {
        let out = tempfile::tempdir().expect("tempdir");
        let bin = tempfile::tempdir().expect("tempdir");
        let request = Request {
            prompt: "a fox".into(),
            sweep: Sweep::AllProfiles,
            seed: Some(3),
            ..Request::default()
        };
        let plan = build_plan(
            &request,
            &Profiles::builtin(),
            &Catalog::builtin(),
            chrono::Local::now(),
            || 1,
        )
        .expect("plan");
        let setup = RunSetup {
            output_root: out.path().to_owned(),
            backend: "mock".into(),
            imagelab: PathBuf::from("/usr/bin/imagelab"),
            hub_cache: None,
            tasks: Some(3),
            sbatch: SbatchOptions { job_name: "t".into(), ..SbatchOptions::default() },
            task_args: Vec::new(),
        };
        let mut run = plan_run(plan, &setup).expect("run");
        let root = run.output_root.clone();
        let jobs = queue::unfinished(&root).expect("list");
        assert_eq!(jobs.len(), 3);
        assert!(jobs.iter().all(|job| is_slurm_job(&root, job)));
        // Never submitted (a dry run): nothing held, nothing asked.
        let none = held_by_slurm(&fake_squeue(bin.path(), None), &root, &jobs);
        assert_eq!(none, HeldBySlurm::default());

        run.submissions.push(Submission {
            job: 42,
            cluster: None,
            array: "0-2".into(),
            submitted: String::new(),
            retry_failed: false,
        });
        run.write().expect("write");
        // Task 0 runs, task 1 waits, task 2 is gone from the queue.
        let rows = "42_0|43|42|0|RUNNING|None|gres:gpu:1|node|0:09\n42_1|42|42|1|PENDING|Resources|gres:gpu:1||0:00\n";
        let held = held_by_slurm(&fake_squeue(bin.path(), Some(rows)), &root, &jobs);
        let expected: BTreeSet<String> =
            [run.tasks[0].job.clone(), run.tasks[1].job.clone()].into_iter().collect();
        assert_eq!(held.held, expected);
        assert!(held.notes[0].contains("2 job(s) of Slurm run"), "{:?}", held.notes);
        // The array ended: every job is offered.
        let gone = held_by_slurm(&fake_squeue(bin.path(), Some("")), &root, &jobs);
        assert!(gone.held.is_empty() && gone.notes.is_empty(), "{gone:?}");
        // Slurm cannot be asked: every submitted task's job is held, and the note says why.
        let unasked = held_by_slurm(&fake_squeue(bin.path(), None), &root, &jobs);
        assert_eq!(unasked.held.len(), 3);
        assert!(unasked.notes[0].contains("no Slurm configuration"), "{:?}", unasked.notes);
    }
}
