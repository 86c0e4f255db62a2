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

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
