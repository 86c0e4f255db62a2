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

#[test]
fn job_array_of_mock_generates_writes_every_image_once_with_a_log_line() {
    let Some(cluster) = Cluster::start() else { return };
    let work = cluster.dir.path().join("work");
    let out = work.join("out");
    fs_err::create_dir_all(&out).expect("out folder");
    fs_err::write(work.join("array.sh"), ARRAY_SCRIPT).expect("batch script");

    // --test-only validates the script and the request (gres, memory) without submitting.
    let tested = submit(&cluster, &work, &out, &["--test-only"]);
    assert!(tested.status.success(), "{}", stderr(&tested));
    assert!(stderr(&tested).contains("to start at"), "{}", stderr(&tested));

    let submitted = submit(&cluster, &work, &out, &["--parsable"]);
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
