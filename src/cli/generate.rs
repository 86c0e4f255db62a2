//! `imagelab generate`: flags → validated request → engine → files, summary, exit code.
//! The environment-variable mode builds the same [`GenerateOptions`] and runs the same code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgMatches, Args};

use super::{CliError, Outcome, report};
use crate::app::config::{BACKEND_VAR, DEVICE_VAR, OUTPUT_DIR_VAR};
use crate::app::{BackendChoice, DEFAULT_OUTPUT_DIR, EngineSetup, FrontEndConfig, StopSignals};
use crate::engine::{Engine, Event, no_waker, prepare_plan};
use crate::models::catalog::{Catalog, DEFAULT_MODEL};
use crate::request::restore::{RequestField, restore_settings};
use crate::request::{Profiles, Request, RequestError, Sweep};
use crate::storage::metadata::recover_file;
use crate::vocab::{
    DEFAULT_QUALITY, DeviceChoice, LoraSpec, OutputFormat, Precision, RAW_PROFILE, SamplerKind,
    SaveOptions, SigmaSchedule,
};

/// Flags of `imagelab generate` (REFERENCE §8).
#[derive(Debug, Clone, Args)]
#[allow(clippy::struct_excessive_bools, reason = "one field per command-line switch")]
pub struct GenerateArgs {
    /// Model: catalog name, hub id (org/name), diffusers folder or .safetensors file.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// The prompt.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// The negative prompt.
    #[arg(long, default_value = "")]
    pub negative: String,
    /// Style profile (see profiles.ron).
    #[arg(long, default_value = RAW_PROFILE)]
    pub profile: String,
    /// Width in pixels (multiple of 8); default: the model's native size.
    #[arg(long)]
    pub width: Option<u32>,
    /// Height in pixels (multiple of 8); default: the model's native size.
    #[arg(long)]
    pub height: Option<u32>,
    /// Denoising steps.
    #[arg(long)]
    pub steps: Option<u32>,
    /// Classifier-free guidance scale (≤ 1: no negative pass).
    #[arg(long, allow_negative_numbers = true)]
    pub cfg: Option<f32>,
    /// Base seed; image i of a batch uses seed + i. Default: random, recorded.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Images per model × profile.
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    /// Sampler: default, euler, `euler_a`, heun, `dpmpp_2m`, `dpmpp_2m_karras`, `dpmpp_sde_karras`, lms, ddim, unipc.
    #[arg(long, value_parser = SamplerKind::parse)]
    pub scheduler: Option<SamplerKind>,
    /// Sigma schedule independent of the sampler: automatic, karras, exponential, `sgm_uniform`.
    #[arg(long, default_value = "automatic", value_parser = SigmaSchedule::parse)]
    pub schedule_type: SigmaSchedule,
    /// img2img source image (PNG, JPEG, WebP).
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// img2img strength in [0, 1].
    #[arg(long, default_value_t = 0.75, allow_negative_numbers = true)]
    pub strength: f32,
    /// Output root.
    #[arg(long, env = OUTPUT_DIR_VAR, default_value = DEFAULT_OUTPUT_DIR)]
    pub out: PathBuf,
    /// Also save the latent handed to the VAE (`.latent`, safetensors).
    #[arg(long)]
    pub save_latent: bool,
    /// Image format: png, jpeg or webp (settings in a PNG chunk, or the EXIF `UserComment` that
    /// A1111 and Civitai read plus our XMP).
    #[arg(long, default_value = "png", value_parser = OutputFormat::parse)]
    pub format: OutputFormat,
    /// Quality 1–100 of JPEG and lossy WebP.
    #[arg(long, default_value_t = DEFAULT_QUALITY)]
    pub quality: u8,
    /// Lossless WebP (with --format webp).
    #[arg(long)]
    pub lossless: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// auto, cpu, cuda:N or metal.
    #[arg(long, env = DEVICE_VAR, default_value = "auto", value_parser = DeviceChoice::parse)]
    pub device: DeviceChoice,
    /// f32, f16 or bf16 (default: f32 on CPU, f16 on GPU).
    #[arg(long, value_parser = Precision::parse)]
    pub dtype: Option<Precision>,
    /// candle or mock.
    #[arg(long, env = BACKEND_VAR, default_value = "candle", value_parser = BackendChoice::parse)]
    pub backend: BackendChoice,
    /// Run every profile on the model.
    #[arg(long)]
    pub all_profiles: bool,
    /// Run every catalog model × every profile.
    #[arg(long)]
    pub all_models: bool,
    /// LoRA adapter `FILE_OR_HUB_ID`[:WEIGHT] (repeatable).
    #[arg(long = "lora", value_parser = LoraSpec::parse)]
    pub loras: Vec<LoraSpec>,
    /// Truncate prompts at 77 tokens (diffusers) instead of chunking them (A1111, ComfyUI).
    #[arg(long)]
    pub truncate: bool,
    /// Re-run the settings stored in this image, PNG, JPEG or WebP (ours exactly; A1111,
    /// ComfyUI, InvokeAI, Fooocus, NovelAI as closely as they map); any other flag given
    /// overrides the image.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Run bundle N of a saved `favorites analyze --json` (`FILE:N`) with a new --prompt; any
    /// other flag given overrides the bundle.
    #[arg(long, value_name = "FILE:N", value_parser = parse_bundle_ref, conflicts_with = "from")]
    pub bundle: Option<(PathBuf, usize)>,
}

/// `FILE:N` (split at the last `:`), N from 1.
fn parse_bundle_ref(text: &str) -> Result<(PathBuf, usize), String> {
    let (file, number) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?}: expected FILE:N, e.g. analysis.json:1"))?;
    let number: usize = number
        .trim()
        .parse()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("{text:?}: N must be a bundle number from 1"))?;
    if file.is_empty() {
        return Err(format!("{text:?}: expected FILE:N, e.g. analysis.json:1"));
    }
    Ok((PathBuf::from(file), number))
}

/// Everything a headless run needs, from flags or from the environment.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// The request.
    pub request: Request,
    /// Output root.
    pub out: PathBuf,
    /// JSON summary on stdout.
    pub json: bool,
    /// Which backend.
    pub backend: BackendChoice,
    /// `INSTANCE_ID`.
    pub instance_id: Option<String>,
}

impl GenerateOptions {
    /// The engine this run needs: no previews, no fallback, a mock without delay.
    pub fn engine_setup(&self) -> EngineSetup {
        EngineSetup {
            backend: self.backend,
            output_root: self.out.clone(),
            instance_id: self.instance_id.clone(),
            previews: false,
            mock_step_delay: Duration::ZERO,
            fall_back_to_mock: false,
        }
    }
}

impl GenerateArgs {
    /// The request and options these flags describe.
    ///
    /// # Errors
    /// Both sweep switches on (naming both).
    pub fn into_options(self, config: &FrontEndConfig) -> Result<GenerateOptions, RequestError> {
        let sweep = Sweep::from_switches(self.all_profiles, self.all_models)?;
        let request = Request {
            model: self.model,
            prompt: self.prompt,
            negative: self.negative,
            profile: self.profile,
            scheduler: self.scheduler,
            schedule_type: self.schedule_type,
            width: self.width,
            height: self.height,
            steps: self.steps,
            cfg: self.cfg,
            batch: self.batch,
            seed: self.seed,
            init_image: self.init_image,
            strength: self.strength,
            sweep,
            loras: self.loras,
            save_latent: self.save_latent,
            output: SaveOptions {
                format: self.format,
                quality: self.quality,
                lossless: self.lossless,
            },
            truncate_prompt: self.truncate,
            device: self.device,
            dtype: self.dtype,
        };
        Ok(GenerateOptions {
            request,
            out: self.out,
            json: self.json,
            backend: self.backend,
            instance_id: config.instance_id(),
        })
    }
}

/// Runs `imagelab generate` with parsed flags (`matches` tells which flags were typed, so
/// they override `--from`).
///
/// # Errors
/// Bad flags or `--from` image, or a run that could not start (see [`run`]).
pub fn run_args(
    args: GenerateArgs,
    matches: &ArgMatches,
    config: &FrontEndConfig,
) -> Result<Outcome, CliError> {
    let from = args.from.clone();
    let bundle = args.bundle.clone();
    let mut options = args.into_options(config)?;
    if let Some(file) = from {
        let profiles = config.profiles().map_err(|err| CliError::Usage(err.to_string()))?;
        for note in apply_from(&file, &mut options.request, matches, &profiles)? {
            eprintln!("note: {note}");
        }
    }
    if let Some((file, number)) = bundle {
        if !typed(matches, "prompt") {
            return Err(CliError::Usage(
                "--bundle: give --prompt; a bundle brings settings, not a prompt".to_owned(),
            ));
        }
        let overlay = crate::analytics::stats::read_bundle(&file, number)
            .and_then(|request| request.to_overlay())
            .map_err(|err| CliError::Usage(err.to_string()))?;
        overlay.apply(&mut options.request, typed_fields(matches));
    }
    run(&options, config)
}

/// Whether the user typed flag `id` (rather than a default or the environment).
pub fn typed(matches: &ArgMatches, id: &str) -> bool {
    matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
}

/// For [`RequestOverlay::apply`](crate::request::restore::RequestOverlay::apply): the request
/// fields whose flags the user typed, which an image or a bundle must not change.
pub fn typed_fields(matches: &ArgMatches) -> impl Fn(RequestField) -> bool + '_ {
    move |field| match field {
        RequestField::Model => typed(matches, "model"),
        RequestField::Prompt => typed(matches, "prompt"),
        RequestField::Negative => typed(matches, "negative"),
        RequestField::Profile => typed(matches, "profile"),
        RequestField::Scheduler => typed(matches, "scheduler"),
        RequestField::ScheduleType => typed(matches, "schedule_type"),
        RequestField::Width => typed(matches, "width"),
        RequestField::Height => typed(matches, "height"),
        RequestField::Steps => typed(matches, "steps"),
        RequestField::Cfg => typed(matches, "cfg"),
        RequestField::Seed => typed(matches, "seed"),
        RequestField::InitImage => typed(matches, "init_image"),
        RequestField::Strength => typed(matches, "strength"),
        RequestField::Sweep => typed(matches, "all_profiles") || typed(matches, "all_models"),
        RequestField::Loras => typed(matches, "loras"),
        RequestField::TruncatePrompt => typed(matches, "truncate"),
    }
}

/// Lays the settings of the image at `file` under the flags the user typed. Returns what a
/// re-run will do differently, for stderr.
///
/// # Errors
/// The file cannot be read or holds no settings; the message names the file.
pub fn apply_from(
    file: &Path,
    request: &mut Request,
    matches: &ArgMatches,
    profiles: &Profiles,
) -> Result<Vec<String>, CliError> {
    let recovered = recover_file(file).map_err(|err| CliError::Usage(format!("--from: {err}")))?;
    let restored = restore_settings(&recovered, &Catalog::builtin(), profiles);
    restored.overlay.apply(request, typed_fields(matches));
    Ok(restored.notes)
}

/// Runs a headless request to the end: validate, generate, report.
///
/// # Errors
/// Bad input found before any work (nothing written), or an engine that stopped mid-job.
pub fn run(options: &GenerateOptions, config: &FrontEndConfig) -> Result<Outcome, CliError> {
    let profiles = config.profiles().map_err(|err| CliError::Usage(err.to_string()))?;
    let catalog = Catalog::builtin();
    let grace = config.stop_grace()?;
    let wiring = options.engine_setup().wire(config)?;
    let plan = prepare_plan(&options.request, &profiles, &catalog, &wiring.backend.capabilities())?;
    let stops = install_stop_signals(grace)?;
    let engine = Engine::spawn(wiring.backend, wiring.engine, no_waker())
        .map_err(|err| CliError::Usage(err.to_string()))?;
    let total_images = plan.image_count();
    let job = engine.submit(plan).map_err(|err| CliError::Usage(err.to_string()))?;
    let mut progress = report::Progress::new(total_images);
    let mut collected = report::Collected::default();
    let summary = run_until_finished(&engine, &[job], &stops, &mut progress, &mut collected);
    progress.finish();
    drop(engine);
    let Some(summary) = summary.into_iter().next() else {
        return Err(CliError::Failed("the engine stopped before the job finished".to_owned()));
    };
    let stopped_by = stops.request().map(|request| request.signal);
    report::print_summary(&summary, &collected, options.json, stopped_by);
    Ok(outcome_of(std::slice::from_ref(&summary), &stops))
}

/// Hooks SIGINT/SIGTERM for a headless run, with the grace of `IMAGELAB_STOP_GRACE_S`.
///
/// # Errors
/// The handlers cannot be installed.
pub(crate) fn install_stop_signals(
    grace: Option<std::time::Duration>,
) -> Result<StopSignals, CliError> {
    let stops = StopSignals::install()
        .map_err(|err| CliError::Failed(format!("cannot install signal handlers: {err}")))?;
    stops.set_grace(grace);
    Ok(stops)
}

/// Drains the engine's events until every job of `jobs` finished, forwarding stop signals to
/// the engine (the first: finish the running image; the second: cancel it now). Returns the
/// summaries of the jobs that finished, in the order they finished; fewer when the engine
/// ended early.
pub(crate) fn run_until_finished(
    engine: &Engine,
    jobs: &[crate::engine::JobId],
    stops: &StopSignals,
    progress: &mut report::Progress,
    collected: &mut report::Collected,
) -> Vec<crate::engine::JobSummary> {
    let requests = stops.subscribe();
    let mut summaries = Vec::new();
    while summaries.len() < jobs.len() {
        crossbeam_channel::select! {
            recv(engine.events()) -> event => {
                let Ok(event) = event else { break };
                progress.on_event(&event);
                collected.on_event(&event);
                if let Event::JobFinished { job, summary } = event
                    && jobs.contains(&job)
                {
                    summaries.push(summary);
                }
            }
            recv(requests) -> request => {
                let Ok(request) = request else { continue };
                progress.on_stop(request);
                if let Err(err) = engine.stop(request.mode, request.signal.name()) {
                    progress.warn(&format!("cannot stop the engine: {err}"));
                }
            }
        }
    }
    summaries
}

/// The outcome of finished jobs: stopped by a signal (130/143) before anything else, then
/// failed or cancelled items (1), else done.
pub(crate) fn outcome_of(summaries: &[crate::engine::JobSummary], stops: &StopSignals) -> Outcome {
    if let Some(code) = stops.exit_code() {
        Outcome::Stopped(code)
    } else if summaries.iter().any(|s| s.failed > 0 || s.cancelled > 0 || s.interrupted > 0) {
        Outcome::SomeFailed
    } else {
        Outcome::Done
    }
}
