//! The `sbatch` script of a Slurm run: plain bash a person can read, edit and resubmit by hand.
//! Each array task runs `imagelab resume` on its own persistent-queue job (the task's share of
//! the plan, see [`super::split`]), so a task does exactly the images of its share not yet on
//! disk: a first run, a requeue and a resubmission are the same command.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `--gres` when none is given: one GPU per task.
pub const DEFAULT_GRES: &str = "gpu:1";

/// The Slurm side of a submission (`#SBATCH` lines).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SbatchOptions {
    /// `--job-name`.
    pub job_name: String,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--gres` (`None`: no generic resources, e.g. a CPU-only partition).
    pub gres: Option<String>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--mem` (Slurm's syntax: `32G`, `16000M`).
    pub mem: Option<String>,
    /// `--time` (Slurm's syntax: `minutes`, `HH:MM:SS`, `D-HH`).
    pub time: Option<String>,
    /// The `%K` of `--array=…%K`: at most K tasks at once.
    pub max_parallel: Option<u32>,
    /// Further `sbatch` options, one `#SBATCH` line each (`--constraint=a100`).
    pub extra: Vec<String>,
}

impl SbatchOptions {
    /// Checks what goes into `#SBATCH` lines: one line each, no empty values, extra options
    /// that start with `-`.
    ///
    /// # Errors
    /// The first bad value, naming its flag.
    pub fn check(&self) -> Result<(), String> {
        let texts = [
            ("--partition", self.partition.as_deref()),
            ("--account", self.account.as_deref()),
            ("--qos", self.qos.as_deref()),
            ("--gres", self.gres.as_deref()),
            ("--mem", self.mem.as_deref()),
            ("--time", self.time.as_deref()),
        ];
        for (flag, value) in texts {
            if let Some(value) = value {
                check_value(flag, value)?;
            }
        }
        if let Some(time) = &self.time {
            check_time(time).map_err(|err| format!("--time: {err}"))?;
        }
        if let Some(gres) = &self.gres {
            check_gres(gres).map_err(|err| format!("--gres: {err}"))?;
        }
        if self.cpus_per_task == Some(0) {
            return Err("--cpus-per-task: must be at least 1".to_owned());
        }
        if self.max_parallel == Some(0) {
            return Err("--max-parallel: must be at least 1".to_owned());
        }
        for extra in &self.extra {
            check_value("--sbatch-arg", extra)?;
            if !extra.starts_with('-') {
                return Err(format!(
                    "--sbatch-arg: {extra:?} is not an sbatch option (e.g. --constraint=a100)"
                ));
            }
            if extra.starts_with("--array") || extra.starts_with("-a") {
                return Err("--sbatch-arg: the array is planned by imagelab; leave --array out \
                     (throttle with --max-parallel)"
                    .to_owned());
            }
        }
        Ok(())
    }
}

/// Checks a time limit in one of Slurm's forms: `minutes`, `minutes:seconds`,
/// `hours:minutes:seconds`, `days-hours`, `days-hours:minutes`, `days-hours:minutes:seconds`,
/// or `UNLIMITED`/`INFINITE`; not zero.
///
/// # Errors
/// What is wrong, with the forms Slurm takes.
pub fn check_time(text: &str) -> Result<(), String> {
    let text = text.trim();
    let forms = "give minutes (90), HH:MM:SS (02:00:00) or D-HH[:MM[:SS]] (1-12)";
    if text.eq_ignore_ascii_case("unlimited") || text.eq_ignore_ascii_case("infinite") {
        return Ok(());
    }
    let number = |part: &str| -> Result<u64, String> {
        if part.is_empty() || !part.chars().all(|c| c.is_ascii_digit()) || part.len() > 6 {
            return Err(format!("{text:?} is not a time limit: {forms}"));
        }
        part.parse().map_err(|_| format!("{text:?} is not a time limit: {forms}"))
    };
    let (days, rest) = match text.split_once('-') {
        Some((days, rest)) => (Some(number(days)?), rest),
        None => (None, text),
    };
    let parts = rest.split(':').map(number).collect::<Result<Vec<u64>, String>>()?;
    let seconds = match (days, parts.as_slice()) {
        (None, [minutes]) => minutes * 60,
        (None, [minutes, seconds]) => minutes * 60 + seconds,
        (None, [hours, minutes, seconds]) => hours * 3600 + minutes * 60 + seconds,
        (Some(days), [hours]) => days * 86_400 + hours * 3600,
        (Some(days), [hours, minutes]) => days * 86_400 + hours * 3600 + minutes * 60,
        (Some(days), [hours, minutes, seconds]) => {
            days * 86_400 + hours * 3600 + minutes * 60 + seconds
        }
        _ => return Err(format!("{text:?} is not a time limit: {forms}")),
    };
    if seconds == 0 {
        return Err(format!("{text:?} is no time at all"));
    }
    Ok(())
}

/// Checks generic resources: comma-separated `name[:type][:count]` (`gpu:1`, `gpu:a100:2`),
/// names and types of letters, digits, `_`, `-`, `.`; a count that is a whole number > 0.
///
/// # Errors
/// What is wrong, with an example.
pub fn check_gres(text: &str) -> Result<(), String> {
    let bad = || format!("{text:?} is not a resource list like gpu:1 or gpu:a100:2");
    for resource in text.split(',') {
        let parts: Vec<&str> = resource.trim().split(':').collect();
        let word = |part: &str| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        };
        if parts.len() > 3 || !parts.iter().all(|part| word(part)) {
            return Err(bad());
        }
        if parts.len() > 1 {
            let last = parts[parts.len() - 1];
            let count_given = last.chars().all(|c| c.is_ascii_digit());
            if parts.len() == 3 && !count_given {
                return Err(bad());
            }
            if count_given && last.parse::<u64>().map_or(true, |count| count == 0) {
                return Err(format!("{text:?}: a count must be at least 1"));
            }
        }
    }
    Ok(())
}

fn check_value(flag: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{flag}: empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{flag}: {value:?} holds a control character (a newline?)"));
    }
    Ok(())
}

/// Everything the script names.
#[derive(Debug, Clone)]
pub struct ScriptInput<'a> {
    /// The `#SBATCH` options.
    pub options: &'a SbatchOptions,
    /// The array's task ids (`0-11`, or the unfinished ones on a resubmission).
    pub array: &'a str,
    /// The imagelab binary to run (absolute).
    pub imagelab: &'a Path,
    /// The output root (absolute): where the persistent queue and the jobs logs are.
    pub output_root: &'a Path,
    /// The folder of the tasks' own output files (absolute).
    pub log_dir: &'a Path,
    /// The persistent-queue job of task i, and its label.
    pub tasks: &'a [(String, String)],
    /// `candle` or `mock`.
    pub backend: &'a str,
    /// The `--device` each task passes (`cuda:0`/`auto` on GPUs: Slurm's
    /// `CUDA_VISIBLE_DEVICES` maps it).
    pub device: &'a str,
    /// The Hugging Face cache the tasks read (the shared one the submitter used).
    pub hub_cache: Option<&'a Path>,
    /// When and by what it was written, for the header.
    pub written: &'a str,
    /// Further `imagelab resume` flags every task passes (`--for 2h`, `--until 06:00`).
    pub resume_args: &'a [String],
}

/// Quotes a word for bash: as is when it is plainly safe, else in single quotes.
pub fn shell_quote(text: &str) -> String {
    let safe = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@%".contains(c));
    if safe { text.to_owned() } else { format!("'{}'", text.replace('\'', r"'\''")) }
}

fn path_word(path: &Path) -> String {
    shell_quote(&path.to_string_lossy())
}

/// The script's text.
pub fn render(input: &ScriptInput<'_>) -> String {
    let o = input.options;
    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/bash");
    let _ =
        writeln!(s, "# imagelab on Slurm: written by `imagelab slurm submit` ({}).", input.written);
    let _ =
        writeln!(s, "# Array task i runs its share of the plan: persistent-queue job JOBS[i] in");
    let _ =
        writeln!(s, "# the output folder, only the images of it not yet on disk. Edit freely and");
    let _ =
        writeln!(s, "# resubmit with `sbatch THIS_FILE` (sbatch's --array=… overrides the line");
    let _ =
        writeln!(s, "# below), or let `imagelab resume RUN_DIR` resubmit the unfinished tasks.");
    let _ = writeln!(s, "#SBATCH --job-name={}", shell_quote(&o.job_name));
    let array = match o.max_parallel {
        Some(k) => format!("{}%{k}", input.array),
        None => input.array.to_owned(),
    };
    let _ = writeln!(s, "#SBATCH --array={array}");
    let optional = [
        ("partition", o.partition.as_deref()),
        ("account", o.account.as_deref()),
        ("qos", o.qos.as_deref()),
        ("gres", o.gres.as_deref()),
        ("mem", o.mem.as_deref()),
        ("time", o.time.as_deref()),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            let _ = writeln!(s, "#SBATCH --{name}={value}");
        }
    }
    if let Some(cpus) = o.cpus_per_task {
        let _ = writeln!(s, "#SBATCH --cpus-per-task={cpus}");
    }
    let _ = writeln!(s, "#SBATCH --output={}/%A_%a.out", input.log_dir.display());
    // A warning before the time limit: imagelab finishes the image it is on and logs it.
    let _ = writeln!(s, "#SBATCH --signal=B:TERM@120");
    for extra in &o.extra {
        let _ = writeln!(s, "#SBATCH {extra}");
    }
    s.push('\n');
    s.push_str("set -euo pipefail\n\n");
    let _ = writeln!(s, "IMAGELAB={}", path_word(input.imagelab));
    let _ = writeln!(s, "OUTPUT_ROOT={}", path_word(input.output_root));
    s.push_str("JOBS=(\n");
    for (task, (job, label)) in input.tasks.iter().enumerate() {
        let _ = writeln!(s, "    {} # task {task}: {}", shell_quote(job), one_line(label));
    }
    s.push_str(")\n\n");
    s.push_str("TASK=\"${SLURM_ARRAY_TASK_ID:?run this script with sbatch (an array job)}\"\n");
    s.push_str("if [ \"$TASK\" -ge \"${#JOBS[@]}\" ]; then\n");
    s.push_str(
        "    echo \"imagelab: no share for array task $TASK (tasks 0-$((${#JOBS[@]} - 1)))\" >&2\n",
    );
    s.push_str("    exit 2\nfi\n");
    s.push_str("# One jobs log per task in the shared output folder: jobs_<job>-<task>.log.\n");
    s.push_str("export INSTANCE_ID=\"${SLURM_ARRAY_JOB_ID}_${TASK}\"\n");
    if let Some(cache) = input.hub_cache {
        s.push_str("# The model cache on the shared file system, filled on a login node with\n");
        s.push_str("# `imagelab models prefetch`; compute nodes do not download.\n");
        let _ = writeln!(s, "export HF_HUB_CACHE={}", path_word(cache));
        s.push_str("export HF_HUB_OFFLINE=1\n");
    }
    s.push_str(
        "echo \"imagelab: task $TASK job ${JOBS[$TASK]} instance $INSTANCE_ID on $(hostname) \
         cuda=${CUDA_VISIBLE_DEVICES-unset}\"\n\n",
    );
    s.push_str(
        "# exec: Slurm's SIGTERM (scancel, time limit) reaches imagelab, which finishes or\n",
    );
    s.push_str("# cancels the image it is on and writes its jobs-log line. Arguments after the\n");
    s.push_str(
        "# script's name on sbatch's command line reach imagelab resume (--retry-failed).\n",
    );
    let mut extra = String::new();
    for arg in input.resume_args {
        let _ = write!(extra, " {}", shell_quote(arg));
    }
    let _ = writeln!(
        s,
        "exec \"$IMAGELAB\" resume \"$OUTPUT_ROOT\" --job \"${{JOBS[$TASK]}}\" --backend {} --device {}{extra} \"$@\"",
        shell_quote(input.backend),
        shell_quote(input.device)
    );
    s
}

fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Reads the job ids back from a script's `JOBS=(…)` block (a hand-edited script included),
/// for checks.
pub fn jobs_of(script: &str) -> Vec<String> {
    let mut jobs = Vec::new();
    let mut inside = false;
    for line in script.lines().map(str::trim) {
        if line == "JOBS=(" {
            inside = true;
        } else if inside && line == ")" {
            break;
        } else if inside {
            let word = line.split('#').next().unwrap_or_default().trim().trim_matches('\'');
            if !word.is_empty() {
                jobs.push(word.to_owned());
            }
        }
    }
    jobs
}

/// The default file names inside a run's Slurm folder.
pub fn script_path(slurm_dir: &Path) -> PathBuf {
    slurm_dir.join("imagelab.sbatch")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SbatchOptions {
        SbatchOptions {
            job_name: "imagelab-all-models".into(),
            partition: Some("gpu".into()),
            gres: Some(DEFAULT_GRES.into()),
            cpus_per_task: Some(8),
            mem: Some("48G".into()),
            time: Some("02:00:00".into()),
            max_parallel: Some(4),
            extra: vec!["--constraint=a100".into()],
            ..SbatchOptions::default()
        }
    }

    #[test]
    fn the_script_names_every_task_and_runs_resume_with_exec() {
        let tasks = vec![
            ("20261203-090000-0000000a".to_owned(), "SDXL base".to_owned()),
            ("20261203-090000-0000000b".to_owned(), "Juggernaut's XL".to_owned()),
        ];
        let script = render(&ScriptInput {
            options: &options(),
            array: "0-1",
            imagelab: Path::new("/opt/imagelab/bin/imagelab"),
            output_root: Path::new("/shared/out images"),
            log_dir: Path::new("/shared/out/run/slurm/logs"),
            tasks: &tasks,
            backend: "candle",
            device: "cuda:0",
            hub_cache: Some(Path::new("/shared/hf/hub")),
            written: "2026-12-03T09:00:00+00:00",
            resume_args: &["--for".to_owned(), "7200s".to_owned()],
        });
        for line in [
            "#SBATCH --array=0-1%4",
            "#SBATCH --partition=gpu",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --cpus-per-task=8",
            "#SBATCH --mem=48G",
            "#SBATCH --time=02:00:00",
            "#SBATCH --constraint=a100",
            "#SBATCH --output=/shared/out/run/slurm/logs/%A_%a.out",
            "OUTPUT_ROOT='/shared/out images'",
            "export HF_HUB_CACHE=/shared/hf/hub",
            "exec \"$IMAGELAB\" resume \"$OUTPUT_ROOT\" --job \"${JOBS[$TASK]}\" --backend candle --device cuda:0 --for 7200s \"$@\"",
        ] {
            assert!(script.lines().any(|l| l == line), "{line:?} missing in\n{script}");
        }
        assert!(script.contains("# task 1: Juggernaut's XL"));
        assert_eq!(jobs_of(&script), vec![tasks[0].0.clone(), tasks[1].0.clone()]);
        // Nothing after the first command may be an #SBATCH line (sbatch stops reading there).
        let first_command = script.lines().position(|l| l.starts_with("set ")).expect("set");
        assert!(script.lines().skip(first_command).all(|l| !l.starts_with("#SBATCH")));
    }

    #[test]
    fn bad_options_name_their_flag() {
        let mut bad = options();
        bad.mem = Some("4G\n#SBATCH --uid=0".into());
        assert!(bad.check().unwrap_err().starts_with("--mem:"));
        let mut bad = options();
        bad.extra = vec!["constraint=a100".into()];
        assert!(bad.check().unwrap_err().starts_with("--sbatch-arg:"));
        let mut bad = options();
        bad.extra = vec!["--array=0-3".into()];
        assert!(bad.check().unwrap_err().contains("--max-parallel"));
        let mut bad = options();
        bad.cpus_per_task = Some(0);
        assert!(bad.check().unwrap_err().starts_with("--cpus-per-task"));
        assert!(options().check().is_ok());
    }

    #[test]
    fn time_limits_and_resources_in_slurm_forms() {
        for good in ["90", "90:30", "02:00:00", "1-12", "1-12:30", "2-00:00:01", "UNLIMITED"] {
            assert_eq!(check_time(good), Ok(()), "{good}");
        }
        for bad in ["", "abc", "2h", "1:2:3:4", "0", "00:00:00", "-5", "1-", "1.5", "1-2:3:4:5"] {
            assert!(check_time(bad).is_err(), "{bad:?} passed");
        }
        for good in ["gpu", "gpu:1", "gpu:a100:2", "gpu:1,nvme:1", "gpu:tesla-v100"] {
            assert_eq!(check_gres(good), Ok(()), "{good}");
        }
        for bad in ["gpu:0", "gpu::1", "gpu:a100:x", "gpu 1", ":1", "gpu:1:2:3"] {
            assert!(check_gres(bad).is_err(), "{bad:?} passed");
        }
        let mut options = options();
        options.time = Some("2 hours".into());
        assert!(options.check().unwrap_err().starts_with("--time: \"2 hours\""));
        options.time = None;
        options.gres = Some("gpu:0".into());
        assert!(options.check().unwrap_err().starts_with("--gres:"));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b-c_1.x"), "/a/b-c_1.x");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm)"), "'$(rm)'");
    }
}
