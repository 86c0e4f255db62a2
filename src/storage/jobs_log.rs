//! The jobs log: one JSON line per finished item, appended atomically, one file per instance
//! (`jobs_<INSTANCE_ID>.log`, else `jobs.log`), read back from every `jobs*.log` in a folder.
//!
//! An append is all-or-nothing: under an exclusive lock on the file, a torn last line (a
//! crash or a full disk in the middle of an earlier write) is cut off first, the whole line is
//! written with one `write`, synced, and cut back off again if the write failed. So a line is
//! never glued to a fragment, and a record is either complete or absent (the persistent queue
//! writes an absent one again from the images' metadata on the next start).

use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::vocab::Mode;

/// How an item ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// Every image saved.
    Done,
    /// Stopped by an error; `error` says which.
    Failed,
    /// Cancelled or skipped by the user; images saved before that are listed.
    Cancelled,
    /// Stopped before it finished by a clean stop (SIGINT/SIGTERM), a shutdown or a crash
    /// (written on the next start): the images saved so far are listed, and `imagelab
    /// resume` makes the rest, which land in a later line of the same item.
    Interrupted,
}

/// One line of the jobs log (REFERENCE §7), plus `status` and `job`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobRecord {
    /// RFC 3339 local time the item finished.
    pub timestamp: String,
    /// txt2img or img2img.
    pub mode: Mode,
    /// Prompt with the profile applied.
    pub prompt: String,
    /// Negative prompt with the profile applied.
    pub negative: String,
    /// Part of an "all profiles" sweep.
    pub all_profiles: bool,
    /// Part of an "all models × all profiles" sweep.
    pub all_models: bool,
    /// Style profile name.
    pub profile: String,
    /// Model display name.
    pub model: String,
    /// Hub id or path.
    pub model_id: String,
    /// Sampler CLI name (resolved, never `default` once the model is loaded).
    pub scheduler: String,
    /// Denoising steps.
    pub steps: u32,
    /// CFG scale.
    pub cfg: f32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Images asked for.
    pub batch_size: u32,
    /// Seed of image 0.
    pub seed_base: u64,
    /// Seeds of the images saved.
    pub seeds: Vec<u64>,
    /// Saved images, relative to the output root.
    pub paths: Vec<String>,
    /// Sweep folder relative to the output root, if any.
    pub run_dir: Option<String>,
    /// `null`, or what went wrong.
    pub error: Option<String>,
    /// Wall time of the item, model load included.
    pub duration_s: f64,
    /// Device label, e.g. `cpu` or `cuda:0 (NVIDIA H200)`.
    pub device: String,
    /// How the item ended.
    #[serde(default = "default_status")]
    pub status: ItemStatus,
    /// Engine job number within the writing process.
    #[serde(default)]
    pub job: u64,
    /// What the backend did differently from the request (e.g. an out-of-memory fallback to a
    /// smaller size), once per distinct note over the item's images.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The persistent queue's id of the job (`.imagelab/jobs/<id>/`), stable across resumes
    /// and processes; absent in lines written before the queue existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The item's index in the job's plan (with `job_id`, names the item across resumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    /// Set on jobs of `imagelab runner`: the runner's job number, template and generated
    /// prompt. Absent from other lines (and from lines written before the runner existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerTag>,
    /// Fields this version does not name (written by a newer version or another tool), kept as
    /// read so readers such as the favourites analysis can use them, and written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What a runner job adds to its jobs-log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunnerTag {
    /// The runner's job number (1, 2, …; the same number gives the same job for the same
    /// template file and `--seed`).
    pub job: u64,
    /// The template's name.
    pub template: String,
    /// The generated prompt, before the profile's suffix.
    pub prompt: String,
    /// The run seed the prompts came from.
    pub seed: u64,
    /// The GPU index (as `imagelab gpus` prints it) the job ran on, when on an NVIDIA GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
}

fn default_status() -> ItemStatus {
    ItemStatus::Done
}

/// The log file name for an instance id (`INSTANCE_ID`), sanitised so it stays in the folder.
pub fn log_file_name(instance_id: Option<&str>) -> String {
    match instance_id.map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) => format!("jobs_{}.log", crate::storage::naming::slug(id, 64, "instance")),
        None => "jobs.log".to_owned(),
    }
}

/// Appends `record` as one line: under an exclusive lock, after cutting off a torn last line,
/// with a single `write` on an `O_APPEND` file (concurrent writers never interleave inside a
/// line), synced; a failed write is cut back off. Returns the bytes of a torn line that were
/// cut off, if any (for a warning).
///
/// # Errors
/// I/O errors name the file; after an error the file holds exactly what it held before.
pub fn append(log_path: &Path, record: &JobRecord) -> std::io::Result<usize> {
    let mut line = serde_json::to_string(record).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut file =
        fs_err::OpenOptions::new().create(true).read(true).append(true).open(log_path)?;
    file.lock()?;
    append_locked(file.file_mut(), line.as_bytes(), &mut |file, bytes| file.write_all(bytes))
        .map_err(|err| std::io::Error::new(err.kind(), format!("{}: {err}", log_path.display())))
}

/// Cuts off a torn last line of the log at `log_path`, under its lock. Returns the bytes cut.
///
/// # Errors
/// I/O errors name the file.
pub fn repair_torn_tail(log_path: &Path) -> std::io::Result<usize> {
    let mut file = fs_err::OpenOptions::new().read(true).write(true).open(log_path)?;
    file.lock()?;
    cut_torn_tail(file.file_mut())
        .map_err(|err| std::io::Error::new(err.kind(), format!("{}: {err}", log_path.display())))
}

/// The append under the lock; `write` is the one write of the line (tests inject a full disk).
fn append_locked(
    file: &mut std::fs::File,
    line: &[u8],
    write: &mut dyn FnMut(&mut std::fs::File, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<usize> {
    let cut = cut_torn_tail(file)?;
    let before = file.metadata()?.len();
    let written = write(file, line).and_then(|()| file.sync_data());
    if let Err(err) = written {
        // All or nothing: take back whatever part of the line reached the file.
        let _ = file.set_len(before);
        let _ = file.sync_data();
        return Err(err);
    }
    Ok(cut)
}

/// Truncates `file` after its last newline when its last byte is not one; returns the bytes
/// removed.
fn cut_torn_tail(file: &mut std::fs::File) -> std::io::Result<usize> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0_u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(0);
    }
    // Walk back in blocks to the last newline (or the start).
    let mut end = len;
    let mut keep = 0;
    let mut block = vec![0_u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let size = usize::try_from(end - start).unwrap_or(block.len());
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block[..size])?;
        if let Some(newline) = block[..size].iter().rposition(|&b| b == b'\n') {
            keep = start + newline as u64 + 1;
            break;
        }
        end = start;
    }
    file.set_len(keep)?;
    file.sync_data()?;
    Ok(usize::try_from(len - keep).unwrap_or(usize::MAX))
}

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct DamagedLine {
    /// The log file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What the parser said.
    pub error: String,
}

/// Everything read from a folder's jobs logs.
#[derive(Debug, Default)]
pub struct LogContents {
    /// Good records, file by file in name order, line order within a file.
    pub records: Vec<JobRecord>,
    /// Lines skipped, with why.
    pub damaged: Vec<DamagedLine>,
}

/// Reads every `jobs*.log` in `dir`, skipping (and reporting) damaged lines.
///
/// # Errors
/// Only when the folder itself cannot be listed; unreadable files are reported as damaged.
#[allow(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "the lab writes these names itself, lower-case"
)]
pub fn read_all(dir: &Path) -> std::io::Result<LogContents> {
    let mut files: Vec<PathBuf> = fs_err::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|name| name.starts_with("jobs") && name.ends_with(".log"))
                && path.is_file()
        })
        .collect();
    files.sort();
    let mut contents = LogContents::default();
    for file in files {
        read_file_into(&file, &mut contents);
    }
    Ok(contents)
}

fn read_file_into(file: &Path, contents: &mut LogContents) {
    let bytes = match fs_err::read(file) {
        Ok(bytes) => bytes,
        Err(err) => {
            contents.damaged.push(DamagedLine {
                file: file.to_owned(),
                line: 0,
                error: err.to_string(),
            });
            return;
        }
    };
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<JobRecord>(raw) {
            Ok(record) => contents.records.push(record),
            Err(err) => contents.damaged.push(DamagedLine {
                file: file.to_owned(),
                line: index + 1,
                error: err.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(seed: u64) -> JobRecord {
        JobRecord {
            timestamp: "2026-11-23T09:30:05+00:00".into(),
            mode: Mode::Txt2img,
            prompt: "a cat, cinematic".into(),
            negative: String::new(),
            all_profiles: false,
            all_models: false,
            profile: "Cinematic".into(),
            model: "SDXL Base 1.0".into(),
            model_id: "stabilityai/stable-diffusion-xl-base-1.0".into(),
            scheduler: "euler".into(),
            steps: 30,
            cfg: 7.0,
            width: 1024,
            height: 1024,
            batch_size: 1,
            seed_base: seed,
            seeds: vec![seed],
            paths: vec![format!("x_{seed}.png")],
            run_dir: None,
            error: None,
            duration_s: 1.5,
            device: "cpu".into(),
            status: ItemStatus::Done,
            job: 1,
            notes: Vec::new(),
            extra: serde_json::Map::new(),
            job_id: None,
            item: None,
            runner: None,
        }
    }

    #[test]
    fn round_trip_across_instances_and_damaged_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join(log_file_name(Some("gpu-0")));
        let b = dir.path().join(log_file_name(None));
        append(&a, &sample(1)).expect("append");
        append(&a, &sample(2)).expect("append");
        append(&b, &sample(3)).expect("append");
        // A torn write from a crashed process, then a good line after it.
        let mut file = fs_err::OpenOptions::new().append(true).open(&b).expect("open");
        file.write_all(b"{\"timestamp\": \"2026-11-2\n").expect("write");
        drop(file);
        append(&b, &sample(4)).expect("append");
        fs_err::write(dir.path().join("other.log"), "not ours").expect("write");

        let contents = read_all(dir.path()).expect("read");
        let mut seeds: Vec<u64> = contents.records.iter().map(|r| r.seed_base).collect();
        seeds.sort_unstable();
        assert_eq!(seeds, vec![1, 2, 3, 4]);
        assert_eq!(contents.damaged.len(), 1);
        assert_eq!(contents.damaged[0].line, 2);
        assert_eq!(contents.records[0], sample(3), "jobs.log sorts before jobs_gpu-0.log");
    }

    #[test]
    fn fields_this_version_does_not_name_are_kept() {
        let mut line = serde_json::to_value(sample(9)).expect("json");
        line["template"] = "portrait".into();
        line["runner_job"] = 17.into();
        let record: JobRecord = serde_json::from_value(line.clone()).expect("read");
        assert_eq!(record.seed_base, 9);
        let names: Vec<&str> = record.extra.keys().map(String::as_str).collect();
        assert_eq!(names, ["runner_job", "template"], "only the unknown fields");
        assert_eq!(serde_json::to_value(&record).expect("json"), line, "written back unchanged");
    }

    #[test]
    fn appends_are_all_or_nothing_and_torn_lines_are_cut_not_glued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("jobs.log");
        append(&log, &sample(1)).expect("append");
        // A crash in the middle of a write left half a line.
        let mut file = fs_err::OpenOptions::new().append(true).open(&log).expect("open");
        file.write_all(b"{\"timestamp\": \"2026-11-2").expect("write");
        drop(file);
        assert_eq!(append(&log, &sample(2)).expect("append"), 24, "the torn bytes were cut");
        // A full disk in the middle of the next write: nothing of it stays.
        let mut file = fs_err::OpenOptions::new().read(true).append(true).open(&log).expect("o");
        let line = serde_json::to_string(&sample(3)).expect("json") + "\n";
        let mut full = |file: &mut std::fs::File, bytes: &[u8]| {
            file.write_all(&bytes[..bytes.len() / 2])?;
            Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device"))
        };
        let err = append_locked(file.file_mut(), line.as_bytes(), &mut full).expect_err("full");
        assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
        drop(file);
        append(&log, &sample(4)).expect("append");
        let text = fs_err::read_to_string(&log).expect("read");
        assert!(text.ends_with('\n'));
        let contents = read_all(dir.path()).expect("read");
        assert!(contents.damaged.is_empty(), "{:?}", contents.damaged);
        let seeds: Vec<u64> = contents.records.iter().map(|r| r.seed_base).collect();
        assert_eq!(seeds, [1, 2, 4], "every complete record, each on its own line");
        // A torn tail alone is repaired on request, and a whole file of one torn line empties.
        fs_err::write(&log, b"no newline at all").expect("write");
        assert_eq!(repair_torn_tail(&log).expect("repair"), 17);
        assert_eq!(fs_err::read(&log).expect("read"), b"");
    }

    #[test]
    fn runner_fields_are_optional_both_ways() {
        // A line written before the runner existed reads with no tag…
        let mut old = serde_json::to_value(sample(5)).expect("json");
        assert!(old.get("runner").is_none(), "not written when absent");
        old.as_object_mut().expect("object").remove("notes");
        let read: JobRecord = serde_json::from_value(old).expect("old lines read");
        assert_eq!(read.runner, None);
        // …and a runner line round-trips.
        let tagged = JobRecord {
            runner: Some(RunnerTag {
                job: 12,
                template: "portrait".into(),
                prompt: "a cat".into(),
                seed: 7,
                gpu: Some(3),
            }),
            ..sample(6)
        };
        let line = serde_json::to_string(&tagged).expect("json");
        assert!(
            line.contains(
                r#""runner":{"job":12,"template":"portrait","prompt":"a cat","seed":7,"gpu":3}"#
            ),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<JobRecord>(&line).expect("reads"), tagged);
    }

    #[test]
    fn instance_ids_cannot_escape() {
        assert_eq!(log_file_name(Some("../../x")), "jobs_x.log");
        assert_eq!(log_file_name(Some("  ")), "jobs.log");
    }
}
