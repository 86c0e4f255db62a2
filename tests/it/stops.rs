//! Clean stops of the real binary (issue 16, part 2): SIGTERM/SIGINT once = finish the running
//! image, write its log line and the summary, exit 143/130; twice = cancel that image now.
//! Nothing half-written either way. The signals are sent with `kill`, the way Docker and Slurm
//! send them; the tests wait for events (lines on stderr), never for a wall-clock time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded};
use imagelab::storage::jobs_log::{self, ItemStatus};

use crate::engine::assert_no_temp_files;
use crate::util::imagelab;

/// Longest wait for any one line (a debug build on a busy 2-core machine).
const LINE_TIMEOUT: Duration = Duration::from_mins(2);

/// A running `imagelab generate --json` with its stderr lines on a channel.
struct Run {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Run {
    fn start(out: &Path, step_ms: u32, steps: u32, batch: u32) -> Self {
        let mut child = imagelab()
            .args(["generate", "--backend", "mock", "--prompt", "a slow fox", "--width", "64"])
            .args(["--height", "64", "--seed", "11", "--json"])
            .args(["--steps", &steps.to_string(), "--batch", &batch.to_string(), "--out"])
            .arg(out)
            .env("IMAGELAB_MOCK_STEP_MS", step_ms.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, lines) = bounded(10_000);
        std::thread::Builder::new()
            .name("stderr-reader".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            })
            .expect("reader thread");
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str) {
        loop {
            match self.lines.recv_timeout(LINE_TIMEOUT) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(err) => {
                    let _ = self.child.kill();
                    panic!("no line with {needle:?} ({err}); stderr so far: {:#?}", self.seen);
                }
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the exit; returns the exit code, stdout, and every stderr line.
    fn finish(mut self) -> (Option<i32>, String, Vec<String>) {
        let mut stdout = String::new();
        if let Some(mut pipe) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stdout).expect("stdout");
        }
        let status = self.child.wait().expect("exits");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        (status.code(), stdout, self.seen)
    }
}

/// The JSON summary's files, each a complete PNG in `out`.
fn complete_files(summary: &serde_json::Value, out: &Path) -> Vec<String> {
    let files: Vec<String> = summary["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|file| file["path"].as_str().expect("path").to_owned())
        .collect();
    for file in &files {
        assert!(Path::new(file).starts_with(out), "{file}");
        image::open(file).expect("a complete PNG");
    }
    assert_eq!(crate::util::pngs_below(out).len(), files.len(), "every PNG is in the summary");
    assert_no_temp_files(out);
    files
}

#[test]
fn one_sigterm_finishes_the_running_image_writes_the_summary_and_exits_143() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    // 5 images of 10 steps × 60 ms: the second is being made when the signal comes.
    let mut run = Run::start(&out, 60, 10, 5);
    run.wait_for("saved ");
    run.signal("TERM");
    run.wait_for("SIGTERM: stopping after the running image");
    let (code, stdout, stderr) = run.finish();
    assert_eq!(code, Some(143), "{stderr:#?}");
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("one JSON object on stdout");
    assert_eq!(summary["stopped_by"], "SIGTERM");
    assert_eq!(summary["interrupted"], 1);
    let files = complete_files(&summary, &out);
    // The image in flight finished (unless the machine was so slow the signal came between
    // two images); nothing new started after it.
    assert!((1..=2).contains(&files.len()), "{files:?}");
    let saved_lines = stderr.iter().filter(|line| line.contains("saved ")).count();
    assert_eq!(saved_lines, files.len(), "{stderr:#?}");
    let log = jobs_log::read_all(&out).expect("log");
    assert_eq!(log.records.len(), 1, "the item's log line was written");
    assert_eq!(log.records[0].status, ItemStatus::Interrupted);
    assert_eq!(log.records[0].error.as_deref(), Some("interrupted: SIGTERM"));
    assert_eq!(log.records[0].paths.len(), files.len());
}

#[test]
fn a_second_sigint_cancels_the_running_image_and_exits_130() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    // 3 images of 50 steps × 100 ms: the second signal comes ~5 s before image 2 could end.
    let mut run = Run::start(&out, 100, 50, 3);
    run.wait_for("saved ");
    run.signal("INT");
    run.wait_for("SIGINT: stopping after the running image");
    run.signal("INT");
    run.wait_for("SIGINT: cancelling the running image");
    let (code, stdout, stderr) = run.finish();
    assert_eq!(code, Some(130), "{stderr:#?}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(summary["stopped_by"], "SIGINT");
    let files = complete_files(&summary, &out);
    assert_eq!(files.len(), 1, "the image in flight was cancelled, not saved: {stderr:#?}");
    let log = jobs_log::read_all(&out).expect("log");
    assert_eq!(log.records.len(), 1);
    assert_eq!(log.records[0].status, ItemStatus::Interrupted);
    assert_eq!(log.records[0].paths.len(), 1);
}
