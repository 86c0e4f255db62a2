//! The jobs log: one JSON line per finished item, appended atomically, one file per instance
//! (`jobs_<INSTANCE_ID>.log`, else `jobs.log`), read back from every `jobs*.log` in a folder.

use serde::{Deserialize, Serialize};
use std::io::Write;
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

/// Appends `record` as one line with a single `write` on an `O_APPEND` file, so concurrent
/// writers never interleave inside a line.
///
/// # Errors
/// I/O errors name the file.
pub fn append(log_path: &Path, record: &JobRecord) -> std::io::Result<()> {
    let mut line = serde_json::to_string(record).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut file = fs_err::OpenOptions::new().create(true).append(true).open(log_path)?;
    file.write_all(line.as_bytes())?;
    file.flush()
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
