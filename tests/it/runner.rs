//! GPUs, the prompt generator and the overnight runner, through the built binary (a fake
//! `nvidia-smi` on `PATH` printing recorded CSV) and through the library (fake GPUs, the mock
//! backend, and a backend that proves two workers run at once).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chrono::DateTime;
use imagelab::engine::mock::MockBackend;
use imagelab::engine::{
    Backend, BackendError, Capabilities, GenerateParams, Generated, LoadProgress, LoadedModel,
    StepUpdate,
};
use imagelab::gpu::{FixedGpus, GpuProcess, GpuSource, IdleRule, Visibility};
use imagelab::models::catalog::{Catalog, ModelRef};
use imagelab::request::Profiles;
use imagelab::runner::{
    BackendFactory, EndReason, Generator, IdleWatch, JobSettings, RunChoices, RunSummary,
    RunnerHandle, RunnerSetup, Slot, StopLevel, StopToken, TemplateSet,
};
use imagelab::storage::jobs_log::{self, ItemStatus, JobRecord};
use imagelab::vocab::{DeviceChoice, Precision};

use crate::util::{imagelab, pngs_below, stderr, stdout};

/// Two H200s as `nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu
/// --format=csv,noheader,nounits` prints them (UUIDs made up), the second one busy.
const TWO_GPUS_ONE_BUSY: &str = "\
0, GPU-5b8e2d4a-93f1-4c2e-8a7b-1f0e3d6c9a21, NVIDIA H200, 143771, 0, 0
1, GPU-c71a09e3-2b4d-4f6a-9e58-7d3b2a1c0f44, NVIDIA H200, 143771, 30721, 97
";
/// `--query-compute-apps=gpu_uuid,pid,used_memory`: one process on GPU 1.
const ONE_PROCESS_ON_GPU_1: &str = "GPU-c71a09e3-2b4d-4f6a-9e58-7d3b2a1c0f44, 4242, 30720\n";
const TWO_IDLE_GPUS: &str = "\
0, GPU-5b8e2d4a-93f1-4c2e-8a7b-1f0e3d6c9a21, NVIDIA H200, 143771, 0, 0
1, GPU-c71a09e3-2b4d-4f6a-9e58-7d3b2a1c0f44, NVIDIA H200, 143771, 0, 0
";

/// A fake `nvidia-smi` in `dir/bin` that prints `dir/gpus.csv` or `dir/apps.csv`, so a test
/// can change what it reports while a run goes on.
struct FakeSmi {
    dir: PathBuf,
}

impl FakeSmi {
    fn new(dir: &Path, gpus: &str, apps: &str) -> Self {
        let bin = dir.join("bin");
        fs_err::create_dir_all(&bin).expect("bin");
        let script = format!(
            "#!/bin/sh\ncase \"$1\" in\n  --query-gpu=*) cat '{0}/gpus.csv' ;;\n  --query-compute-apps=*) cat '{0}/apps.csv' ;;\n  *) echo \"fake nvidia-smi: $*\" >&2; exit 2 ;;\nesac\n",
            dir.display()
        );
        let path = bin.join("nvidia-smi");
        fs_err::write(&path, script).expect("script");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let fake = Self { dir: dir.to_owned() };
        fake.set(gpus, apps);
        fake
    }

    /// Replaces what it prints (atomically: a run may read at any moment).
    fn set(&self, gpus: &str, apps: &str) {
        for (name, text) in [("gpus.csv", gpus), ("apps.csv", apps)] {
            let tmp = self.dir.join(format!("{name}.tmp"));
            fs_err::write(&tmp, text).expect("write");
            fs_err::rename(&tmp, self.dir.join(name)).expect("rename");
        }
    }

    /// The binary with this fake first on `PATH` and `nvidia-smi` as the GPU source.
    fn command(&self) -> Command {
        let mut command = imagelab();
        // The fake first; the script itself needs only sh and cat.
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", self.dir.join("bin").display());
        command.env("PATH", path).env("IMAGELAB_GPU_SOURCE", "nvidia-smi");
        command.env_remove("CUDA_VISIBLE_DEVICES").env_remove("CUDA_DEVICE_ORDER");
        command
    }
}

fn log_lines(out: &Path) -> Vec<JobRecord> {
    let contents = jobs_log::read_all(out).expect("log folder");
    assert!(contents.damaged.is_empty(), "{:?}", contents.damaged);
    contents.records
}

/// `[start, end]` of a log line, from its finish time and duration.
fn interval(record: &JobRecord) -> (f64, f64) {
    let end = DateTime::parse_from_rfc3339(&record.timestamp).expect("timestamp");
    let end = end.timestamp_micros() as f64 / 1e6;
    (end - record.duration_s, end)
}

fn mock_runner(command: &mut Command, out: &Path) {
    command
        .args(["runner", "--backend", "mock", "--width", "64", "--height", "64", "--steps", "4"])
        .arg("--out")
        .arg(out);
}

// ── imagelab gpus ────────────────────────────────────────────────────────────────────────

#[test]
fn gpus_lists_and_picks_from_a_fake_nvidia_smi() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeSmi::new(dir.path(), TWO_GPUS_ONE_BUSY, ONE_PROCESS_ON_GPU_1);
    let output = fake.command().arg("gpus").output().expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = stdout(&output);
    insta::assert_snapshot!("gpus_table", table);

    let output = fake.command().args(["gpus", "--json"]).output().expect("runs");
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(json["source"], "nvidia-smi");
    let gpus = json["gpus"].as_array().expect("gpus");
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[1]["processes"][0], serde_json::json!({"pid": 4242, "used_memory_mib": 30720}));
    assert_eq!((gpus[0]["idle"].as_bool(), gpus[1]["idle"].as_bool()), (Some(true), Some(false)));
    assert_eq!(gpus[1]["memory_used_mib"], 30721);

    let output = fake.command().args(["gpus", "--pick"]).output().expect("runs");
    assert_eq!((output.status.code(), stdout(&output).as_str()), (Some(0), "0\n"));
    let output = fake.command().args(["gpus", "--pick", "--uuid"]).output().expect("runs");
    assert_eq!(stdout(&output), "GPU-5b8e2d4a-93f1-4c2e-8a7b-1f0e3d6c9a21\n");

    // Only GPU 1 visible to this process: it is busy, so nothing to pick (exit 3).
    let output = fake
        .command()
        .args(["gpus", "--pick"])
        .env("CUDA_VISIBLE_DEVICES", "1")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("no idle GPU"), "{}", stderr(&output));
    assert!(stdout(&output).is_empty());
    // A looser rule makes GPU 0 busy too, by memory: thresholds are flags.
    fake.set(TWO_IDLE_GPUS.replace("143771, 0, 0\n1", "143771, 2048, 0\n1").as_str(), "");
    let output =
        fake.command().args(["gpus", "--pick", "--max-mem-mb", "1000"]).output().expect("runs");
    assert_eq!(stdout(&output), "1\n");
}

#[test]
fn gpus_without_a_driver_says_so_and_exits_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = imagelab();
    // No nvidia-smi on this PATH; NVML is not asked.
    command.env("PATH", dir.path()).env("IMAGELAB_GPU_SOURCE", "nvidia-smi");
    let output = command.args(["gpus", "--pick"]).output().expect("runs");
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no NVIDIA driver found: nvidia-smi not found"),
        "{}",
        stderr(&output)
    );
    // A driver that answers with an error (as nvidia-smi does without a loaded driver).
    let bin = dir.path().join("nvidia-smi");
    fs_err::write(&bin, "#!/bin/sh\necho 'NVIDIA-SMI has failed because it couldn'\\''t communicate with the NVIDIA driver.'\nexit 9\n").expect("script");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut command = imagelab();
    command.env("PATH", dir.path()).env("IMAGELAB_GPU_SOURCE", "nvidia-smi");
    let output = command.arg("gpus").output().expect("runs");
    assert_eq!(output.status.code(), Some(4));
    assert!(
        stderr(&output).contains("couldn't communicate with the NVIDIA driver"),
        "{}",
        stderr(&output)
    );
}

// ── imagelab prompts ─────────────────────────────────────────────────────────────────────

#[test]
fn prompts_are_the_same_for_the_same_seed_and_template_errors_have_positions() {
    let run = |seed: &str| {
        let output = imagelab()
            .args(["prompts", "--count", "5", "--json", "--seed", seed])
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        stdout(&output)
    };
    let first = run("99");
    assert_eq!(first.lines().count(), 5);
    assert_eq!(first, run("99"));
    assert_ne!(first, run("100"));

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mine.ron");
    fs_err::write(&file, "(\n  lists: { \"a\": [\"x\", \"y {b}\"] },\n  templates: [(name: \"t\", text: \"{a}\")],\n)\n").expect("write");
    let output = imagelab().args(["prompts", "--templates"]).arg(&file).output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains(&format!("{}:2:26: list \"a\": unknown slot {{b}}", file.display())),
        "{err}"
    );
}

// ── imagelab runner (binary, mock backend) ───────────────────────────────────────────────

#[test]
fn jobs_n_makes_n_log_lines_and_the_same_seed_the_same_prompts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut logs = Vec::new();
    for run in ["a", "b"] {
        let out = dir.path().join(run);
        let mut command = imagelab();
        mock_runner(&mut command, &out);
        let output = command
            .args(["--jobs", "5", "--seed", "11", "--gpus", "none", "--json"])
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let summary: serde_json::Value =
            serde_json::from_str(stdout(&output).trim()).expect("JSON summary");
        assert_eq!((summary["jobs"].as_u64(), summary["images"].as_u64()), (Some(5), Some(5)));
        assert_eq!(summary["ended_by"], "jobs");
        let records = log_lines(&out);
        assert_eq!(records.len(), 5);
        assert_eq!(pngs_below(&out).len(), 5);
        for record in &records {
            assert_eq!(record.status, ItemStatus::Done);
            let tag = record.runner.as_ref().expect("runner fields");
            assert!(record.prompt.starts_with(&tag.prompt), "{} / {}", record.prompt, tag.prompt);
            assert_eq!(tag.seed, 11);
            assert!(record.run_dir.as_deref().is_some_and(|d| d.ends_with("_runner")));
        }
        let mut by_number: Vec<(u64, String, String, u64)> = records
            .iter()
            .map(|r| {
                let tag = r.runner.as_ref().expect("tag");
                (tag.job, tag.template.clone(), tag.prompt.clone(), r.seed_base)
            })
            .collect();
        by_number.sort();
        logs.push(by_number);
    }
    assert_eq!(logs[0], logs[1], "same seed, same jobs");
    assert_eq!(logs[0].iter().map(|j| j.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    // `imagelab prompts` shows exactly what the runner ran.
    let output = imagelab()
        .args(["prompts", "--count", "5", "--json", "--seed", "11"])
        .output()
        .expect("runs");
    for (line, (number, template, prompt, seed)) in stdout(&output).lines().zip(&logs[0]) {
        let job: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(
            (job["number"].as_u64(), job["template"].as_str()),
            (Some(*number), Some(template.as_str()))
        );
        assert_eq!(
            (job["prompt"].as_str(), job["seed"].as_u64()),
            (Some(prompt.as_str()), Some(*seed))
        );
    }
}

#[test]
fn for_3s_stops_taking_jobs_in_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let mut command = imagelab();
    mock_runner(&mut command, &out);
    command.env("IMAGELAB_MOCK_STEP_MS", "50");
    let started = Instant::now();
    let output = command.args(["--for", "3s", "--gpus", "none", "--json"]).output().expect("runs");
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_str(stdout(&output).trim()).expect("JSON");
    assert_eq!(summary["ended_by"], "time");
    // At most one job (4 steps × 50 ms) runs past the limit; a loaded machine gets slack.
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(30), "{took:?}");
    let records = log_lines(&out);
    assert!(!records.is_empty());
    assert_eq!(records.len() as u64, summary["jobs"].as_u64().expect("jobs"));
}

#[test]
fn two_fake_gpus_run_in_parallel_never_two_jobs_on_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeSmi::new(dir.path(), TWO_IDLE_GPUS, "");
    let out = dir.path().join("out");
    let mut command = fake.command();
    mock_runner(&mut command, &out);
    command.env("IMAGELAB_MOCK_STEP_MS", "40");
    let output =
        command.args(["--jobs", "10", "--seed", "3", "--recheck", "100ms"]).output().expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let records = log_lines(&out);
    assert_eq!(records.len(), 10);
    let mut per_gpu: HashMap<u32, Vec<(f64, f64)>> = HashMap::new();
    for record in &records {
        let gpu = record.runner.as_ref().and_then(|t| t.gpu).expect("a GPU index");
        per_gpu.entry(gpu).or_default().push(interval(record));
    }
    assert_eq!(per_gpu.len(), 2, "both GPUs worked: {per_gpu:?}");
    for (gpu, spans) in &mut per_gpu {
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0 + 1e-3, "GPU {gpu} ran two jobs at once: {pair:?}");
        }
    }
    let overlap = per_gpu[&0].iter().any(|a| per_gpu[&1].iter().any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(overlap, "the two GPUs never worked at the same time: {per_gpu:?}");
    let text = stdout(&output);
    assert!(
        text.contains("GPU 0: ") && text.contains("GPU 1: ") && text.contains("images/hour"),
        "{text}"
    );
}

#[test]
fn a_busy_gpu_is_skipped_until_it_frees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeSmi::new(dir.path(), TWO_GPUS_ONE_BUSY, ONE_PROCESS_ON_GPU_1);
    let out = dir.path().join("out");
    let mut command = fake.command();
    mock_runner(&mut command, &out);
    command.env("IMAGELAB_MOCK_STEP_MS", "40");
    let child = command
        .args(["--jobs", "14", "--seed", "5", "--recheck", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    // Let GPU 0 alone finish a few jobs, then the other process on GPU 1 ends.
    let started = Instant::now();
    while log_lines_if_any(&out) < 3 {
        assert!(started.elapsed() < Duration::from_mins(1), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    fake.set(TWO_IDLE_GPUS, "");
    let output: Output = child.wait_with_output().expect("ends");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mut records = log_lines(&out);
    assert_eq!(records.len(), 14);
    records.sort_by(|a, b| interval(a).0.total_cmp(&interval(b).0));
    let gpus: Vec<u32> =
        records.iter().filter_map(|r| r.runner.as_ref().and_then(|t| t.gpu)).collect();
    assert_eq!(&gpus[..3], [0, 0, 0], "GPU 1 was busy: {gpus:?}");
    assert!(gpus.contains(&1), "GPU 1 was used once it freed: {gpus:?}");
    assert!(
        stderr(&output).contains("[GPU 1] waiting: compute process(es) running: pid 4242"),
        "{}",
        stderr(&output)
    );
}

fn log_lines_if_any(out: &Path) -> usize {
    jobs_log::read_all(out).map_or(0, |contents| contents.records.len())
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeSmi::new(dir.path(), TWO_GPUS_ONE_BUSY, ONE_PROCESS_ON_GPU_1);
    let out = dir.path().join("out");
    let mut command = fake.command();
    mock_runner(&mut command, &out);
    let output = command.args(["--jobs", "3", "--seed", "8", "--dry-run"]).output().expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plan = stdout(&output);
    assert!(plan.contains("worker GPU 0 NVIDIA H200 on cuda:0: idle now"), "{plan}");
    assert!(
        plan.contains(
            "worker GPU 1 NVIDIA H200 on cuda:1: busy now (compute process(es) running: pid 4242)"
        ),
        "{plan}"
    );
    assert!(plan.contains("limit: 3 job(s)") && plan.contains("#3 "), "{plan}");
    assert!(!out.exists(), "a dry run writes nothing");
    // `--gpus` names a GPU that is not there: exit 2 before any work.
    let mut command = fake.command();
    mock_runner(&mut command, &out);
    let output = command.args(["--jobs", "3", "--gpus", "0,5"]).output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--gpus: there is no GPU 5; GPUs here: 0, 1"),
        "{}",
        stderr(&output)
    );
    assert!(!out.exists());
}

#[test]
fn consecutive_failures_retire_the_gpu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let mut command = imagelab();
    mock_runner(&mut command, &out);
    command.env("IMAGELAB_MOCK_FAIL_MODEL", "SDXL Turbo");
    let output = command
        .args(["--jobs", "10", "--gpus", "none", "--models", "SDXL Turbo", "--max-failures", "3"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let records = log_lines(&out);
    assert_eq!(records.len(), 3, "each failure is logged, then the GPU retires");
    assert!(records.iter().all(|r| r.status == ItemStatus::Failed && r.error.is_some()));
    assert!(stderr(&output).contains("retired: 3 failures in a row"), "{}", stderr(&output));
    assert!(stdout(&output).contains("ended by every GPU retiring"), "{}", stdout(&output));
}

#[test]
fn the_runner_on_candle_makes_what_diffusers_made() {
    let root = crate::util::repo_root().join("tests/fixtures/diffusion");
    let runs: serde_json::Value =
        serde_json::from_slice(&fs_err::read(root.join("refs/sdxl_tiny/runs.json")).expect("runs"))
            .expect("json");
    let run = &runs["runs"]["txt2img_cfg7_neg"];
    let dir = tempfile::tempdir().expect("tempdir");
    let templates = dir.path().join("astronaut.ron");
    fs_err::write(
        &templates,
        format!(
            "(seeds: Fixed({}), negative: {:?}, models: [{:?}],\n templates: [(name: \"astronaut\", text: {:?})])",
            run["seed"],
            run["negative"].as_str().expect("negative"),
            root.join("sdxl_tiny").display().to_string(),
            run["prompt"].as_str().expect("prompt"),
        ),
    )
    .expect("write");
    let out = dir.path().join("out");
    let output = imagelab()
        .args(["runner", "--backend", "candle", "--gpus", "none", "--device", "cpu", "--jobs", "1"])
        .arg("--templates")
        .arg(&templates)
        .args(["--steps", &run["steps"].to_string(), "--cfg", &run["cfg"].to_string()])
        .args(["--width", &run["width"].to_string(), "--height", &run["height"].to_string()])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let pngs = pngs_below(&out);
    assert_eq!(pngs.len(), 1);
    let ours = image::open(&pngs[0]).expect("png").to_rgb8();
    let bytes = fs_err::read(root.join("refs/sdxl_tiny/reference.safetensors")).expect("reference");
    let reference = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let theirs = reference.tensor("txt2img_cfg7_neg.image_u8").expect("image");
    assert_eq!(theirs.shape(), [ours.height() as usize, ours.width() as usize, 3]);
    let worst =
        ours.as_raw().iter().zip(theirs.data()).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
    assert!(worst <= 1, "pixels differ by {worst} levels");
    let record = &log_lines(&out)[0];
    assert_eq!(record.runner.as_ref().map(|t| t.template.as_str()), Some("astronaut"));
}

// ── the library: fake GPUs, stops, grouping, parallelism ─────────────────────────────────

fn runner_setup(
    out: &Path,
    slots: Vec<Slot>,
    max_jobs: Option<u64>,
    models: &[&str],
) -> RunnerSetup {
    let profiles = Profiles::builtin();
    let catalog = Catalog::builtin();
    let set = TemplateSet::parse(
        "(lists: {\"animal\": [\"fox\", \"owl\", \"hare\"]}, templates: [(name: \"t\", text: \"a {animal} at night\")])",
        "test.ron",
        imagelab::runner::templates::Format::Ron,
        &profiles,
        &catalog,
    )
    .expect("templates");
    let choices = RunChoices {
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        profiles: Vec::new(),
    };
    let generator = Generator::new(set, 21, &choices, &profiles, &catalog).expect("generator");
    RunnerSetup {
        generator,
        profiles,
        catalog,
        max_jobs,
        deadline: None,
        slots,
        idle: None,
        settings: JobSettings {
            width: Some(64),
            height: Some(64),
            steps: Some(4),
            ..JobSettings::default()
        },
        output_root: out.to_owned(),
        instance_id: None,
        run_dir: PathBuf::from("20260101-000000_runner"),
        max_failures: 3,
        lookahead: 256,
    }
}

fn mock_factory(step: Duration) -> BackendFactory {
    Arc::new(move |_slot: &Slot| {
        Ok(Box::new(MockBackend::new().with_step_delay(step)) as Box<dyn Backend>)
    })
}

fn run(setup: RunnerSetup, factory: BackendFactory, stop: &StopToken) -> RunSummary {
    RunnerHandle::start(setup, factory, stop.clone(), imagelab::engine::no_waker())
        .expect("starts")
        .wait()
        .expect("a summary")
}

#[test]
fn jobs_are_grouped_by_model_so_models_load_rarely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = ["SDXL Turbo", "DreamShaper XL", "Juggernaut XL"];
    let setup =
        runner_setup(dir.path(), vec![Slot::on_device(DeviceChoice::Cpu)], Some(12), &models);
    let summary = run(setup, mock_factory(Duration::ZERO), &StopToken::new());
    assert_eq!(summary.jobs, 12);
    let records = log_lines(dir.path());
    let mut in_order: Vec<(f64, String)> =
        records.iter().map(|r| (interval(r).1, r.model.clone())).collect();
    in_order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut runs: Vec<String> = Vec::new();
    for (_, model) in in_order {
        if runs.last() != Some(&model) {
            runs.push(model);
        }
    }
    let distinct: std::collections::HashSet<&String> = runs.iter().collect();
    assert_eq!(runs.len(), distinct.len(), "each model loaded once: {runs:?}");
    assert_eq!(summary.workers[0].model_switches, distinct.len() as u64);
}

/// A backend that holds every image until two images run at once (across its clones) and
/// counts, per GPU, how many run at the same moment.
#[derive(Clone)]
struct Rendezvous {
    inner: MockBackend,
    barrier: Arc<Barrier>,
    running: Arc<Vec<AtomicUsize>>,
    worst: Arc<Vec<AtomicUsize>>,
    gpu: usize,
    first: bool,
}

impl Backend for Rendezvous {
    fn name(&self) -> &'static str {
        "rendezvous"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn device_label(&self) -> String {
        format!("fake:{}", self.gpu)
    }
    fn load(
        &mut self,
        model: &ModelRef,
        device: DeviceChoice,
        dtype: Option<Precision>,
        on_progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<LoadedModel, BackendError> {
        self.inner.load(model, device, dtype, on_progress)
    }
    fn generate(
        &mut self,
        params: &GenerateParams,
        on_step: &mut dyn FnMut(StepUpdate<'_>) -> ControlFlow<()>,
    ) -> Result<Generated, BackendError> {
        let now = self.running[self.gpu].fetch_add(1, Ordering::SeqCst) + 1;
        self.worst[self.gpu].fetch_max(now, Ordering::SeqCst);
        if self.first {
            // Both workers' first images meet here: proof they run at the same time.
            self.first = false;
            self.barrier.wait();
        }
        let result = self.inner.generate(params, on_step);
        self.running[self.gpu].fetch_sub(1, Ordering::SeqCst);
        result
    }
}

#[test]
fn two_gpus_two_workers_at_once_and_a_busy_one_waits_until_free() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gpus = FixedGpus::new(vec![FixedGpus::idle_gpu(0), FixedGpus::idle_gpu(1)]);
    let mut visible = gpus.clone().query().expect("gpus");
    Visibility::default().apply(&mut visible);
    let slots: Vec<Slot> = visible.iter().filter_map(Slot::for_gpu).collect();
    assert_eq!(slots[1].device, DeviceChoice::Cuda(1));
    let mut setup = runner_setup(dir.path(), slots, Some(12), &[]);
    setup.idle = Some(Arc::new(IdleWatch::new(
        Box::new(gpus.clone()),
        Visibility::default(),
        IdleRule::default(),
        Duration::from_millis(20),
    )));
    let barrier = Arc::new(Barrier::new(2));
    let running = Arc::new(vec![AtomicUsize::new(0), AtomicUsize::new(0)]);
    let worst = Arc::new(vec![AtomicUsize::new(0), AtomicUsize::new(0)]);
    let (b, r, w) = (barrier.clone(), running.clone(), worst.clone());
    let factory: BackendFactory = Arc::new(move |slot: &Slot| {
        let gpu = slot.gpu.as_ref().map_or(0, |g| g.index as usize);
        Ok(Box::new(Rendezvous {
            inner: MockBackend::new().with_step_delay(Duration::from_millis(5)),
            barrier: b.clone(),
            running: r.clone(),
            worst: w.clone(),
            gpu,
            first: true,
        }) as Box<dyn Backend>)
    });
    let summary = run(setup, factory, &StopToken::new());
    assert_eq!(summary.jobs, 12);
    assert!(summary.workers.iter().all(|w| w.jobs > 0), "{:?}", summary.workers);
    assert_eq!(worst[0].load(Ordering::SeqCst), 1, "never two images at once on GPU 0");
    assert_eq!(worst[1].load(Ordering::SeqCst), 1, "never two images at once on GPU 1");

    // GPU 1 busy (another process): its worker waits; freed, it works.
    let dir = tempfile::tempdir().expect("tempdir");
    gpus.update(1, |gpu| gpu.processes.push(GpuProcess { pid: 4242, used_memory_mib: Some(9000) }));
    let mut visible = gpus.clone().query().expect("gpus");
    Visibility::default().apply(&mut visible);
    let mut setup =
        runner_setup(dir.path(), visible.iter().filter_map(Slot::for_gpu).collect(), None, &[]);
    let watch = Arc::new(IdleWatch::new(
        Box::new(gpus.clone()),
        Visibility::default(),
        IdleRule::default(),
        Duration::from_millis(20),
    ));
    setup.idle = Some(watch);
    let stop = StopToken::new();
    let handle = RunnerHandle::start(
        setup,
        mock_factory(Duration::from_millis(5)),
        stop.clone(),
        imagelab::engine::no_waker(),
    )
    .expect("starts");
    let mut done_on = [0usize; 2];
    let mut freed = false;
    for event in handle.events() {
        match event {
            imagelab::runner::RunnerEvent::JobFinished { slot, .. } => {
                done_on[slot] += 1;
                if done_on[0] == 4 && !freed {
                    assert_eq!(done_on[1], 0, "GPU 1 is busy");
                    gpus.update(1, |gpu| gpu.processes.clear());
                    freed = true;
                }
                if done_on[1] >= 2 {
                    stop.raise(StopLevel::Finish);
                }
            }
            imagelab::runner::RunnerEvent::Finished(summary) => {
                assert_eq!(summary.ended_by, EndReason::Stopped);
            }
            _ => {}
        }
    }
    assert!(done_on[1] >= 2, "{done_on:?}");
}

#[test]
fn a_stop_mid_job_finishes_the_image_then_a_second_cancels_without_partial_files() {
    // First stop while an image forms: it completes and is logged; nothing else starts.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut setup = runner_setup(dir.path(), vec![Slot::on_device(DeviceChoice::Cpu)], None, &[]);
    setup.settings.steps = Some(20);
    let stop = StopToken::new();
    let handle = RunnerHandle::start(
        setup,
        mock_factory(Duration::from_millis(20)),
        stop.clone(),
        imagelab::engine::no_waker(),
    )
    .expect("starts");
    let mut summary = None;
    for event in handle.events() {
        match event {
            imagelab::runner::RunnerEvent::Progress { step: 3, .. } => {
                stop.raise(StopLevel::Finish);
            }
            imagelab::runner::RunnerEvent::Finished(done) => summary = Some(done),
            _ => {}
        }
    }
    let summary = summary.expect("summary");
    assert_eq!((summary.jobs, summary.images, summary.ended_by), (1, 1, EndReason::Stopped));
    let records = log_lines(dir.path());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, ItemStatus::Done);
    assert_eq!(pngs_below(dir.path()).len(), 1);

    // Finish, then cancel: the image in progress is dropped whole, its line says interrupted
    // (the engine's clean stop; `imagelab resume` would make it again).
    let dir = tempfile::tempdir().expect("tempdir");
    let mut setup = runner_setup(dir.path(), vec![Slot::on_device(DeviceChoice::Cpu)], None, &[]);
    setup.settings.steps = Some(200);
    let stop = StopToken::new();
    let handle = RunnerHandle::start(
        setup,
        mock_factory(Duration::from_millis(20)),
        stop.clone(),
        imagelab::engine::no_waker(),
    )
    .expect("starts");
    for event in handle.events() {
        if let imagelab::runner::RunnerEvent::Progress { step: 3, .. } = event {
            assert_eq!(stop.escalate(), StopLevel::Finish);
            assert_eq!(stop.escalate(), StopLevel::Cancel);
        }
    }
    let records = log_lines(dir.path());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, ItemStatus::Interrupted);
    assert!(records[0].paths.is_empty());
    let leftovers: Vec<PathBuf> = crate::util::files_below(dir.path())
        .into_iter()
        .filter(|p| !p.ends_with("jobs.log"))
        .collect();
    assert!(leftovers.is_empty(), "no partial file: {leftovers:?}");
}

#[test]
fn sigterm_mid_job_finishes_the_image_logs_it_and_prints_the_summary() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let mut command = imagelab();
    command
        .args(["runner", "--backend", "mock", "--width", "64", "--height", "64", "--steps", "40"])
        .args(["--gpus", "none", "--jobs", "50", "--seed", "4"])
        .arg("--out")
        .arg(&out)
        .env("IMAGELAB_MOCK_STEP_MS", "50")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("starts");
    let stderr_pipe = child.stderr.take().expect("stderr");
    let (tx, rx) = crossbeam_channel::bounded::<String>(256);
    let reader = std::thread::Builder::new()
        .name("stderr-reader".into())
        .spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        })
        .expect("thread");
    // Job #1 has started (its first of 40 steps is under way): stop it.
    let started = Instant::now();
    loop {
        let line = rx.recv_timeout(Duration::from_mins(1)).expect("the run starts");
        if line.starts_with("[auto] #1 ") || line.contains("] #1 ") {
            break;
        }
        assert!(started.elapsed() < Duration::from_mins(1));
    }
    std::thread::sleep(Duration::from_millis(300));
    let status =
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("ends");
    let _ = reader.join();
    let err: Vec<String> = rx.try_iter().collect();
    assert_eq!(output.status.code(), Some(0), "a stop ends a runner run normally: {err:?}");
    let summary = stdout(&output);
    assert!(summary.contains("ended by a stop request"), "{summary}");
    let records = log_lines(&out);
    assert_eq!(records.len(), 1, "the running job's line, and no job after it: {records:?}");
    assert_eq!(records[0].paths.len(), 1, "its image finished: {:?}", records[0]);
    let pngs = pngs_below(&out);
    assert_eq!(pngs.len(), 1);
    image::open(&pngs[0]).expect("a complete PNG");
    let partial: Vec<PathBuf> = crate::util::files_below(&out)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(".tmp")))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
}
