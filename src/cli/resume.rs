//! `imagelab resume [RUN_DIR]`: finishes the unfinished jobs of an output folder's persistent
//! queue — every image not on disk, once, in the same folders, with the same seeds — and reports
//! like `generate` (files on stdout or one JSON object, exit 0/1/130/143).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;

use super::generate::{install_stop_signals, outcome_of, run_until_finished};
use super::{CliError, Outcome, report};
use crate::app::config::BACKEND_VAR;
use crate::app::{BackendChoice, EngineSetup, FrontEndConfig};
use crate::app::{StopSignal, StopSignals};
use crate::engine::{
    Engine, EngineError, ResumeOptions, UnfinishedJob, check_plan_models, no_waker, queue,
};
use crate::runner::limits::{parse_duration, parse_until};
use crate::storage::journal::{self, Shard};
use crate::vocab::DeviceChoice;

/// Flags of `imagelab resume`.
#[derive(Debug, Clone, Args)]
#[allow(clippy::struct_excessive_bools, reason = "one field per command-line switch")]
pub struct ResumeArgs {
    /// The output folder, or a sweep folder inside it (default: `IMAGELAB_OUTPUT_DIR`, else
    /// `output_images`).
    pub dir: Option<PathBuf>,
    /// Only list the unfinished jobs.
    #[arg(long)]
    pub list: bool,
    /// Only this job (an id from `--list`).
    #[arg(long)]
    pub job: Option<String>,
    /// Also run again the items that failed, in unfinished jobs and in jobs that ran to
    /// their end (each failed item once; its saved images are kept).
    #[arg(long)]
    pub retry_failed: bool,
    /// candle or mock (default: the backend the jobs ran on).
    #[arg(long, env = BACKEND_VAR, value_parser = BackendChoice::parse)]
    pub backend: Option<BackendChoice>,
    /// Run on this device instead of the recorded one: auto, cpu, cuda:N or metal.
    #[arg(long, value_parser = DeviceChoice::parse)]
    pub device: Option<DeviceChoice>,
    /// Run only shard K of N of each job (its items `index % N == K`), while other processes
    /// — Slurm array tasks, other machines — run the other shards into the same folder.
    #[arg(long, value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// On a Slurm run folder: run its unfinished jobs here instead of resubmitting them to
    /// Slurm.
    #[arg(long)]
    pub local: bool,
    /// Take no new image after this long (90s, 45m, 8h, 1h30m): the running image finishes,
    /// the rest stays in the queue for the next resume. Exits 0 unless an item failed.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub for_: Option<Duration>,
    /// Take no new image after this local time (HH:MM, the next one to come), as --for.
    #[arg(long, value_name = "HH:MM")]
    pub until: Option<String>,
}

/// When a resume stops taking images (`--for`, `--until`, whichever first), from `now`.
///
/// # Errors
/// A bad `--until` (named).
pub fn time_limit(
    for_: Option<Duration>,
    until: Option<&str>,
    now: chrono::DateTime<chrono::Local>,
) -> Result<Option<Duration>, CliError> {
    let mut limit = for_;
    if let Some(until) = until {
        let at =
            parse_until(until, now).map_err(|err| CliError::Usage(format!("--until: {err}")))?;
        let wait = (at - now).to_std().unwrap_or_default();
        limit = Some(limit.map_or(wait, |limit| limit.min(wait)));
    }
    Ok(limit)
}

/// Asks for a graceful stop (as a first SIGTERM does) once `limit` has passed, unless a stop
/// was asked for already; the flag says the time limit did it.
fn stop_after(limit: Duration, stops: &StopSignals) -> Result<Arc<AtomicBool>, CliError> {
    let reached = Arc::new(AtomicBool::new(false));
    let (flag, stops) = (Arc::clone(&reached), stops.clone());
    std::thread::Builder::new()
        .name("imagelab-time-limit".into())
        .spawn(move || {
            std::thread::sleep(limit);
            if stops.request().is_none() {
                flag.store(true, Ordering::SeqCst);
                eprintln!("time limit reached: finishing the running image, then stopping");
                stops.deliver(StopSignal::Terminate);
            }
        })
        .map_err(|err| CliError::Failed(format!("cannot start the time-limit thread: {err}")))?;
    Ok(reached)
}

/// Where a resume looks: the output root, and the sweep folder asked for, if one was.
fn locate(dir: &Path) -> Result<(PathBuf, Option<PathBuf>), CliError> {
    if !dir.is_dir() {
        return Err(CliError::Usage(format!("RUN_DIR: not a folder: {}", dir.display())));
    }
    if journal::exists(dir) {
        return Ok((dir.to_path_buf(), None));
    }
    if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
        let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
        if journal::exists(parent) {
            return Ok((parent.to_path_buf(), Some(PathBuf::from(name))));
        }
    }
    Err(CliError::Usage(format!(
        "RUN_DIR: no persistent queue (.imagelab/jobs) in {} or its parent",
        dir.display()
    )))
}

/// Runs `imagelab resume`.
///
/// # Errors
/// A folder with no persistent queue, an unknown job, a bad setting (exit 2); an engine that
/// cannot start.
#[allow(clippy::too_many_lines, reason = "the steps of a resume, in order")]
pub fn run(args: &ResumeArgs, config: &FrontEndConfig) -> Result<Outcome, CliError> {
    let dir = args.dir.clone().unwrap_or_else(|| config.output_root());
    // A Slurm run resumes on Slurm: its tasks with work left are submitted again.
    if !args.local
        && args.job.is_none()
        && args.shard.is_none()
        && !args.list
        && let Some(outcome) = super::slurm::resume(&dir, args.retry_failed, args.json)?
    {
        return Ok(outcome);
    }
    let limit = time_limit(args.for_, args.until.as_deref(), chrono::Local::now())?;
    let (root, run_dir) = locate(&dir)?;
    let mut all = queue::unfinished(&root).map_err(|err| CliError::Failed(err.to_string()))?;
    if args.retry_failed {
        // Jobs that ran to their end with failed items are taken back too.
        all.extend(queue::retryable(&root).map_err(|err| CliError::Failed(err.to_string()))?);
    }
    let jobs: Vec<UnfinishedJob> = all
        .into_iter()
        .filter(|job| run_dir.is_none() || job.run_dir == run_dir)
        .filter(|job| args.job.as_ref().is_none_or(|id| *id == job.id))
        .collect();
    if let Some(id) = &args.job
        && jobs.is_empty()
    {
        return Err(CliError::Usage(format!(
            "--job: no unfinished job {id} in {}",
            root.display()
        )));
    }
    if args.list {
        print_list(&jobs, args.json);
        return Ok(Outcome::Done);
    }
    // A job named with --job (a Slurm task's own) may be held for a moment by another
    // process's start-up maintenance: it is waited for below rather than skipped here.
    let (backend, chosen) = choose(&jobs, args.backend, args.shard.is_some() || args.job.is_some());
    let grace = config.stop_grace()?;
    let setup = EngineSetup {
        backend,
        output_root: root.clone(),
        instance_id: config.instance_id(),
        previews: false,
        mock_step_delay: Duration::ZERO,
        fall_back_to_mock: false,
    };
    let wiring = setup.wire(config)?;
    // The models must still be there, before any work.
    let checker = wiring.backend.model_checker();
    for job in &chosen {
        let state = queue::JobState::read(&root, &job.id)
            .map_err(|err| CliError::Failed(err.to_string()))?;
        check_plan_models(state.plan(), &checker)?;
    }
    let stops = install_stop_signals(grace)?;
    let time_up = limit.map(|limit| stop_after(limit, &stops)).transpose()?;
    let engine = Engine::spawn(wiring.backend, wiring.engine, no_waker())
        .map_err(|err| CliError::Failed(err.to_string()))?;
    let options =
        ResumeOptions { retry_failed: args.retry_failed, device: args.device, shard: args.shard };
    let mut queued = Vec::new();
    let mut images = 0;
    for job in chosen {
        let claimed = if waits_for_its_job(args) {
            resume_waiting(&engine, &job.id, options)
        } else {
            engine.resume(&job.id, options)
        };
        match claimed {
            Ok(Some(resumed)) => {
                for note in &resumed.notes {
                    eprintln!("note: job {}: {note}", resumed.id);
                }
                eprintln!(
                    "resuming job {} ({}): {} image(s) left",
                    resumed.id,
                    job.label,
                    resumed.plan.image_count()
                );
                images += resumed.plan.image_count();
                queued.push(resumed.job);
            }
            Ok(None) => eprintln!("note: job {}: nothing left to do", job.id),
            Err(EngineError::JobBusy(id)) if waits_for_its_job(args) => {
                // The job asked for by name could not be run: that is a failure (a Slurm task
                // must not end "completed" having done nothing).
                return Err(CliError::Failed(format!(
                    "job {id} is held by another running process (still after {} s)",
                    CLAIM_PATIENCE.as_secs()
                )));
            }
            Err(EngineError::JobBusy(id)) => {
                eprintln!("note: job {id} is held by another running process; skipped");
            }
            Err(err) => return Err(CliError::Failed(err.to_string())),
        }
    }
    if queued.is_empty() {
        eprintln!("nothing to resume in {}", root.display());
    }
    let mut progress = report::Progress::new(images);
    let mut collected = report::Collected::default();
    let summaries = run_until_finished(&engine, &queued, &stops, &mut progress, &mut collected);
    progress.finish();
    drop(engine);
    if summaries.len() < queued.len() {
        return Err(CliError::Failed("the engine stopped before the jobs finished".to_owned()));
    }
    let (merged, ids) = report::merge(&summaries);
    let timed_out = time_up.is_some_and(|flag| flag.load(Ordering::SeqCst));
    let stopped_by = stops.request().map(|request| request.signal).filter(|_| !timed_out);
    report::print_summary(&merged, &collected, args.json, stopped_by, &ids);
    if timed_out {
        // A time limit is how a time-boxed resume (a Slurm task's --for) ends: what is left
        // waits in the queue, and the exit says only whether something failed.
        eprintln!("time limit reached; what is left stays queued: `imagelab resume` finishes it");
        let failed = summaries.iter().any(|s| s.failed > 0 || !s.errors.is_empty());
        return Ok(if failed { Outcome::SomeFailed } else { Outcome::Done });
    }
    Ok(outcome_of(&summaries, &stops))
}

/// How long `resume --job ID` waits for a job another process holds. Processes sharing an
/// output folder (Slurm array tasks starting together) each settle the folder's idle jobs when
/// their engine starts, holding each one for a moment; a job held longer than this is running
/// elsewhere.
const CLAIM_PATIENCE: Duration = Duration::from_mins(1);

/// Whether this resume names one whole job (`--job ID`, no `--shard`), as a Slurm task does:
/// it waits for the job rather than skipping it, and fails if it never gets it. (A shard that
/// is taken is skipped at once: that is how a second copy of a shard learns it is not needed.)
fn waits_for_its_job(args: &ResumeArgs) -> bool {
    args.job.is_some() && args.shard.is_none()
}

/// [`Engine::resume`], retried while another process holds the job, up to [`CLAIM_PATIENCE`].
fn resume_waiting(
    engine: &Engine,
    id: &str,
    options: ResumeOptions,
) -> Result<Option<crate::engine::Resumed>, EngineError> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match engine.resume(id, options) {
            Err(EngineError::JobBusy(_)) if start.elapsed() < CLAIM_PATIENCE => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// The backend to run (the one asked for, else the first job's) and the jobs it takes: those
/// no other process holds (for a shard, those whose shard is free: found when claiming), made
/// on that backend (any, when one was asked for).
fn choose(
    jobs: &[UnfinishedJob],
    asked: Option<BackendChoice>,
    sharded: bool,
) -> (BackendChoice, Vec<&UnfinishedJob>) {
    let (ready, held): (Vec<&UnfinishedJob>, Vec<&UnfinishedJob>) =
        jobs.iter().partition(|job| sharded || !job.live);
    for job in held {
        eprintln!("note: job {} is held by another running process; skipped", job.id);
    }
    let backend = asked.unwrap_or_else(|| {
        ready
            .first()
            .and_then(|job| BackendChoice::parse(&job.backend).ok())
            .unwrap_or(BackendChoice::Candle)
    });
    let backend_name = match backend {
        BackendChoice::Candle => "candle",
        BackendChoice::Mock => "mock",
    };
    let (chosen, other): (Vec<&UnfinishedJob>, Vec<&UnfinishedJob>) =
        ready.into_iter().partition(|job| asked.is_some() || job.backend == backend_name);
    for job in other {
        eprintln!(
            "note: job {} ran on the {} backend; resume it with --backend {}",
            job.id, job.backend, job.backend
        );
    }
    (backend, chosen)
}

fn print_list(jobs: &[UnfinishedJob], json: bool) {
    if json {
        let rows: Vec<serde_json::Value> = jobs
            .iter()
            .map(|job| {
                serde_json::json!({
                    "id": job.id,
                    "created": job.created,
                    "backend": job.backend,
                    "label": job.label,
                    "run_dir": job.run_dir.as_ref().map(|dir| dir.display().to_string()),
                    "items": job.items,
                    "images": job.images,
                    "images_left": job.images_left,
                    "live": job.live,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    if jobs.is_empty() {
        eprintln!("no unfinished jobs");
    }
    for job in jobs {
        let state = if job.live { "  (running elsewhere)" } else { "" };
        println!(
            "{}  {}/{} image(s) left  {}  {}{state}",
            job.id, job.images_left, job.images, job.backend, job.label
        );
    }
}
