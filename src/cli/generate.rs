//! `imagelab generate`: flags → validated request → engine → files, summary, exit code.
//! The environment-variable mode builds the same [`GenerateOptions`] and runs the same code.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, report};
use crate::engine::candle_backend::{CandleBackend, FolderResolver};
use crate::engine::{
    Backend, Engine, EngineConfig, Event, LoadProgress, mock::MockBackend, no_waker, prepare_plan,
};
use crate::models::catalog::{Catalog, DEFAULT_MODEL};
use crate::models::hub::{DownloadEvent, HubConfig, WeightVariant, resolve_pipeline};
use crate::request::{
    DeviceChoice, LoraSpec, Precision, Profiles, RAW_PROFILE, Request, SamplerKind, SigmaSchedule,
    Sweep,
};

/// The default output root.
pub const DEFAULT_OUTPUT_DIR: &str = "output_images";

/// Which backend runs the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// candle SDXL on the chosen device.
    Candle,
    /// The deterministic mock (no weights).
    Mock,
}

impl BackendChoice {
    /// Parses `candle|mock`.
    ///
    /// # Errors
    /// Names the valid values.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "candle" => Ok(Self::Candle),
            "mock" => Ok(Self::Mock),
            _ => Err(format!("unknown backend {text:?}; valid: candle, mock")),
        }
    }
}

/// Flags of `imagelab generate` (REFERENCE §8).
#[derive(Debug, Clone, Args)]
#[allow(clippy::struct_excessive_bools)]
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
    /// Sampler: default, euler, euler_a, heun, dpmpp_2m, dpmpp_2m_karras, dpmpp_sde_karras, lms, ddim, unipc.
    #[arg(long, value_parser = SamplerKind::parse)]
    pub scheduler: Option<SamplerKind>,
    /// Sigma schedule independent of the sampler: automatic, karras, exponential, sgm_uniform.
    #[arg(long, default_value = "automatic", value_parser = SigmaSchedule::parse)]
    pub schedule_type: SigmaSchedule,
    /// img2img source image (PNG, JPEG, WebP).
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// img2img strength in [0, 1].
    #[arg(long, default_value_t = 0.75, allow_negative_numbers = true)]
    pub strength: f32,
    /// Output root.
    #[arg(long, env = "IMAGELAB_OUTPUT_DIR", default_value = DEFAULT_OUTPUT_DIR)]
    pub out: PathBuf,
    /// Also save the latent handed to the VAE (`.latent`, safetensors).
    #[arg(long)]
    pub save_latent: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// auto, cpu, cuda:N or metal.
    #[arg(long, env = "IMAGELAB_DEVICE", default_value = "auto", value_parser = DeviceChoice::parse)]
    pub device: DeviceChoice,
    /// f32, f16 or bf16 (default: f32 on CPU, f16 on GPU).
    #[arg(long, value_parser = Precision::parse)]
    pub dtype: Option<Precision>,
    /// candle or mock.
    #[arg(long, env = "IMAGELAB_BACKEND", default_value = "candle", value_parser = BackendChoice::parse)]
    pub backend: BackendChoice,
    /// Run every profile on the model.
    #[arg(long)]
    pub all_profiles: bool,
    /// Run every catalog model × every profile.
    #[arg(long)]
    pub all_models: bool,
    /// LoRA adapter FILE_OR_HUB_ID[:WEIGHT] (repeatable).
    #[arg(long = "lora", value_parser = LoraSpec::parse)]
    pub loras: Vec<LoraSpec>,
    /// Truncate prompts at 77 tokens (diffusers) instead of chunking them (A1111, ComfyUI).
    #[arg(long)]
    pub truncate: bool,
    /// Re-run the settings stored in this PNG (ours exactly; A1111, ComfyUI, InvokeAI, Fooocus
    /// as closely as they map); any other flag given overrides the image.
    #[arg(long)]
    pub from: Option<PathBuf>,
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

impl GenerateArgs {
    /// The request and options these flags describe.
    ///
    /// # Errors
    /// Both sweep switches on (naming both).
    pub fn into_options(self) -> Result<GenerateOptions, crate::request::RequestError> {
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
            truncate_prompt: self.truncate,
            device: self.device,
            dtype: self.dtype,
        };
        Ok(GenerateOptions {
            request,
            out: self.out,
            json: self.json,
            backend: self.backend,
            instance_id: std::env::var("INSTANCE_ID").ok().filter(|s| !s.trim().is_empty()),
        })
    }
}

/// Runs `imagelab generate` with parsed flags (`matches` tells which flags were typed, so
/// they override `--from`).
pub fn run_args(mut args: GenerateArgs, matches: &clap::ArgMatches) -> u8 {
    if let Some(file) = args.from.clone() {
        match super::info::apply_from(&file, &mut args, matches) {
            Ok(notes) => {
                for note in notes {
                    eprintln!("note: {note}");
                }
            }
            Err(err) => return usage_error(&err),
        }
    }
    match args.into_options() {
        Ok(options) => run(&options),
        Err(err) => usage_error(&err.to_string()),
    }
}

fn usage_error(message: &str) -> u8 {
    eprintln!("error: {message}");
    EXIT_USAGE
}

/// Builds the backend a run asked for.
///
/// # Errors
/// A backend that cannot start here, with why.
pub fn make_backend(choice: BackendChoice) -> Result<Box<dyn Backend>, String> {
    match choice {
        BackendChoice::Mock => Ok(Box::new(MockBackend::from_env(Duration::ZERO)?)),
        BackendChoice::Candle => Ok(Box::new(CandleBackend::new(Some(hub_resolver())))),
    }
}

/// Resolves hub models to a local snapshot folder through the Hugging Face cache (downloading
/// only what the pipeline needs unless `HF_HUB_OFFLINE=1`), reporting downloads as load progress.
fn hub_resolver() -> FolderResolver {
    let config = HubConfig::from_env();
    // GPU builds load `*.fp16.safetensors` when a repo has them; CPU builds run in f32.
    let prefer = if cfg!(any(feature = "cuda", feature = "metal")) {
        WeightVariant::Fp16
    } else {
        WeightVariant::Full
    };
    Box::new(move |model, on_progress| {
        let mut on_download = |event: &DownloadEvent| match event {
            DownloadEvent::Started { repo_file, .. } => {
                on_progress(LoadProgress {
                    message: format!("downloading {repo_file}"),
                    fraction: None,
                });
            }
            DownloadEvent::Progress { repo_file, done_bytes, total_bytes } if *total_bytes > 0 => {
                #[allow(clippy::cast_precision_loss)]
                let fraction = (*done_bytes as f64 / *total_bytes as f64) as f32;
                on_progress(LoadProgress {
                    message: format!("downloading {repo_file}"),
                    fraction: Some(fraction),
                });
            }
            _ => {}
        };
        resolve_pipeline(model, &config, prefer, &mut on_download)
            .map(|pipeline| pipeline.root)
            .map_err(|err| err.to_string())
    })
}

/// Runs a headless request to the end: validate, generate, report. Returns the exit code.
pub fn run(options: &GenerateOptions) -> u8 {
    let profiles = match Profiles::discover() {
        Ok(profiles) => profiles,
        Err(err) => return usage_error(&err.to_string()),
    };
    let catalog = Catalog::builtin();
    let backend = match make_backend(options.backend) {
        Ok(backend) => backend,
        Err(err) => return usage_error(&format!("backend: {err}")),
    };
    let plan = match prepare_plan(&options.request, &profiles, &catalog, &backend.capabilities()) {
        Ok(plan) => plan,
        Err(err) => return usage_error(&err.to_string()),
    };
    let config = EngineConfig {
        output_root: options.out.clone(),
        instance_id: options.instance_id.clone(),
        previews: false,
    };
    let engine = match Engine::spawn(backend, config, no_waker()) {
        Ok(engine) => engine,
        Err(err) => return usage_error(&err.to_string()),
    };
    let total_images = plan.image_count();
    let job = match engine.submit(plan) {
        Ok(job) => job,
        Err(err) => return usage_error(&err.to_string()),
    };
    let mut progress = report::Progress::new(total_images);
    let mut collected = report::Collected::default();
    let summary = loop {
        let Ok(event) = engine.events().recv() else {
            break None;
        };
        progress.on_event(&event);
        collected.on_event(&event);
        if let Event::JobFinished { job: finished, summary } = event
            && finished == job
        {
            break Some(summary);
        }
    };
    progress.finish();
    drop(engine);
    let Some(summary) = summary else {
        eprintln!("error: the engine stopped before the job finished");
        return EXIT_FAILED;
    };
    report::print_summary(&summary, &collected, options.json);
    if summary.failed > 0 || summary.cancelled > 0 { EXIT_FAILED } else { EXIT_OK }
}
