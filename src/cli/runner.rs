//! `imagelab prompts` (what the generator makes) and `imagelab runner` (generated jobs on every
//! idle GPU until a job count, a time, or a stop).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::gpus::IdleArgs;
use super::{CliError, Outcome};
use crate::app::config::{BACKEND_VAR, DEVICE_VAR, OUTPUT_DIR_VAR};
use crate::app::{BackendChoice, DEFAULT_OUTPUT_DIR, FrontEndConfig, make_backend};
use crate::engine::{StopMode, no_waker};
use crate::gpu::open_source;
use crate::models::catalog::Catalog;
use crate::request::Profiles;
use crate::runner::limits::{parse_duration, parse_until};
use crate::runner::pool::{GpuChoice, GpuOpener, SlotError, plan_slots};
use crate::runner::{
    BackendFactory, GeneratedJob, Generator, IdleWatch, JobSettings, RunChoices, RunSummary,
    RunnerEvent, RunnerHandle, RunnerSetup, Slot, StopLevel, StopToken, TemplateSet, WorkerState,
};
use crate::storage::inputs::check_output_dir;
use crate::storage::jobs_log::ItemStatus;
use crate::vocab::{DeviceChoice, Precision, SamplerKind, SigmaSchedule};

/// How far the scheduler looks ahead to group jobs by model.
const LOOKAHEAD: usize = 256;
/// Jobs `--dry-run` lists when the run has no job limit.
const DRY_RUN_SHOWN: u64 = 20;

/// The template file and choices shared by `prompts` and `runner`.
#[derive(Debug, Clone, Args)]
pub struct GeneratorArgs {
    /// Template file (RON, or JSON when named *.json); default: the built-in one.
    #[arg(long, value_name = "FILE")]
    pub templates: Option<PathBuf>,
    /// Run seed: the same file and seed give the same jobs on any machine (default: random,
    /// printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Models the jobs may use (comma-separated or repeated): narrows the templates' own lists,
    /// or supplies one where a template names none. Default: SDXL Base 1.0.
    #[arg(long, value_delimiter = ',', value_name = "MODEL")]
    pub models: Vec<String>,
    /// Style profiles the jobs may use, likewise (default: the templates' own, else none).
    #[arg(long, value_delimiter = ',', value_name = "PROFILE")]
    pub profiles: Vec<String>,
}

impl GeneratorArgs {
    /// The generator these flags describe, and whether its seed was drawn here.
    fn generator(
        &self,
        profiles: &Profiles,
        catalog: &Catalog,
    ) -> Result<(Generator, bool), CliError> {
        let set = match &self.templates {
            Some(path) => TemplateSet::load(path, profiles, catalog),
            None => TemplateSet::builtin(profiles, catalog),
        }
        .map_err(|err| CliError::Usage(err.to_string()))?;
        let drawn = self.seed.is_none();
        let seed = self.seed.unwrap_or_else(crate::request::plan::random_seed);
        let choices = RunChoices {
            models: self
                .models
                .iter()
                .map(|m| m.trim().to_owned())
                .filter(|m| !m.is_empty())
                .collect(),
            profiles: self
                .profiles
                .iter()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        };
        let generator = Generator::new(set, seed, &choices, profiles, catalog)?;
        for note in generator.notes() {
            eprintln!("note: {note}");
        }
        Ok((generator, drawn))
    }
}

/// Flags of `imagelab prompts`.
#[derive(Debug, Clone, Args)]
pub struct PromptsArgs {
    /// How many jobs to show.
    #[arg(long, default_value_t = 10)]
    pub count: u64,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub generator: GeneratorArgs,
}

/// Runs `imagelab prompts`.
///
/// # Errors
/// A bad template file or choice (exit 2).
pub fn run_prompts(args: &PromptsArgs, config: &FrontEndConfig) -> Result<Outcome, CliError> {
    let profiles = config.profiles().map_err(|err| CliError::Usage(err.to_string()))?;
    let (generator, drawn) = args.generator.generator(&profiles, &Catalog::builtin())?;
    if drawn {
        eprintln!("seed {0} (repeat with --seed {0})", generator.run_seed());
    }
    for number in 1..=args.count {
        let job = generator.job(number);
        if args.json {
            let line = serde_json::to_string(&job)
                .map_err(|err| CliError::Failed(format!("cannot write JSON: {err}")))?;
            println!("{line}");
        } else {
            print!("{}", format_job(&job));
        }
    }
    Ok(Outcome::Done)
}

/// `#12 portrait · SDXL Base 1.0 · Photoreal · seed 7` and the prompt, indented.
pub fn format_job(job: &GeneratedJob) -> String {
    let mut out = format!(
        "#{} {} · {} · {} · seed {}\n    {}\n",
        job.number, job.template, job.model, job.profile, job.seed, job.prompt
    );
    if !job.negative.is_empty() {
        let _ = writeln!(out, "    negative: {}", job.negative);
    }
    out
}

/// Flags of `imagelab runner`.
#[derive(Debug, Clone, Args)]
#[allow(clippy::struct_excessive_bools, reason = "one field per command-line switch")]
pub struct RunnerArgs {
    /// Stop after N jobs (each job has a jobs-log line).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: Option<u64>,
    /// Take no new job after this long: 90s, 45m, 8h, 1h30m.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub for_: Option<Duration>,
    /// Take no new job after this local time (HH:MM, the next one to come).
    #[arg(long, value_name = "HH:MM")]
    pub until: Option<String>,
    /// GPUs: `auto` (every idle one, re-checked before each job), a list like `0,2,3`
    /// (indices as `imagelab gpus` prints them), or `none` (one worker on --device).
    #[arg(long, default_value = "auto")]
    pub gpus: String,
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Images per job (seeds seed, seed + 1, …).
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    /// Width in pixels (default: each model's).
    #[arg(long)]
    pub width: Option<u32>,
    /// Height in pixels (default: each model's).
    #[arg(long)]
    pub height: Option<u32>,
    /// Denoising steps (default: the profile's, else the model's).
    #[arg(long)]
    pub steps: Option<u32>,
    /// CFG scale (default: the profile's, else the model's).
    #[arg(long, allow_negative_numbers = true)]
    pub cfg: Option<f32>,
    /// Sampler (default: the profile's, else the model's).
    #[arg(long, value_parser = SamplerKind::parse)]
    pub scheduler: Option<SamplerKind>,
    /// Sigma schedule: automatic, karras, exponential, `sgm_uniform`.
    #[arg(long, default_value = "automatic", value_parser = SigmaSchedule::parse)]
    pub schedule_type: SigmaSchedule,
    /// f32, f16 or bf16.
    #[arg(long, value_parser = Precision::parse)]
    pub dtype: Option<Precision>,
    /// Output root (the run writes into `<out>/<YYYYmmdd-HHMMSS>_runner/`).
    #[arg(long, env = OUTPUT_DIR_VAR, default_value = DEFAULT_OUTPUT_DIR)]
    pub out: PathBuf,
    /// candle or mock.
    #[arg(long, env = BACKEND_VAR, default_value = "candle", value_parser = BackendChoice::parse)]
    pub backend: BackendChoice,
    /// Device of the single worker when no NVIDIA GPU is used (`--gpus none`, or none found).
    #[arg(long, env = DEVICE_VAR, default_value = "auto", value_parser = DeviceChoice::parse)]
    pub device: DeviceChoice,
    /// Failures in a row that retire a GPU.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_failures: u32,
    /// How often a busy GPU is looked at again (`--gpus auto`).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration_or_ms)]
    pub recheck: Duration,
    #[command(flatten)]
    pub idle: IdleArgs,
    /// Print the plan (GPUs, limits, the first jobs) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// The summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--recheck` also takes milliseconds (`500ms`), for tests and fast demos.
fn parse_duration_or_ms(text: &str) -> Result<Duration, String> {
    match text.trim().strip_suffix("ms") {
        Some(ms) => ms
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("{text:?} is not a duration like 500ms or 10s")),
        None => parse_duration(text),
    }
}

/// The workers a `--gpus` value asks for, the idle watch for `auto`, and notes.
#[allow(clippy::type_complexity, reason = "slots, watch and notes belong together")]
fn plan_workers(
    args: &RunnerArgs,
    config: &FrontEndConfig,
) -> Result<(Vec<Slot>, Option<Arc<IdleWatch>>, Vec<String>), CliError> {
    let choice = GpuChoice::parse(&args.gpus).map_err(CliError::Usage)?;
    let source_choice = config.gpu_source()?;
    let open: GpuOpener = Arc::new(move || open_source(source_choice));
    plan_slots(
        &choice,
        args.device,
        &open,
        &config.gpu_visibility(),
        args.idle.rule(),
        args.recheck,
    )
    .map_err(|err| match err {
        SlotError::Usage(text) => CliError::Usage(text),
        SlotError::NoGpu(text) => CliError::NoGpu(text),
    })
}

/// The run folder name for a start time.
pub fn run_dir_name(now: chrono::DateTime<chrono::Local>) -> PathBuf {
    PathBuf::from(format!("{}_runner", now.format("%Y%m%d-%H%M%S")))
}

/// Runs `imagelab runner` with `stop` (raised by signals or tests) as its stop request.
///
/// # Errors
/// Bad flags or template file (exit 2), no NVIDIA driver with `--gpus 0,2` (exit 4).
pub fn run_runner(
    args: &RunnerArgs,
    config: &FrontEndConfig,
    stop: &StopToken,
) -> Result<Outcome, CliError> {
    let profiles = config.profiles().map_err(|err| CliError::Usage(err.to_string()))?;
    let catalog = Catalog::builtin();
    let (generator, drawn) = args.generator.generator(&profiles, &catalog)?;
    let now = chrono::Local::now();
    let started = Instant::now();
    let mut deadline = args.for_.map(|d| started + d);
    if let Some(until) = &args.until {
        let at =
            parse_until(until, now).map_err(|err| CliError::Usage(format!("--until: {err}")))?;
        let wait = (at - now).to_std().unwrap_or_default();
        deadline = Some(deadline.map_or(started + wait, |d| d.min(started + wait)));
    }
    let (slots, idle, notes) = plan_workers(args, config)?;
    for note in &notes {
        eprintln!("note: {note}");
    }
    let setup = RunnerSetup {
        generator,
        profiles,
        catalog,
        max_jobs: args.jobs,
        deadline,
        slots,
        idle,
        settings: JobSettings {
            batch: args.batch,
            width: args.width,
            height: args.height,
            steps: args.steps,
            cfg: args.cfg,
            scheduler: args.scheduler,
            schedule_type: args.schedule_type,
            dtype: args.dtype,
        },
        output_root: args.out.clone(),
        instance_id: config.instance_id(),
        run_dir: run_dir_name(now),
        max_failures: args.max_failures,
        lookahead: LOOKAHEAD,
    };
    setup.validate()?;
    if args.dry_run {
        print!("{}", format_plan(&setup, args));
        return Ok(Outcome::Done);
    }
    if drawn {
        eprintln!("seed {0} (repeat with --seed {0})", setup.generator.run_seed());
    }
    check_output_dir(&args.out).map_err(|err| CliError::Usage(format!("--out: {err}")))?;
    // Built once up front, so a bad IMAGELAB_MOCK_* value is a usage error, not a retired GPU.
    let backend = args.backend;
    make_backend(backend, config, Duration::ZERO)?;
    let factory_config = config.clone();
    let factory: BackendFactory = Arc::new(move |_slot: &Slot| {
        make_backend(backend, &factory_config, Duration::ZERO).map_err(|err| err.to_string())
    });
    // SIGINT/SIGTERM (app::stop): the first lets running images finish, the second cancels.
    let stops = super::generate::install_stop_signals(config.stop_grace()?)?;
    let token = stop.clone();
    stops.on_request(move |request| {
        token.raise(match request.mode {
            StopMode::AfterImage => StopLevel::Finish,
            StopMode::Now => StopLevel::Cancel,
        });
    });
    let labels: Vec<String> = setup.slots.iter().map(Slot::label).collect();
    let handle =
        RunnerHandle::start(setup, factory, stop.clone(), no_waker()).map_err(CliError::Failed)?;
    let mut summary = None;
    for event in handle.events() {
        match event {
            RunnerEvent::Finished(done) => summary = Some(done),
            other => report_event(&labels, &other),
        }
    }
    drop(handle);
    let Some(summary) = summary else {
        return Err(CliError::Failed("the runner stopped without a summary".into()));
    };
    if args.json {
        let text = serde_json::to_string(&summary)
            .map_err(|err| CliError::Failed(format!("cannot write JSON: {err}")))?;
        println!("{text}");
    } else {
        print!("{}", format_summary(&summary));
    }
    // A stop is how an open-ended runner ends (issue 12): after its summary it exits like a
    // run that reached its limit (0, or 1 when jobs failed), not 130/143 as `generate` does.
    let retired_all = summary.workers.iter().all(|w| w.retired.is_some());
    Ok(if summary.failed > 0 || retired_all { Outcome::SomeFailed } else { Outcome::Done })
}

/// One stderr line per event that matters.
fn report_event(labels: &[String], event: &RunnerEvent) {
    let label = |slot: &usize| labels.get(*slot).map_or("?", String::as_str);
    match event {
        RunnerEvent::Worker { slot, state } => match state {
            WorkerState::Waiting(why) => eprintln!("[{}] waiting: {why}", label(slot)),
            WorkerState::Retired(why) => eprintln!("[{}] retired: {why}", label(slot)),
            WorkerState::Starting | WorkerState::Working | WorkerState::Finished => {}
        },
        RunnerEvent::JobStarted { slot, job } => eprintln!(
            "[{}] #{} {} · {} · {} · seed {}: {}",
            label(slot),
            job.number,
            job.template,
            job.model,
            job.profile,
            job.seed,
            job.prompt
        ),
        RunnerEvent::JobFinished { slot, outcome } => match outcome.status {
            ItemStatus::Done => eprintln!(
                "[{}] #{} done: {} image(s) in {:.1} s",
                label(slot),
                outcome.number,
                outcome.images.len(),
                outcome.duration_s
            ),
            ItemStatus::Failed => eprintln!(
                "[{}] #{} failed: {}",
                label(slot),
                outcome.number,
                outcome.error.as_deref().unwrap_or("?")
            ),
            ItemStatus::Cancelled | ItemStatus::Interrupted => eprintln!(
                "[{}] #{} stopped ({} image(s) kept)",
                label(slot),
                outcome.number,
                outcome.images.len()
            ),
        },
        RunnerEvent::Progress { .. } | RunnerEvent::Finished(_) => {}
    }
}

/// The human summary: totals, then one line per GPU.
pub fn format_summary(summary: &RunSummary) -> String {
    let mut out = format!(
        "runner: {} job(s), {} image(s), {} failed, {} cancelled in {:.1} s ({:.1} images/hour); ended by {}\n",
        summary.jobs,
        summary.images,
        summary.failed,
        summary.cancelled,
        summary.duration_s,
        summary.images_per_hour,
        match summary.ended_by {
            crate::runner::EndReason::Jobs => "the job limit",
            crate::runner::EndReason::Time => "the time limit",
            crate::runner::EndReason::Stopped => "a stop request",
            crate::runner::EndReason::AllRetired => "every GPU retiring",
        }
    );
    for worker in &summary.workers {
        let _ = write!(
            out,
            "  {}: {} job(s), {} image(s), {} failed, {:.1} images/hour, {} model load(s)",
            worker.label,
            worker.jobs,
            worker.images,
            worker.failed,
            worker.images_per_hour,
            worker.model_switches
        );
        if let Some(why) = &worker.retired {
            let _ = write!(out, "; retired: {why}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "run folder: {}", summary.run_dir.display());
    let _ = writeln!(out, "seed: {} (same prompts with --seed {})", summary.seed, summary.seed);
    out
}

/// What `--dry-run` prints.
fn format_plan(setup: &RunnerSetup, args: &RunnerArgs) -> String {
    let templates = setup.generator.templates();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "templates: {} ({} templates, {} lists, {} distinct prompts)",
        templates.file,
        templates.templates.len(),
        templates.lists.len(),
        templates.combinations()
    );
    let _ = writeln!(out, "seed: {}", setup.generator.run_seed());
    let mut limits = Vec::new();
    if let Some(jobs) = setup.max_jobs {
        limits.push(format!("{jobs} job(s)"));
    }
    if let Some(duration) = args.for_ {
        limits.push(format!("for {} s", duration.as_secs()));
    }
    if let Some(until) = &args.until {
        limits.push(format!("until {until}"));
    }
    let _ = writeln!(
        out,
        "limit: {}",
        if limits.is_empty() {
            "none (runs until stopped)".to_owned()
        } else {
            limits.join(", whichever first: ")
        }
    );
    let _ = writeln!(out, "output: {}", setup.output_root.join(&setup.run_dir).display());
    let _ = writeln!(out, "backend: {:?}, batch {}", args.backend, setup.settings.batch);
    for slot in &setup.slots {
        let state = match (&setup.idle, &slot.gpu) {
            (Some(watch), Some(gpu)) => match watch.check(gpu.index, false) {
                Ok(()) => "idle now".to_owned(),
                Err(why) => format!("busy now ({why}); used once idle"),
            },
            (None, Some(_)) => "used as given".to_owned(),
            (_, None) => "no GPU checks".to_owned(),
        };
        let name = slot.gpu.as_ref().map_or(String::new(), |g| format!(" {}", g.name));
        let _ = writeln!(out, "worker {}{name} on {}: {state}", slot.label(), slot.device);
    }
    let shown = setup.max_jobs.unwrap_or(DRY_RUN_SHOWN);
    let _ = writeln!(
        out,
        "jobs{}:",
        if setup.max_jobs.is_none() { format!(" (first {shown})") } else { String::new() }
    );
    for number in 1..=shown {
        out.push_str(&format_job(&setup.generator.job(number)));
    }
    out
}
