//! The real binary killed with SIGKILL at random points, then resumed; a disk that fills up in
//! the middle of a sweep; a jobs log that cannot be written (issue 16). Checked after the next
//! start: every image complete and made once, no temporary file, every log line valid, every
//! image in exactly one line, the plan complete.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use imagelab::storage::journal;
use imagelab::storage::metadata::{JobRef, png_io};

use crate::engine::assert_no_temp_files;
use crate::queue::assert_logs_cover_every_image_once;
use crate::util::{imagelab, stderr, stdout};

/// The plan every test here runs: all profiles × 2 images, small and quick with the mock.
fn generate(out: &Path, width_px: u32) -> Command {
    let mut command = imagelab();
    command
        .args(["generate", "--backend", "mock", "--all-profiles", "--prompt", "crash test"])
        .args(["--steps", "2", "--seed", "5", "--batch", "2", "--json", "--out"])
        .arg(out)
        .args(["--width", &width_px.to_string(), "--height", &width_px.to_string()])
        .env("IMAGELAB_MOCK_STEP_MS", STEP_MS);
    command
}

/// Mock step time: long enough that a whole run (58 items × 2 images × 2 steps) outlasts the
/// kill delays below even on an idle fast machine (at 1 ms a run ended in 0.4 s, before the
/// first kill), short enough that the test stays a few seconds.
const STEP_MS: &str = "10";

fn resume(out: &Path) -> Command {
    let mut command = imagelab();
    command.args(["resume", "--json"]).arg(out).env("IMAGELAB_MOCK_STEP_MS", STEP_MS);
    command
}

fn plan_items() -> usize {
    imagelab::request::Profiles::builtin().all().len()
}

/// Every image below `out` decodes completely; returns them by the (job, item, seed) their
/// own metadata names, asserting that none is there twice.
fn every_image_once(out: &Path) -> BTreeMap<(String, usize, u64), String> {
    let mut images = BTreeMap::new();
    for png in crate::util::pngs_below(out) {
        let bytes = fs_err::read(&png).expect("read");
        image::load_from_memory(&bytes).unwrap_or_else(|err| panic!("{}: {err}", png.display()));
        let info = png_io::read_generation_info(&bytes).expect("chunks").expect("our metadata");
        let JobRef { id, item } = info.job.expect("a job reference");
        let earlier = images.insert((id, item, info.seed), png.display().to_string());
        assert!(earlier.is_none(), "made twice: {earlier:?} and {}", png.display());
    }
    images
}

#[test]
fn kill_9_at_random_points_then_resume_makes_the_whole_plan_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let seed = 16;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kills = 0;
    for iteration in 0..16 {
        // Until a job file exists, `generate` (a kill may land before it is written).
        let started = !journal::job_ids(&out).unwrap_or_default().is_empty();
        let mut command = if started { resume(&out) } else { generate(&out, 64) };
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("runs");
        let delay_ms = if iteration == 0 { 400 } else { rng.u64(10..350) };
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().expect("status").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let status = child.wait().expect("reaped");
        if status.success() && started {
            break;
        }
    }
    eprintln!("crash test: seed {seed}, {kills} kill(s)");
    assert!(kills >= 3, "only {kills} kill(s) landed: the test proves little");
    let output = resume(&out).output().expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    serde_json::from_str::<serde_json::Value>(stdout(&output).trim()).expect("a JSON summary");

    let ids = journal::job_ids(&out).expect("jobs");
    assert_eq!(ids.len(), 1, "one job: {ids:?}");
    let images = every_image_once(&out);
    assert_eq!(images.len(), 2 * plan_items(), "the whole plan");
    for (job, item, seed) in images.keys() {
        assert!(*job == ids[0] && *item < plan_items() && (5..=6).contains(seed));
    }
    assert_logs_cover_every_image_once(&out, plan_items());
    assert_no_temp_files(&out);
    let again = resume(&out).output().expect("runs");
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(crate::util::pngs_below(&out).len(), 2 * plan_items(), "nothing made twice");
}

#[test]
fn a_full_disk_loses_nothing_saved_and_resume_finishes_once_there_is_room() {
    // A private mount namespace, so the small tmpfs needs no clean-up and touches nothing else.
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|status| status.success()) {
        eprintln!("skipping the full-disk test: cannot make a mount namespace here (unshare -m)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let full = dir.path().join("full");
    let freed = dir.path().join("freed");
    for folder in [&out, &full, &freed] {
        fs_err::create_dir(folder).expect("mkdir");
    }
    let script = r#"
        mount -t tmpfs -o size=400k tmpfs "$OUT" || exit 77
        "$@" generate --backend mock --all-profiles --prompt "disk full" --steps 1 \
            --width 256 --height 256 --seed 9 --batch 2 --json --out "$OUT" >"$FULL.json" 2>"$FULL.err"
        echo $? >"$FULL.rc"
        cp -a "$OUT/." "$FULL/"
        mount -o remount,size=64m "$OUT"
        "$@" resume --json "$OUT" >"$FREED.json" 2>"$FREED.err"
        echo $? >"$FREED.rc"
        cp -a "$OUT/." "$FREED/"
    "#;
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(env!("CARGO_BIN_EXE_imagelab"))
        .env("OUT", &out)
        .env("FULL", &full)
        .env("FREED", &freed)
        .env("IMAGELAB_MOCK_STEP_MS", "0")
        .env_remove("IMAGELAB_BACKEND")
        .env_remove("IMAGELAB_OUTPUT_DIR")
        .status()
        .expect("unshare runs");
    if status.code() == Some(77) {
        eprintln!("skipping the full-disk test: cannot mount a tmpfs here");
        return;
    }
    assert!(status.success(), "the script failed: {status}");
    let read = |name: &str| fs_err::read_to_string(dir.path().join(name)).expect(name);

    // Full: the run stops, says why, exits 1; what was saved is complete and logged or
    // recoverable; no temporary file is left.
    let err = read("full.err");
    assert_eq!(read("full.rc").trim(), "1", "{err}");
    assert!(err.contains("disk full"), "{err}");
    let saved = every_image_once(&full);
    assert!(!saved.is_empty() && saved.len() < 2 * plan_items(), "{} saved", saved.len());
    assert_no_temp_files(&full);
    let log = imagelab::storage::jobs_log::read_all(&full).expect("log");
    assert!(log.damaged.is_empty(), "no torn or glued line: {:?}", log.damaged);

    // Freed: resume makes the rest, once each, and logs every image.
    assert_eq!(read("freed.rc").trim(), "0", "{}", read("freed.err"));
    let images = every_image_once(&freed);
    assert_eq!(images.len(), 2 * plan_items());
    for (key, path) in &saved {
        let relative = Path::new(path).strip_prefix(&full).expect("inside");
        assert_eq!(
            images.get(key).map(|p| Path::new(p).strip_prefix(&freed).expect("inside")),
            Some(relative),
            "an image saved before the disk filled is kept as it was"
        );
    }
    assert_logs_cover_every_image_once(&freed, plan_items());
    assert_no_temp_files(&freed);
}

#[test]
fn a_run_whose_jobs_log_cannot_be_written_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    // A folder where the log file should be: every append fails.
    fs_err::create_dir_all(out.join("jobs.log")).expect("mkdir");
    let output = imagelab()
        .args(["generate", "--backend", "mock", "--prompt", "unlogged", "--steps", "1"])
        .args(["--width", "64", "--height", "64", "--json", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("jobs log not written"), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_str(stdout(&output).trim()).expect("json");
    assert!(summary["errors"][0].as_str().is_some_and(|e| e.contains("jobs log not written")));
    assert_eq!(crate::util::pngs_below(&out).len(), 1, "the image itself is kept");
}

/// Waits for a line containing `needle` on a child's stderr (read on a thread), returning the
/// reader's channel for the rest.
fn stderr_lines(child: &mut std::process::Child) -> crossbeam_channel::Receiver<String> {
    use std::io::BufRead;
    let pipe = child.stderr.take().expect("stderr piped");
    let (sender, lines) = crossbeam_channel::bounded(10_000);
    std::thread::Builder::new()
        .name("shard-stderr".into())
        .spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        })
        .expect("thread");
    lines
}

fn wait_for_line(lines: &crossbeam_channel::Receiver<String>, needle: &str) {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_mins(2)) {
            Ok(line) if line.contains(needle) => return,
            Ok(line) => seen.push(line),
            Err(err) => panic!("no line with {needle:?} ({err}): {seen:#?}"),
        }
    }
}

#[test]
fn a_job_split_into_shards_over_three_processes_is_made_once_into_one_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let queued = imagelab()
        .args(["generate", "--backend", "mock", "--all-profiles", "--prompt", "shards"])
        .args(["--steps", "2", "--width", "64", "--height", "64", "--seed", "11", "--batch", "2"])
        .args(["--queue-only", "--json", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    assert_eq!(queued.status.code(), Some(0), "{}", stderr(&queued));
    let summary: serde_json::Value = serde_json::from_str(stdout(&queued).trim()).expect("json");
    let id = summary["job_id"].as_str().expect("job id").to_owned();
    assert_eq!(summary["images"].as_u64(), Some(2 * plan_items() as u64));
    assert!(crate::util::pngs_below(&out).is_empty(), "queued, not run");

    let shard = |k: usize, step_ms: &str| {
        let mut command = resume(&out);
        command
            .args(["--job", &id, "--shard", &format!("{k}/3")])
            .env("INSTANCE_ID", format!("task-{k}"))
            .env("IMAGELAB_MOCK_STEP_MS", step_ms)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().expect("starts")
    };
    // Shard 0 runs slowly; meanwhile a second copy of it, and a whole-job resume, are refused.
    let mut first = shard(0, "40");
    let first_lines = stderr_lines(&mut first);
    wait_for_line(&first_lines, "resuming job");
    let twin = shard(0, "1").wait_with_output().expect("runs");
    assert_eq!(twin.status.code(), Some(0), "{}", stderr(&twin));
    assert!(stderr(&twin).contains("held by another running process"), "{}", stderr(&twin));
    let whole = resume(&out).output().expect("runs");
    assert!(stderr(&whole).contains("held by another running process"), "{}", stderr(&whole));
    let others: Vec<_> = [1, 2].into_iter().map(|k| shard(k, "1")).collect();
    let mut outputs = vec![first.wait_with_output().expect("shard 0")];
    outputs.extend(others.into_iter().map(|child| child.wait_with_output().expect("shard")));
    for (k, output) in outputs.iter().enumerate() {
        assert_eq!(output.status.code(), Some(0), "shard {k}");
        let summary: serde_json::Value =
            serde_json::from_str(stdout(output).trim()).expect("a JSON summary per shard");
        let items = (0..plan_items()).filter(|item| item % 3 == k).count();
        assert_eq!(summary["files"].as_array().map(Vec::len), Some(2 * items), "shard {k}");
    }
    let images = every_image_once(&out);
    assert_eq!(images.len(), 2 * plan_items(), "the whole plan, once");
    assert_logs_cover_every_image_once(&out, plan_items());
    for k in 0..3 {
        let log = fs_err::read_to_string(out.join(format!("jobs_task-{k}.log"))).expect("log");
        for line in log.lines() {
            let record: serde_json::Value = serde_json::from_str(line).expect("json");
            assert_eq!(record["item"].as_u64().map(|i| i % 3), Some(k as u64), "{line}");
        }
    }
    let listed = imagelab().args(["resume", "--list", "--json"]).arg(&out).output().expect("runs");
    assert_eq!(stdout(&listed).trim(), "[]", "the job is finished");
    assert_no_temp_files(&out);
}
