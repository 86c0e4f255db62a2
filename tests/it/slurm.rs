//! A real single-node Slurm cluster (`scripts/slurm-cluster`: Debian's slurm-wlm, munge and
//! slurmdbd on loopback, two fake GPUs) running a job array of the mock `generate`, the way a
//! Slurm sweep fans out: every task writes into one shared folder with its own jobs log.
//! Skips, saying why, only where a cluster cannot exist (not root, no apt).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use imagelab::storage::jobs_log::{self, ItemStatus, JobRecord};

use crate::util::{parameters_of, pngs_below, repo_root, stderr, stdout};

/// `scripts/slurm-cluster`'s exit code for "this machine cannot run a cluster".
const CANNOT_RUN_HERE: i32 = 77;
const TASKS: u64 = 4;
const BATCH: u64 = 2;

/// The batch script: one array task = one `imagelab generate` into the shared `$OUT`, with its
/// own `INSTANCE_ID` so every task appends to its own jobs log.
const ARRAY_SCRIPT: &str = r#"#!/bin/bash
#SBATCH --job-name=imagelab-mock
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=1
#SBATCH --mem=512M
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail
export INSTANCE_ID="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
echo "task=${SLURM_ARRAY_TASK_ID} instance=${INSTANCE_ID} cuda=${CUDA_VISIBLE_DEVICES-unset}"
exec "$IMAGELAB" generate --backend mock --prompt "a fox, task ${SLURM_ARRAY_TASK_ID}" \
    --width 128 --height 128 --steps 3 --seed $((SLURM_ARRAY_TASK_ID * 100)) --batch 2 \
    --out "$OUT" --json
"#;

/// A running cluster in a temp folder; stopped (folder removed) on drop, also when a test fails.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts one, or returns `None` after saying why this machine cannot run one.
    fn start() -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = Command::new(repo_root().join("scripts/slurm-cluster"))
            .arg("start")
            .arg(dir.path().join("cluster"))
            .output()
            .expect("runs scripts/slurm-cluster");
        match output.status.code() {
            Some(0) => {
                eprintln!("{}", stderr(&output).trim());
                Some(Self { dir })
            }
            Some(CANNOT_RUN_HERE) => {
                eprintln!("skipping the Slurm test, no cluster here: {}", stderr(&output).trim());
                None
            }
            _ => panic!(
                "scripts/slurm-cluster start failed ({}):\n{}",
                output.status,
                stderr(&output)
            ),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    /// A Slurm client command aimed at this cluster, without env-mode variables that would
    /// travel into the jobs (sbatch exports the environment).
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", self.root().join("slurm.conf"));
        for var in imagelab::cli::env_mode::VARIABLES {
            command.env_remove(var);
        }
        command
    }

    /// Runs a client command; its stdout, or its stderr when it failed (a busy slurmctld can
    /// time out a query under load, so pollers retry).
    fn query(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let output = self.client(program).args(args).output().expect("runs a Slurm client");
        if output.status.success() {
            Ok(stdout(&output))
        } else {
            Err(format!("{program} {args:?}: {}", stderr(&output).trim()))
        }
    }

    /// The daemons' log tails, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["slurmctld.log", "slurmd.log", "slurmdbd.log"] {
            let path = self.root().join("log").join(name);
            let Ok(log) = fs_err::read_to_string(&path) else { continue };
            let lines: Vec<&str> = log.lines().collect();
            let _ = writeln!(text, "---- {}", path.display());
            text += &lines[lines.len().saturating_sub(15)..].join("\n");
            text.push('\n');
        }
        text
    }

    fn accounting(&self) -> bool {
        fs_err::read_to_string(self.root().join("slurm.conf"))
            .is_ok_and(|conf| conf.contains("accounting_storage/slurmdbd"))
    }

    /// Whether the fake GPUs are character devices (Slurm sets `CUDA_VISIBLE_DEVICES` only
    /// for those; where mknod is not allowed they are plain files).
    fn gpus_are_devices(&self) -> bool {
        fs_err::metadata(self.root().join("dev/nvidia0"))
            .is_ok_and(|meta| meta.file_type().is_char_device())
    }

    /// Polls `check` every 200 ms until it is `Ok`; after `limit`, panics with its last
    /// `Err` (what it saw) and the cluster's state.
    fn wait_for(&self, what: &str, limit: Duration, mut check: impl FnMut() -> Result<(), String>) {
        let start = Instant::now();
        while let Err(seen) = check() {
            if start.elapsed() > limit {
                let queue = self.client("squeue").output().map(|o| stdout(&o)).unwrap_or_default();
                panic!("{what}: not within {limit:?}; saw {seen}\n{queue}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let stopped = Command::new(repo_root().join("scripts/slurm-cluster"))
            .args(["stop", "--purge"])
            .arg(self.root())
            .output();
        if let Ok(output) = stopped {
            eprintln!("{}", stderr(&output).trim());
        }
    }
}

fn submit(cluster: &Cluster, work: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut command = cluster.client("sbatch");
    command
        .args(extra)
        .arg("--chdir")
        .arg(work)
        .arg(work.join("array.sh"))
        .env("IMAGELAB", env!("CARGO_BIN_EXE_imagelab"))
        .env("OUT", out);
    command.output().expect("runs sbatch")
}

/// A hand-written array of mock `generate`s: every task writes into one shared folder with
/// its own jobs log, sees the GPU Slurm gave it, and sacct accounts for it.
fn job_array_of_mock_generates_writes_every_image_once_with_a_log_line(cluster: &Cluster) {
    let work = cluster.dir.path().join("work");
    let out = work.join("out");
    fs_err::create_dir_all(&out).expect("out folder");
    fs_err::write(work.join("array.sh"), ARRAY_SCRIPT).expect("batch script");

    // --test-only validates the script and the request (gres, memory) without submitting.
    let tested = submit(cluster, &work, &out, &["--test-only"]);
    assert!(tested.status.success(), "{}", stderr(&tested));
    assert!(stderr(&tested).contains("to start at"), "{}", stderr(&tested));

    let submitted = submit(cluster, &work, &out, &["--parsable"]);
    assert!(submitted.status.success(), "{}\n{}", stderr(&submitted), cluster.logs());
    // --parsable prints `<job id>[;<cluster>]`.
    let job: u64 = stdout(&submitted)
        .trim()
        .split(';')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("sbatch --parsable printed {:?}", stdout(&submitted)));
    let job_arg = job.to_string();

    // Done when no task of the array is pending or running any more (once slurmctld purges
    // the finished job, MinJobAge later, squeue -j fails with "Invalid job id specified").
    cluster.wait_for("the array finishes", Duration::from_mins(10), || {
        match cluster.query("squeue", &["-h", "-j", &job_arg, "-o", "%i %T"]) {
            Ok(queued) if queued.trim().is_empty() => Ok(()),
            Ok(queued) => Err(queued),
            Err(error) if error.contains("Invalid job id specified") => Ok(()),
            Err(error) => Err(error),
        }
    });

    let mut logged = BTreeSet::new();
    let mut devices = BTreeSet::new();
    for task in 0..TASKS {
        let instance = format!("{job}_{task}");
        let task_out = fs_err::read_to_string(work.join(format!("slurm-{instance}.out")))
            .unwrap_or_else(|e| panic!("task {task} output: {e}\n{}", cluster.logs()));
        let first = task_out.lines().next().unwrap_or_default();
        assert!(first.starts_with(&format!("task={task} instance={instance} ")), "{task_out}");
        devices.insert(first.rsplit("cuda=").next().unwrap_or_default().to_owned());

        // Each task wrote its own jobs log, one line for its one item.
        let log_path = out.join(jobs_log::log_file_name(Some(&instance)));
        let log = fs_err::read_to_string(&log_path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{task_out}", log_path.display()));
        let records: Vec<JobRecord> = log
            .lines()
            .map(|line| serde_json::from_str(line).expect("a jobs-log record"))
            .collect();
        assert_eq!(records.len(), 1, "{}", log_path.display());
        let record = &records[0];
        assert_eq!(record.status, ItemStatus::Done, "{record:?}");
        let seeds: Vec<u64> = (0..BATCH).map(|i| task * 100 + i).collect();
        assert_eq!(record.seeds, seeds);
        assert_eq!(record.paths.len(), BATCH as usize);
        for (path, seed) in record.paths.iter().zip(&seeds) {
            let png = out.join(path);
            assert!(parameters_of(&png).contains(&format!("Seed: {seed},")), "{}", png.display());
            assert!(logged.insert(png), "{path} logged twice");
        }
    }

    // Every image on disk is logged exactly once, and nothing else was written.
    let on_disk: BTreeSet<PathBuf> = pngs_below(&out).into_iter().collect();
    assert_eq!(on_disk.len(), (TASKS * BATCH) as usize, "{on_disk:?}");
    assert_eq!(on_disk, logged);
    let all = jobs_log::read_all(&out).expect("jobs logs");
    assert_eq!((all.records.len(), all.damaged.len()), (TASKS as usize, 0));

    // The fake GPUs: each task saw the one Slurm gave it.
    if cluster.gpus_are_devices() {
        assert!(devices.iter().all(|d| d == "0" || d == "1"), "{devices:?}");
    } else {
        eprintln!("fake GPUs are plain files here: CUDA_VISIBLE_DEVICES not checked ({devices:?})");
    }

    // sacct reports every array task (records reach slurmdbd a few seconds after the end).
    if cluster.accounting() {
        let expected: BTreeSet<String> =
            (0..TASKS).map(|task| format!("{job}_{task}|COMPLETED|0:0")).collect();
        cluster.wait_for("sacct lists every task", Duration::from_mins(2), || {
            let format = "--format=JobID,State,ExitCode";
            let text = cluster.query("sacct", &["-n", "-P", "-X", "-j", &job_arg, format])?;
            let seen: BTreeSet<String> = text.lines().map(str::to_owned).collect();
            if seen == expected { Ok(()) } else { Err(format!("{seen:?}")) }
        });
    }
}

/// One cluster for every Slurm check (a start costs 10–17 s here): a hand-written array, then
/// `imagelab slurm submit` of an all-profiles and an all-models sweep side by side, a
/// `--dry-run`, and a task cancelled midway and resubmitted by `imagelab resume`.
#[test]
fn slurm_sweeps_on_a_real_cluster() {
    let Some(cluster) = Cluster::start() else { return };
    job_array_of_mock_generates_writes_every_image_once_with_a_log_line(&cluster);
    dry_run_writes_a_script_sbatch_accepts_and_submits_nothing(&cluster);
    sweeps_submitted_together_come_back_as_local_runs(&cluster);
    a_task_cancelled_midway_is_resubmitted_by_resume(&cluster);
    failed_items_are_resubmitted_by_resume_retry_failed(&cluster);
    a_time_limited_task_stops_taking_images_and_leaves_the_rest_queued(&cluster);
}

/// `slurm submit --for`: each task runs `imagelab resume … --for`, takes no new image after
/// the limit, ends without failing, and leaves the rest in the queue (here finished locally).
fn a_time_limited_task_stops_taking_images_and_leaves_the_rest_queued(cluster: &Cluster) {
    let out = cluster.dir.path().join("time-limit");
    let out_arg = out.to_string_lossy().into_owned();
    // One task of 30 images of 0.8 s each (8 steps × 100 ms), stopped after 4 s.
    let args =
        sweep_args(&out_arg, "8", &["--all-profiles", "--tasks", "1", "--for", "4s", "--json"]);
    let slow = [("IMAGELAB_MOCK_STEP_MS", "100")];
    let (run_dir, job) = submitted_run(&lab(cluster, &args, &slow));
    let job = job.expect("job id");
    let run = read_run(&run_dir);
    assert_eq!(run.task_args, ["--for", "4s"]);
    wait_until_gone(cluster, job);
    let task_out =
        fs_err::read_to_string(run.slurm_dir().join("logs").join(format!("{job}_0.out")))
            .expect("task output");
    assert!(task_out.contains("time limit reached"), "{task_out}");
    let status = status_json(cluster, &run_dir);
    let done = status["done_images"].as_u64().expect("done");
    assert!(done >= 1 && done < run.planned_images as u64, "{status:#}");
    assert_eq!(status["unfinished_tasks"], serde_json::json!([0]), "{status:#}");
    assert_eq!(status["failed_items"], 0, "{status:#}");
    if cluster.accounting() {
        // Ended by its time limit, not failed: exit 0.
        cluster.wait_for("sacct has the task", Duration::from_mins(2), || {
            let now = status_json(cluster, &run_dir);
            match now["tasks"][0]["slurm_state"].as_str() {
                Some("COMPLETED") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }
    // What is left runs here; every image once in the end.
    let run_arg = run_dir.to_string_lossy().into_owned();
    let local = lab(cluster, &["resume", &run_arg, "--local", "--backend", "mock"], &[]);
    assert!(local.status.success(), "{}", stderr(&local));
    check_every_image_once(&read_run(&run_dir));
}

/// `imagelab` aimed at the cluster (sbatch exports this environment into the tasks).
fn lab(cluster: &Cluster, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = crate::util::imagelab();
    command.env("SLURM_CONF", cluster.root().join("slurm.conf")).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("runs imagelab")
}

/// The request of a small mock sweep, as `generate` and `slurm submit` both take it.
fn request_args<'a>(out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "--backend",
        "mock",
        "--device",
        "cpu",
        "--prompt",
        "a red fox",
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        steps,
        "--seed",
        "500",
        "--out",
        out,
    ]
}

/// `slurm submit` of that request, sized for a 2-CPU test node, plus `extra`.
fn sweep_args<'a>(out: &'a str, steps: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["slurm", "submit"];
    args.extend(request_args(out, steps));
    args.extend(["--cpus-per-task", "1", "--mem", "256M"]);
    args.extend_from_slice(extra);
    args
}

fn read_run(run_dir: &Path) -> imagelab::slurm::SlurmRun {
    imagelab::slurm::SlurmRun::read(&run_dir.join("slurm")).expect("run.json")
}

/// The run folder `submit` printed (`--json`).
fn submitted_run(output: &Output) -> (PathBuf, Option<u64>) {
    assert!(output.status.success(), "{}", stderr(output));
    let value: serde_json::Value = serde_json::from_str(stdout(output).trim())
        .unwrap_or_else(|e| panic!("{e}: {}", stdout(output)));
    let dir = PathBuf::from(value["run_dir"].as_str().expect("run_dir"));
    (dir, value["job"].as_u64())
}

/// Waits until no task of Slurm job `job` is queued.
fn wait_until_gone(cluster: &Cluster, job: u64) {
    let job_arg = job.to_string();
    cluster.wait_for(&format!("Slurm job {job} ends"), Duration::from_mins(10), || {
        match cluster.query("squeue", &["-h", "-j", &job_arg, "-o", "%i %T"]) {
            Ok(queued) if queued.trim().is_empty() => Ok(()),
            Ok(queued) => Err(queued),
            Err(error) if error.contains("Invalid job id specified") => Ok(()),
            Err(error) => Err(error),
        }
    });
}

fn status_json(cluster: &Cluster, run_dir: &Path) -> serde_json::Value {
    let run = run_dir.to_string_lossy();
    let output = lab(cluster, &["slurm", "status", &run, "--json"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str(stdout(&output).trim()).expect("status JSON")
}

/// Every planned image of the run is on disk exactly once and listed by exactly one line of
/// the tasks' jobs logs (`jobs_<job>-<task>.log`); returns the images, relative to the root.
fn check_every_image_once(run: &imagelab::slurm::SlurmRun) -> BTreeSet<String> {
    let root = &run.output_root;
    let jobs: BTreeSet<&str> = run.tasks.iter().map(|t| t.job.as_str()).collect();
    let all = jobs_log::read_all(root).expect("jobs logs");
    assert!(all.damaged.is_empty(), "{:?}", all.damaged);
    let mut logged = BTreeSet::new();
    for record in
        all.records.iter().filter(|r| r.job_id.as_deref().is_some_and(|j| jobs.contains(j)))
    {
        for path in &record.paths {
            assert!(logged.insert(path.clone()), "{path} is in two jobs-log lines");
        }
    }
    let on_disk: BTreeSet<String> = pngs_below(&run.run_path())
        .iter()
        .map(|p| p.strip_prefix(root).expect("below root").to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_disk.len(), run.planned_images, "{on_disk:?}");
    assert_eq!(on_disk, logged, "every image on disk has one log line, and the reverse");
    // Each submission's tasks wrote their own jobs log, named by INSTANCE_ID=<job>_<task>.
    for submission in &run.submissions {
        for task in imagelab::slurm::parse::expand_tasks(&submission.array) {
            let name = jobs_log::log_file_name(Some(&format!("{}_{task}", submission.job)));
            assert!(root.join(&name).is_file(), "{name} missing");
        }
    }
    on_disk
}

/// A name without its leading `YYYYmmdd-HHMMSS_` time (file and sweep folder names carry one).
fn timeless(name: &str) -> String {
    let (head, rest) = name.split_at(name.len().min(16));
    if head.len() == 16 && head.as_bytes()[8] == b'-' && head.ends_with('_') {
        rest.to_owned()
    } else {
        name.to_owned()
    }
}

/// `run folder/model/file` with the times taken out, and the file's A1111 parameters.
fn shape(root: &Path, images: &BTreeSet<String>) -> BTreeSet<(String, String)> {
    images
        .iter()
        .map(|relative| {
            let parts: Vec<String> = relative.split('/').map(timeless).collect();
            (parts.join("/"), parameters_of(&root.join(relative)))
        })
        .collect()
}

fn dry_run_writes_a_script_sbatch_accepts_and_submits_nothing(cluster: &Cluster) {
    let out = cluster.dir.path().join("dry");
    let out_arg = out.to_string_lossy().into_owned();
    let output =
        lab(cluster, &sweep_args(&out_arg, "2", &["--batch", "3", "--dry-run", "--json"]), &[]);
    let (run_dir, job) = submitted_run(&output);
    assert_eq!(job, None);
    assert!(stderr(&output).contains("sbatch --test-only: to start at"), "{}", stderr(&output));
    let run = read_run(&run_dir);
    assert!(run.submissions.is_empty());
    assert_eq!((run.tasks.len(), run.planned_images), (1, 3));
    let script = fs_err::read_to_string(run.script()).expect("script");
    assert!(
        script.contains("#SBATCH --gres=gpu:1") && script.contains("--backend mock"),
        "{script}"
    );
    assert!(pngs_below(&out).is_empty(), "a dry run makes no image");
    let status = status_json(cluster, &run_dir);
    assert_eq!(status["tasks"][0]["slurm_id"], serde_json::Value::Null);
    assert_eq!(status["done_images"], 0);
}

fn sweeps_submitted_together_come_back_as_local_runs(cluster: &Cluster) {
    let out = cluster.dir.path().join("sweeps");
    let out_arg = out.to_string_lossy().into_owned();
    let profiles_args =
        sweep_args(&out_arg, "2", &["--all-profiles", "--batch", "2", "--tasks", "3", "--json"]);
    let (profiles_dir, profiles_job) = submitted_run(&lab(cluster, &profiles_args, &[]));
    let models_args = sweep_args(&out_arg, "2", &["--all-models", "--json"]);
    let (models_dir, models_job) = submitted_run(&lab(cluster, &models_args, &[]));
    let (Some(profiles_job), Some(models_job)) = (profiles_job, models_job) else {
        panic!("no job ids")
    };
    wait_until_gone(cluster, profiles_job);
    wait_until_gone(cluster, models_job);

    let catalog = imagelab::models::catalog::Catalog::builtin();
    let profiles = imagelab::request::Profiles::builtin().all().len();
    for (run_dir, tasks, images) in [
        (&profiles_dir, 3, profiles * 2),
        (&models_dir, catalog.sweep_models().len(), catalog.sweep_models().len() * profiles),
    ] {
        let run = read_run(run_dir);
        assert_eq!((run.tasks.len(), run.planned_images), (tasks, images));
        let slurm_out = fs_err::read_to_string(
            run.slurm_dir().join("logs").join(format!("{}_0.out", run.submissions[0].job)),
        )
        .expect("task 0's output");
        assert!(
            slurm_out.contains(&format!("instance {}_0", run.submissions[0].job)),
            "{slurm_out}"
        );
        if cluster.gpus_are_devices() {
            assert!(slurm_out.contains("cuda=0") || slurm_out.contains("cuda=1"), "{slurm_out}");
        }
        check_every_image_once(&run);
        let status = status_json(cluster, run_dir);
        assert_eq!(status["done_images"], images);
        assert_eq!(status["unfinished_tasks"], serde_json::json!([]));
        assert_eq!(status["failed_items"], 0);
    }
    // An all-models sweep: one task per model, each loading only its model.
    let models_run = read_run(&models_dir);
    for (task, model) in models_run.tasks.iter().zip(catalog.sweep_models()) {
        assert_eq!(task.label, model.display_name);
    }

    // The same request run locally gives the same folders, names and metadata.
    let local = cluster.dir.path().join("local");
    let local_arg = local.to_string_lossy().into_owned();
    let mut args = vec!["generate"];
    args.extend(request_args(&local_arg, "2"));
    args.extend(["--all-profiles", "--batch", "2"]);
    let ran = crate::util::imagelab().args(&args).output().expect("local run");
    assert!(ran.status.success(), "{}", stderr(&ran));
    let local_images: BTreeSet<String> = pngs_below(&local)
        .iter()
        .map(|p| p.strip_prefix(&local).expect("below").to_string_lossy().into_owned())
        .collect();
    let slurm_run = read_run(&profiles_dir);
    let slurm_images = check_every_image_once(&slurm_run);
    assert_eq!(shape(&slurm_run.output_root, &slurm_images), shape(&local, &local_images));

    // sacct has every task COMPLETED; status reports it (records reach slurmdbd late).
    if cluster.accounting() {
        cluster.wait_for("status shows sacct's COMPLETED", Duration::from_mins(2), || {
            let now = status_json(cluster, &models_dir);
            let states: Vec<String> = now["tasks"]
                .as_array()
                .expect("tasks")
                .iter()
                .map(|t| t["slurm_state"].as_str().unwrap_or("none").to_owned())
                .collect();
            if states.iter().all(|s| s == "COMPLETED") {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        });
    }
}

fn a_task_cancelled_midway_is_resubmitted_by_resume(cluster: &Cluster) {
    let out = cluster.dir.path().join("cancel");
    let out_arg = out.to_string_lossy().into_owned();
    // Two tasks of 0.8 s images (8 steps × 100 ms): slow enough to cancel task 1 midway.
    let args = sweep_args(&out_arg, "8", &["--all-profiles", "--tasks", "2", "--json"]);
    let slow = [("IMAGELAB_MOCK_STEP_MS", "100")];
    let (run_dir, job) = submitted_run(&lab(cluster, &args, &slow));
    let job = job.expect("job id");
    let run = read_run(&run_dir);
    let task1 = run.tasks[1].clone();
    cluster.wait_for("task 1 saved an image", Duration::from_mins(5), || {
        let state = imagelab::engine::queue::JobState::read(&run.output_root, &task1.job)
            .map_err(|e| e.to_string())?;
        if state.images.len() >= 2 {
            Ok(())
        } else {
            Err(format!("{} image(s)", state.images.len()))
        }
    });
    let run_arg = run_dir.to_string_lossy().into_owned();
    let cancelled = lab(cluster, &["slurm", "cancel", &run_arg, "--task", "1"], &[]);
    assert!(cancelled.status.success(), "{}", stderr(&cancelled));
    assert!(stderr(&cancelled).contains(&format!("cancelled {job}_1")), "{}", stderr(&cancelled));
    wait_until_gone(cluster, job);

    let status = status_json(cluster, &run_dir);
    assert_eq!(status["unfinished_tasks"], serde_json::json!([1]), "{status:#}");
    let done = status["done_images"].as_u64().expect("done");
    assert!(done < run.planned_images as u64 && done >= 2, "{status:#}");
    // What was made before the cancel is logged once already.
    let text = lab(cluster, &["slurm", "status", &run_arg], &[]);
    assert!(stdout(&text).contains("1 task(s) with work left (1)"), "{}", stdout(&text));

    // resume resubmits only task 1; it makes only the images not on disk.
    let resumed = lab(cluster, &["resume", &run_arg, "--json"], &[]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let value: serde_json::Value = serde_json::from_str(stdout(&resumed).trim()).expect("json");
    assert_eq!(value["tasks"], serde_json::json!([1]));
    let second = value["job"].as_u64().expect("second job");
    assert_ne!(second, job);
    wait_until_gone(cluster, second);
    let run = read_run(&run_dir);
    assert_eq!(run.submissions.len(), 2);
    assert_eq!(run.submissions[1].array, "1");
    check_every_image_once(&run);
    let status = status_json(cluster, &run_dir);
    assert_eq!(status["unfinished_tasks"], serde_json::json!([]));
    assert_eq!(status["tasks"][1]["slurm_id"], format!("{second}_1"));
    // Nothing left: a second resume submits nothing.
    let again = lab(cluster, &["resume", &run_arg], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("nothing to resubmit"), "{}", stderr(&again));
}

fn failed_items_are_resubmitted_by_resume_retry_failed(cluster: &Cluster) {
    let out = cluster.dir.path().join("retry");
    let out_arg = out.to_string_lossy().into_owned();
    let args =
        sweep_args(&out_arg, "2", &["--all-profiles", "--batch", "2", "--tasks", "3", "--json"]);
    // Only the Tim Burton profile's suffix holds these words: one item fails in its task
    // (sbatch hands this environment to the tasks).
    let failing = [("IMAGELAB_MOCK_FAIL_PROMPT", "gothic fairytale")];
    let (run_dir, job) = submitted_run(&lab(cluster, &args, &failing));
    wait_until_gone(cluster, job.expect("job id"));
    let run_arg = run_dir.to_string_lossy().into_owned();
    let status = status_json(cluster, &run_dir);
    assert_eq!(status["failed_items"], 1, "{status:#}");
    assert_eq!(status["unfinished_tasks"], serde_json::json!([]), "{status:#}");
    let failed_task = status["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|task| task["items_failed"] == 1)
        .and_then(|task| task["task"].as_u64())
        .expect("the task with the failure");
    let text = lab(cluster, &["slurm", "status", &run_arg], &[]);
    assert!(stdout(&text).contains("--retry-failed"), "{}", stdout(&text));
    // A plain resume has nothing to do: failed items run again only when asked.
    let plain = lab(cluster, &["resume", &run_arg], &[]);
    assert!(stderr(&plain).contains("nothing to resubmit"), "{}", stderr(&plain));

    // Without the failure injection now: only the task with the failure is resubmitted.
    let retried = lab(cluster, &["resume", &run_arg, "--retry-failed", "--json"], &[]);
    assert!(retried.status.success(), "{}", stderr(&retried));
    let value: serde_json::Value = serde_json::from_str(stdout(&retried).trim()).expect("json");
    assert_eq!(value["tasks"], serde_json::json!([failed_task]));
    let second = value["job"].as_u64().expect("second job");
    wait_until_gone(cluster, second);
    let run = read_run(&run_dir);
    assert_eq!(run.submissions.len(), 2);
    assert!(run.submissions[1].retry_failed && !run.submissions[0].retry_failed);
    // Every image once, each listed by one line; the item has its failed line, then its done one.
    check_every_image_once(&run);
    let logs = jobs_log::read_all(&run.output_root).expect("logs");
    let task_job = &run.tasks[failed_task as usize].job;
    let statuses: Vec<ItemStatus> = logs
        .records
        .iter()
        .filter(|r| r.job_id.as_deref() == Some(task_job.as_str()) && r.profile == "Tim Burton")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![ItemStatus::Failed, ItemStatus::Done]);
    let status = status_json(cluster, &run_dir);
    assert_eq!(
        (status["failed_items"].as_u64(), status["done_images"].as_u64()),
        (Some(0), Some(run.planned_images as u64)),
        "{status:#}"
    );
    let again = lab(cluster, &["resume", &run_arg, "--retry-failed"], &[]);
    assert!(stderr(&again).contains("nothing to resubmit"), "{}", stderr(&again));
}

/// Refusals that need no cluster: each names its flag or folder, exits 2 (1 for a missing
/// sbatch) and writes nothing.
#[test]
fn bad_slurm_requests_are_refused_before_anything_is_written() {
    let out = tempfile::tempdir().expect("tempdir");
    let out_arg = out.path().to_string_lossy().into_owned();
    let no_slurm = tempfile::tempdir().expect("tempdir");
    let cases: [(&[&str], &str, i32); 10] = [
        (&["--all-profiles", "--tasks", "0", "--dry-run"], "--tasks: 0 task(s)", 2),
        // Runner flags a Slurm run cannot honour say why, and what to use instead.
        (&["--gpus", "0,1", "--dry-run"], "--gpus: not on Slurm: Slurm gives each task", 2),
        (&["--max-util", "20", "--dry-run"], "--max-util: not on Slurm", 2),
        (&["--templates", "t.ron", "--jobs", "5", "--dry-run"], "--templates: not on Slurm", 2),
        (&["--max-failures", "2", "--dry-run"], "--retry-failed", 2),
        (&["--until", "25:00", "--dry-run"], "--until:", 2),
        (&["--all-models", "--tasks", "3", "--dry-run"], "--tasks: an all-models sweep", 2),
        (&["--qos", "high\n#SBATCH --uid=0", "--dry-run"], "--qos:", 2),
        (&["--sbatch-arg=--array=0-9", "--dry-run"], "--max-parallel", 2),
        // No sbatch on PATH (and not a dry run): said before any file is written.
        (&[], "sbatch not found on PATH", 1),
    ];
    for (extra, expected, code) in cases {
        let args = sweep_args(&out_arg, "2", extra);
        let output = crate::util::imagelab()
            .args(&args)
            .env("PATH", no_slurm.path())
            .output()
            .expect("runs imagelab");
        assert_eq!(output.status.code(), Some(code), "{extra:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{extra:?}: {}", stderr(&output));
        assert!(crate::util::files_below(out.path()).is_empty(), "{extra:?} wrote files");
    }
    let status = crate::util::imagelab()
        .args(["slurm", "status", &out_arg])
        .output()
        .expect("runs imagelab");
    assert_eq!(status.status.code(), Some(2));
    assert!(stderr(&status).contains("is not a Slurm run"), "{}", stderr(&status));
}

/// `--for`/`--until` reach every task's `imagelab resume` line in the script (a dry run with
/// no sbatch here writes the run without submitting).
#[test]
fn time_limits_are_written_into_every_task_of_the_script() {
    let out = tempfile::tempdir().expect("tempdir");
    let out_arg = out.path().to_string_lossy().into_owned();
    let no_slurm = tempfile::tempdir().expect("tempdir");
    let args = sweep_args(
        &out_arg,
        "2",
        &[
            "--all-profiles",
            "--tasks",
            "2",
            "--for",
            "1h30m",
            "--until",
            "06:00",
            "--dry-run",
            "--json",
        ],
    );
    let output =
        crate::util::imagelab().args(&args).env("PATH", no_slurm.path()).output().expect("runs");
    let (run_dir, job) = submitted_run(&output);
    assert_eq!(job, None);
    let run = read_run(&run_dir);
    assert_eq!(run.task_args, ["--for", "5400s", "--until", "06:00"]);
    let script = fs_err::read_to_string(run.script()).expect("script");
    let exec = script.lines().find(|l| l.starts_with("exec ")).expect("exec line");
    assert!(exec.ends_with("--device cpu --for 5400s --until 06:00 \"$@\""), "{exec}");
    // The flags parse as resume's: the same words work by hand.
    let listed = crate::util::imagelab()
        .args(["resume", &out_arg, "--list", "--local", "--for", "5400s", "--until", "06:00"])
        .output()
        .expect("runs");
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert_eq!(stdout(&listed).lines().count(), 2, "{}", stdout(&listed));
}

/// A Slurm task's `resume --job ID` waits while another process holds its job for a moment
/// (array tasks starting together each settle the folder's idle jobs, claiming each briefly),
/// instead of ending "completed" having done nothing.
#[test]
fn a_task_waits_for_its_job_while_another_process_holds_it() {
    let out = tempfile::tempdir().expect("tempdir");
    let out_arg = out.path().to_string_lossy().into_owned();
    let mut args = vec!["generate"];
    args.extend(request_args(&out_arg, "2"));
    args.extend(["--batch", "2", "--queue-only"]);
    let queued = crate::util::imagelab().args(&args).output().expect("runs");
    assert!(queued.status.success(), "{}", stderr(&queued));
    let id = stdout(&queued).trim().to_owned();
    let lock_path = imagelab::storage::journal::job_dir(out.path(), &id).join("owner.lock");
    let held =
        imagelab::storage::durable::try_lock_exclusive(&lock_path).expect("lock").expect("free");
    let task = crate::util::imagelab()
        .args(["resume", &out_arg, "--job", &id, "--backend", "mock"])
        .env("INSTANCE_ID", "7_0")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(pngs_below(out.path()).is_empty(), "nothing made while the job is held");
    drop(held);
    let done = task.wait_with_output().expect("ends");
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert_eq!(pngs_below(out.path()).len(), 2, "{}", stderr(&done));
    assert!(out.path().join(jobs_log::log_file_name(Some("7_0"))).is_file());
}
