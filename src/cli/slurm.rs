//! `imagelab slurm submit|status|cancel`: a sweep as a Slurm job array into one shared run
//! folder (see `slurm`), and `imagelab resume RUN_DIR` on such a run (resubmits the tasks with
//! work left).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgMatches, Args, Subcommand};

use super::generate::{self, GenerateArgs};
use super::{CliError, Outcome};
use crate::app::FrontEndConfig;
use crate::engine::queue::JobState;
use crate::engine::{check_plan_models, prepare_plan};
use crate::models::catalog::Catalog;
use crate::runner::limits::{parse_duration, parse_until};
use crate::slurm::client::{Client, ClientError};
use crate::slurm::parse::TaskRow;
use crate::slurm::script::DEFAULT_GRES;
use crate::slurm::status::{self, RunStatus};
use crate::slurm::{self as run_files, RunSetup, SbatchOptions, SlurmRun, Submission};

/// `imagelab slurm …`.
#[derive(Debug, Clone, Subcommand)]
pub enum SlurmCommand {
    /// Plan a sweep (the flags of `generate`), split it into array tasks (one per model for
    /// --all-models, else shards of items), write the plan and an editable sbatch script into
    /// the run folder and submit it with `sbatch --parsable`; prints the job id.
    Submit(Box<SubmitArgs>),
    /// Each task's Slurm state and progress (images on disk, items done and failed).
    Status {
        /// The run folder (or its `slurm` folder).
        dir: PathBuf,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Cancel the run's array job(s) with `scancel` (running tasks finish or cancel the image
    /// they are on and log it).
    Cancel {
        /// The run folder (or its `slurm` folder).
        dir: PathBuf,
        /// Only this array task.
        #[arg(long)]
        task: Option<u32>,
    },
}

/// Flags of `imagelab slurm submit`: those of `generate`, plus Slurm's.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// The request, as `imagelab generate` takes it.
    #[command(flatten)]
    pub generate: GenerateArgs,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm account.
    #[arg(long)]
    pub account: Option<String>,
    /// Slurm quality of service.
    #[arg(long)]
    pub qos: Option<String>,
    /// Generic resources per task (`none` for none).
    #[arg(long, default_value = DEFAULT_GRES)]
    pub gres: String,
    /// CPUs per task.
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
    /// Memory per node (`32G`, `16000M`).
    #[arg(long)]
    pub mem: Option<String>,
    /// Time limit per task (`90`, `02:00:00`, `1-00`).
    #[arg(long)]
    pub time: Option<String>,
    /// Any other sbatch option, one per flag (`--sbatch-arg=--constraint=a100`).
    #[arg(long = "sbatch-arg", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// Array tasks for a sweep that is not --all-models (default: up to 8, never more than
    /// items).
    #[arg(long)]
    pub tasks: Option<usize>,
    /// At most this many tasks at once (`--array=…%K`).
    #[arg(long)]
    pub max_parallel: Option<u32>,
    /// Slurm job name (default: imagelab-<sweep>).
    #[arg(long)]
    pub job_name: Option<String>,
    /// Write the run folder (plan, jobs, script) without submitting; checks the script with
    /// `sbatch --test-only` when sbatch is here.
    #[arg(long)]
    pub dry_run: bool,
    /// Each task takes no new image after this long from its start (90s, 45m, 8h, 1h30m), as
    /// the runner's --for; what is left waits for `imagelab resume RUN_DIR`.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub for_: Option<Duration>,
    /// Each task takes no new image after this local time on its node (HH:MM), as the
    /// runner's --until.
    #[arg(long, value_name = "HH:MM")]
    pub until: Option<String>,
    /// Runner flags that do not apply on Slurm: refused with the reason.
    #[command(flatten)]
    pub runner_only: RunnerOnlyArgs,
}

/// Flags of `imagelab runner` that a Slurm run cannot honour, taken only to say why (clap
/// would otherwise call them unknown).
#[derive(Debug, Clone, Default, Args)]
pub struct RunnerOnlyArgs {
    /// Refused: Slurm gives each task its GPUs (--gres).
    #[arg(long, hide = true)]
    pub gpus: Option<String>,
    /// Refused: Slurm allocates GPUs; none is busy to wait for.
    #[arg(long, hide = true)]
    pub max_mem_mb: Option<String>,
    /// Refused, as --max-mem-mb.
    #[arg(long, hide = true)]
    pub max_util: Option<String>,
    /// Refused, as --max-mem-mb.
    #[arg(long, hide = true)]
    pub recheck: Option<String>,
    /// Refused: failed items are recorded; --retry-failed runs them again.
    #[arg(long, hide = true)]
    pub max_failures: Option<String>,
    /// Refused: a Slurm run is a planned sweep of one request.
    #[arg(long, hide = true)]
    pub templates: Option<String>,
    /// Refused, as --templates.
    #[arg(long, hide = true)]
    pub jobs: Option<String>,
    /// Refused, as --templates.
    #[arg(long, hide = true)]
    pub models: Option<String>,
    /// Refused, as --templates.
    #[arg(long, hide = true)]
    pub profiles: Option<String>,
}

impl RunnerOnlyArgs {
    /// The first flag given, with why a Slurm run cannot take it and what to use instead.
    pub fn refusal(&self) -> Option<String> {
        let gpu_wait = "Slurm allocates each task its GPUs, so there is no busy GPU to wait \
                        for; pick GPUs with --gres, --partition or --sbatch-arg=--constraint=…";
        let planned = "a Slurm run is a planned sweep of one request (--prompt, --all-profiles, \
                       --all-models); for generated prompts run `imagelab runner` in an sbatch \
                       script of your own";
        let checks: [(&str, bool, &str); 9] = [
            (
                "--gpus",
                self.gpus.is_some(),
                "Slurm gives each task its GPUs: ask with --gres gpu:N (a task runs on the \
                 first GPU it is given)",
            ),
            ("--max-mem-mb", self.max_mem_mb.is_some(), gpu_wait),
            ("--max-util", self.max_util.is_some(), gpu_wait),
            ("--recheck", self.recheck.is_some(), gpu_wait),
            (
                "--max-failures",
                self.max_failures.is_some(),
                "a task runs each item of its share once and records failures; run them again \
                 with `imagelab resume RUN_DIR --retry-failed`",
            ),
            ("--templates", self.templates.is_some(), planned),
            ("--jobs", self.jobs.is_some(), planned),
            ("--models", self.models.is_some(), planned),
            ("--profiles", self.profiles.is_some(), planned),
        ];
        checks
            .into_iter()
            .find(|(_, given, _)| *given)
            .map(|(flag, _, why)| format!("{flag}: not on Slurm: {why}"))
    }
}

/// The `imagelab resume` flags every task passes for `--for`/`--until` (checked here, before
/// anything is written).
///
/// # Errors
/// A bad `--until` (named).
pub fn task_time_args(
    for_: Option<Duration>,
    until: Option<&str>,
) -> Result<Vec<String>, CliError> {
    let mut args = Vec::new();
    if let Some(duration) = for_ {
        if duration.is_zero() {
            return Err(CliError::Usage("--for: must be longer than 0s".to_owned()));
        }
        args.extend(["--for".to_owned(), format!("{}s", duration.as_secs())]);
    }
    if let Some(until) = until {
        parse_until(until, chrono::Local::now())
            .map_err(|err| CliError::Usage(format!("--until: {err}")))?;
        args.extend(["--until".to_owned(), until.trim().to_owned()]);
    }
    Ok(args)
}

/// Runs `imagelab slurm …`; `matches` are the `slurm` subcommand's.
///
/// # Errors
/// Bad flags or a bad run folder (exit 2); Slurm refusing or failing (exit 1).
pub fn run(
    command: SlurmCommand,
    matches: &ArgMatches,
    config: &FrontEndConfig,
) -> Result<Outcome, CliError> {
    match command {
        SlurmCommand::Submit(args) => {
            let empty = ArgMatches::default();
            let sub = matches.subcommand_matches("submit").unwrap_or(&empty);
            submit(*args, sub, config)
        }
        SlurmCommand::Status { dir, json } => {
            let run = read_run(&dir)?;
            let status = status_of(&run);
            if json {
                let text = serde_json::to_string(&status)
                    .map_err(|err| CliError::Failed(err.to_string()))?;
                println!("{text}");
            } else {
                print!("{}", status::format_text(&status));
            }
            Ok(Outcome::Done)
        }
        SlurmCommand::Cancel { dir, task } => cancel(&read_run(&dir)?, task),
    }
}

fn read_run(dir: &Path) -> Result<SlurmRun, CliError> {
    let slurm_dir = run_files::find_run(dir).ok_or_else(|| {
        CliError::Usage(format!(
            "RUN_DIR: {} is not a Slurm run (no {}/{})",
            dir.display(),
            run_files::SLURM_DIR,
            run_files::RUN_FILE
        ))
    })?;
    SlurmRun::read(&slurm_dir).map_err(|err| CliError::Usage(format!("RUN_DIR: {err}")))
}

fn status_of(run: &SlurmRun) -> RunStatus {
    status::status_of(&Client::on_path(), run)
}

fn slurm_error(err: &ClientError) -> CliError {
    CliError::Failed(err.to_string())
}

fn submit(
    args: SubmitArgs,
    matches: &ArgMatches,
    config: &FrontEndConfig,
) -> Result<Outcome, CliError> {
    if args.generate.queue_only {
        return Err(CliError::Usage(
            "--queue-only: slurm submit always queues; leave it out".to_owned(),
        ));
    }
    if let Some(refusal) = args.runner_only.refusal() {
        return Err(CliError::Usage(refusal));
    }
    let task_args = task_time_args(args.for_, args.until.as_deref())?;
    let json = args.generate.json;
    let options = generate::options_from_args(args.generate.clone(), matches, config)?;
    let sbatch = SbatchOptions {
        job_name: args
            .job_name
            .clone()
            .unwrap_or_else(|| format!("imagelab-{}", options.request.sweep.slug())),
        partition: args.partition.clone(),
        account: args.account.clone(),
        qos: args.qos.clone(),
        gres: Some(args.gres.clone()).filter(|gres| gres != "none"),
        cpus_per_task: args.cpus_per_task,
        mem: args.mem.clone(),
        time: args.time.clone(),
        max_parallel: args.max_parallel,
        extra: args.sbatch_args.clone(),
    };
    sbatch.check().map_err(CliError::Usage)?;
    // Without sbatch nothing could be submitted: say so before writing anything.
    let client = Client::on_path();
    if !args.dry_run && !client.sbatch_available() {
        return Err(slurm_error(&ClientError::NotFound("sbatch".to_owned())));
    }
    let profiles = config.profiles().map_err(|err| CliError::Usage(err.to_string()))?;
    let catalog = Catalog::builtin();
    // The backend as the tasks will build it: its capabilities and model checks, here, before
    // anything is written or queued.
    let wiring = options.engine_setup().wire(config)?;
    let plan = prepare_plan(&options.request, &profiles, &catalog, &wiring.backend.capabilities())?;
    check_plan_models(&plan, &wiring.backend.model_checker())?;
    let backend = wiring.backend.name().to_owned();
    drop(wiring);
    let imagelab = std::env::current_exe()
        .map_err(|err| CliError::Failed(format!("cannot find this program's path: {err}")))?;
    let hub_cache = run_files::absolute(&config.hub().cache_dir);
    let setup = RunSetup {
        output_root: options.out.clone(),
        backend,
        imagelab,
        hub_cache: Some(hub_cache),
        tasks: args.tasks,
        sbatch,
        task_args,
    };
    let mut run = run_files::plan_run(plan, &setup).map_err(|err| match err {
        run_files::PlanRunError::Usage(message) => CliError::Usage(message),
        run_files::PlanRunError::Io(err) => CliError::Failed(err.to_string()),
    })?;
    let script = run.script();
    eprintln!(
        "planned {} image(s) in {} array task(s): {}",
        run.planned_images,
        run.tasks.len(),
        run.run_path().display()
    );
    eprintln!("script: {}", script.display());
    if args.dry_run {
        let verdict = if client.sbatch_available() {
            match client.test_only(&script, &run.slurm_dir()) {
                Ok(verdict) => Some(format!("sbatch --test-only: {verdict}")),
                Err(err) => {
                    return Err(CliError::Failed(format!(
                        "{err} (the run is written: edit {} and submit it with sbatch)",
                        script.display()
                    )));
                }
            }
        } else {
            None
        };
        if let Some(verdict) = &verdict {
            eprintln!("{verdict}");
        }
        eprintln!("dry run: not submitted; submit with `sbatch {}`", script.display());
        print_submitted(&run, None, json);
        return Ok(Outcome::Done);
    }
    let all: Vec<u32> = run.tasks.iter().map(|task| task.task).collect();
    let submitted = submit_tasks(&client, &mut run, &all, false)?;
    print_submitted(&run, Some(&submitted), json);
    Ok(Outcome::Done)
}

/// [`run_files::submit`], its errors as the CLI reports them (exit 1).
fn submit_tasks(
    client: &Client,
    run: &mut SlurmRun,
    tasks: &[u32],
    retry_failed: bool,
) -> Result<Submission, CliError> {
    run_files::submit(client, run, tasks, retry_failed)
        .map_err(|err| CliError::Failed(err.to_string()))
}

fn print_submitted(run: &SlurmRun, submission: Option<&Submission>, json: bool) {
    if json {
        let value = serde_json::json!({
            "job": submission.map(|s| s.job),
            "cluster": submission.and_then(|s| s.cluster.clone()),
            "array": submission.map(|s| s.array.clone()),
            "run_dir": run.run_path(),
            "script": run.script(),
            "tasks": run.tasks.len(),
            "images": run.planned_images,
        });
        println!("{value}");
    } else if let Some(submission) = submission {
        eprintln!(
            "submitted Slurm job {} (array {}); follow it with `imagelab slurm status {}`",
            submission.job,
            submission.array,
            run.run_path().display()
        );
        println!("{}", submission.job);
    }
}

fn cancel(run: &SlurmRun, task: Option<u32>) -> Result<Outcome, CliError> {
    let ids: Vec<String> = match task {
        Some(task) => {
            if !run.tasks.iter().any(|t| t.task == task) {
                return Err(CliError::Usage(format!(
                    "--task: the run has tasks 0-{}",
                    run.tasks.len().saturating_sub(1)
                )));
            }
            let submission = run.submission_of(task).ok_or_else(|| {
                CliError::Usage(format!("--task: task {task} was never submitted"))
            })?;
            vec![format!("{}_{task}", submission.job)]
        }
        None => run.submissions.iter().map(|s| s.job.to_string()).collect(),
    };
    if ids.is_empty() {
        eprintln!("nothing to cancel: the run was never submitted");
        return Ok(Outcome::Done);
    }
    for id in &ids {
        Client::on_path().cancel(id).map_err(|err| slurm_error(&err))?;
        eprintln!("cancelled {id}");
    }
    eprintln!("resubmit what is left with `imagelab resume {}`", run.run_path().display());
    Ok(Outcome::Done)
}

/// `imagelab resume RUN_DIR` on a Slurm run: submits the script again for the tasks whose
/// share has images left (and that are not still queued or running); with `retry_failed`
/// also for the tasks with failed items, whose `imagelab resume` then runs them again (each
/// once; see [`JobState::reopens_for_retry`]). Returns `None` when `dir` is not a Slurm run.
///
/// # Errors
/// A broken run file (exit 2); Slurm refusing (exit 1).
pub fn resume(dir: &Path, retry_failed: bool, json: bool) -> Result<Option<Outcome>, CliError> {
    if run_files::find_run(dir).is_none() {
        return Ok(None);
    }
    let mut run = read_run(dir)?;
    let client = Client::on_path();
    let mut notes = Vec::new();
    let rows = status::slurm_rows(&client, &run, &mut notes);
    let mut left = Vec::new();
    for task in &run.tasks {
        let state = JobState::read(&run.output_root, &task.job)
            .map_err(|err| CliError::Failed(format!("task {}: {err}", task.task)))?;
        if !task_has_work(&state, retry_failed) {
            continue;
        }
        if let Some(row) = active_row(&run, &rows, task.task) {
            eprintln!(
                "note: task {} is still {} in Slurm job {}; not resubmitted",
                task.task, row.state, row.job
            );
            continue;
        }
        if crate::storage::journal::is_job_live(&run.output_root, &task.job) {
            eprintln!(
                "note: task {}'s job {} is held by a running process; not resubmitted",
                task.task, task.job
            );
            continue;
        }
        left.push(task.task);
    }
    for note in notes {
        eprintln!("note: {note}");
    }
    if left.is_empty() {
        eprintln!("nothing to resubmit in {}", run.run_path().display());
        if json {
            println!("{}", serde_json::json!({ "job": null, "tasks": [] }));
        }
        return Ok(Some(Outcome::Done));
    }
    let submission = submit_tasks(&client, &mut run, &left, retry_failed)?;
    eprintln!(
        "resubmitted task(s) {} as Slurm job {}{}",
        submission.array,
        submission.job,
        if retry_failed { " (failed items run again)" } else { "" }
    );
    if json {
        println!(
            "{}",
            serde_json::json!({ "job": submission.job, "array": submission.array, "tasks": left })
        );
    } else {
        println!("{}", submission.job);
    }
    Ok(Some(Outcome::Done))
}

/// Whether a task's job has work for a resubmission: images left of an unfinished job, or
/// (with `retry_failed`) failed items, also of a job that ran to its end.
pub fn task_has_work(state: &JobState, retry_failed: bool) -> bool {
    let open = state.end.is_none() || (retry_failed && state.reopens_for_retry());
    open && state.remaining_images(retry_failed) > 0
}

/// The task's row in Slurm when it is still pending or running there.
fn active_row<'a>(
    run: &SlurmRun,
    rows: &'a std::collections::BTreeMap<(u64, u32), TaskRow>,
    task: u32,
) -> Option<&'a TaskRow> {
    let submission = run.submission_of(task)?;
    rows.get(&(submission.job, task)).filter(|row| row.state.is_active())
}
