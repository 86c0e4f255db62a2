//! One validated request for every front end, and its expansion into a plan.
//!
//! The window and the CLI both build a [`Request`]; [`Request::validate`] checks it against the
//! profiles and the model catalog (no file I/O here), and [`plan::build_plan`] turns it into an
//! ordered, model-major list of [`plan::WorkItem`]s.

pub mod plan;
pub mod profiles;
pub mod restore;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use plan::{Plan, WorkItem, build_plan};
pub use profiles::{Profile, Profiles};

use crate::models::catalog::Catalog;
use crate::vocab::{
    DeviceChoice, LoraSpec, Mode, OutputFormat, Precision, RAW_PROFILE, SamplerKind, SaveOptions,
    SigmaSchedule,
};

/// Which sweep a request runs. One enum, so both sweeps can never be on at once.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Sweep {
    /// One model, one profile.
    #[default]
    None,
    /// Every profile (including `None (raw)`) on the selected model.
    AllProfiles,
    /// Every catalog model × every profile.
    AllModelsAllProfiles,
}

impl Sweep {
    /// The short name used in run-folder names and logs.
    pub fn slug(self) -> &'static str {
        match self {
            Self::None => "single",
            Self::AllProfiles => "all-profiles",
            Self::AllModelsAllProfiles => "all-models-all-profiles",
        }
    }

    /// Builds the sweep from the two user-facing switches.
    ///
    /// # Errors
    /// Both switches on is refused, naming both.
    pub fn from_switches(all_profiles: bool, all_models: bool) -> Result<Self, RequestError> {
        match (all_profiles, all_models) {
            (false, false) => Ok(Self::None),
            (true, false) => Ok(Self::AllProfiles),
            (false, true) => Ok(Self::AllModelsAllProfiles),
            (true, true) => Err(RequestError::new(
                "all_profiles/all_models",
                "--all-profiles (RUN_ALL_PROFILES) and --all-models (RUN_ALL_MODELS) exclude each other; \
                 --all-models already runs every profile on every model",
            )),
        }
    }
}

/// Limits on user settings. Anything outside is refused, never clamped.
pub mod limits {
    /// Smallest width/height in pixels.
    pub const MIN_SIZE_PX: u32 = 16;
    /// Largest width/height in pixels.
    pub const MAX_SIZE_PX: u32 = 4096;
    /// Width and height must be multiples of this.
    pub const SIZE_MULTIPLE_PX: u32 = 8;
    /// Most denoising steps.
    pub const MAX_STEPS: u32 = 500;
    /// Largest CFG scale.
    pub const MAX_CFG: f32 = 50.0;
    /// Most images in one batch.
    pub const MAX_BATCH: u32 = 64;
    /// Most characters in a prompt.
    pub const MAX_PROMPT_CHARS: usize = 20_000;
}

/// Everything a user can ask for: the same type for the window, the CLI and env-var mode.
///
/// `None` means "not set by the user": the profile's default applies, then the model's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Request {
    /// Model key: catalog display name, hub id, local folder or `.safetensors` file.
    pub model: String,
    /// The prompt, before the profile suffix.
    pub prompt: String,
    /// The negative prompt, before the profile suffix.
    pub negative: String,
    /// Style profile name.
    pub profile: String,
    /// Sampler; `None` = profile default, then model default.
    pub scheduler: Option<SamplerKind>,
    /// Sigma schedule chosen independently of the sampler (A1111's "Schedule type").
    pub schedule_type: SigmaSchedule,
    /// Width in pixels; `None` = model native.
    pub width: Option<u32>,
    /// Height in pixels; `None` = model native.
    pub height: Option<u32>,
    /// Denoising steps.
    pub steps: Option<u32>,
    /// Classifier-free guidance scale.
    pub cfg: Option<f32>,
    /// Images per (model, profile) item; image i uses seed + i.
    pub batch: u32,
    /// Base seed; `None` = a random one, recorded.
    pub seed: Option<u64>,
    /// img2img source image.
    pub init_image: Option<PathBuf>,
    /// img2img strength in [0, 1].
    pub strength: f32,
    /// Which sweep to run.
    pub sweep: Sweep,
    /// LoRA adapters.
    pub loras: Vec<LoraSpec>,
    /// A VAE swapped in for the model's own: a hub repo id, a diffusers VAE folder or a
    /// `.safetensors` VAE file; `None` = the model's VAE.
    pub vae: Option<String>,
    /// Also save the latent handed to the VAE as `.latent` (safetensors).
    pub save_latent: bool,
    /// File format of the images (PNG, JPEG or WebP) with its quality.
    pub output: SaveOptions,
    /// Truncate prompts at 77 tokens (diffusers) instead of chunking (A1111/ComfyUI).
    pub truncate_prompt: bool,
    /// Device to run on.
    pub device: DeviceChoice,
    /// Precision; `None` = f32 on CPU, f16 on GPU.
    pub dtype: Option<Precision>,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            model: crate::models::catalog::DEFAULT_MODEL.to_owned(),
            prompt: String::new(),
            negative: String::new(),
            profile: RAW_PROFILE.to_owned(),
            scheduler: None,
            schedule_type: SigmaSchedule::Automatic,
            width: None,
            height: None,
            steps: None,
            cfg: None,
            batch: 1,
            seed: None,
            init_image: None,
            strength: 0.75,
            sweep: Sweep::None,
            loras: Vec::new(),
            vae: None,
            save_latent: false,
            output: SaveOptions::default(),
            truncate_prompt: false,
            device: DeviceChoice::Auto,
            dtype: None,
        }
    }
}

/// A bad field in a request: names the field, says what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RequestError {
    /// The field, as the CLI spells it (`width`, `init_image`, ...).
    pub field: String,
    /// What is wrong and, where it helps, the valid values.
    pub message: String,
}

impl RequestError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl Request {
    /// txt2img or img2img.
    pub fn mode(&self) -> Mode {
        if self.init_image.is_some() { Mode::Img2img } else { Mode::Txt2img }
    }

    /// Checks every field that needs no file access: ranges, names, the sweep.
    ///
    /// # Errors
    /// The first bad field, named.
    pub fn validate(&self, profiles: &Profiles, catalog: &Catalog) -> Result<(), RequestError> {
        validate_text("prompt", &self.prompt)?;
        validate_text("negative", &self.negative)?;
        for (field, value) in [("width", self.width), ("height", self.height)] {
            if let Some(px) = value {
                validate_size(field, px)?;
            }
        }
        if let Some(steps) = self.steps {
            validate_steps("steps", steps)?;
        }
        if let Some(cfg) = self.cfg {
            validate_cfg("cfg", cfg)?;
        }
        if !(1..=limits::MAX_BATCH).contains(&self.batch) {
            return Err(RequestError::new(
                "batch",
                format!("{} is outside 1..={}", self.batch, limits::MAX_BATCH),
            ));
        }
        if !(self.strength.is_finite() && (0.0..=1.0).contains(&self.strength)) {
            return Err(RequestError::new(
                "strength",
                format!("{} is outside [0, 1]", self.strength),
            ));
        }
        if matches!(self.schedule_type, SigmaSchedule::Karras | SigmaSchedule::Exponential)
            && let Some(kind @ (SamplerKind::EulerA | SamplerKind::Ddim)) = self.scheduler
        {
            return Err(RequestError::new(
                "schedule_type",
                format!(
                    "{} has no {} schedule (diffusers offers none); use automatic or sgm_uniform",
                    kind.gui_name(),
                    self.schedule_type.a1111_name()
                ),
            ));
        }
        validate_output(self.output)?;
        if profiles.get(&self.profile).is_none() {
            return Err(RequestError::new(
                "profile",
                format!(
                    "unknown profile {:?}; valid: {}",
                    self.profile,
                    profiles.names().join(", ")
                ),
            ));
        }
        if self.sweep != Sweep::AllModelsAllProfiles {
            catalog
                .resolve(&self.model)
                .map_err(|err| RequestError::new("model", err.to_string()))?;
        }
        Ok(())
    }
}

/// Denoising steps within `1..=MAX_STEPS` (flags, profiles and templates alike).
///
/// # Errors
/// Outside the range, naming `field`.
pub fn validate_steps(field: &str, steps: u32) -> Result<(), RequestError> {
    if (1..=limits::MAX_STEPS).contains(&steps) {
        Ok(())
    } else {
        Err(RequestError::new(field, format!("{steps} is outside 1..={}", limits::MAX_STEPS)))
    }
}

/// A finite CFG scale within `0..=MAX_CFG` (flags, profiles and templates alike).
///
/// # Errors
/// Outside the range or not finite, naming `field`.
pub fn validate_cfg(field: &str, cfg: f32) -> Result<(), RequestError> {
    if cfg.is_finite() && (0.0..=limits::MAX_CFG).contains(&cfg) {
        Ok(())
    } else {
        Err(RequestError::new(
            field,
            format!("{cfg} is outside 0..={} (0 or 1 disables guidance)", limits::MAX_CFG),
        ))
    }
}

/// Text no longer than `MAX_PROMPT_CHARS` characters.
///
/// # Errors
/// Too long, naming `field`.
pub fn validate_text(field: &str, text: &str) -> Result<(), RequestError> {
    if text.chars().count() > limits::MAX_PROMPT_CHARS {
        Err(RequestError::new(
            field,
            format!("longer than {} characters", limits::MAX_PROMPT_CHARS),
        ))
    } else {
        Ok(())
    }
}

fn validate_output(output: SaveOptions) -> Result<(), RequestError> {
    if !(1..=100).contains(&output.quality) {
        return Err(RequestError::new("quality", format!("{} is outside 1..=100", output.quality)));
    }
    if output.lossless && output.format != OutputFormat::Webp {
        return Err(RequestError::new(
            "lossless",
            format!(
                "{} has no lossless mode; lossless is for WebP (PNG is always lossless)",
                output.format.display_name()
            ),
        ));
    }
    Ok(())
}

fn validate_size(field: &str, px: u32) -> Result<(), RequestError> {
    if !(limits::MIN_SIZE_PX..=limits::MAX_SIZE_PX).contains(&px) {
        return Err(RequestError::new(
            field,
            format!("{px} is outside {}..={}", limits::MIN_SIZE_PX, limits::MAX_SIZE_PX),
        ));
    }
    if !px.is_multiple_of(limits::SIZE_MULTIPLE_PX) {
        return Err(RequestError::new(
            field,
            format!("{px} is not a multiple of {}", limits::SIZE_MULTIPLE_PX),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_request() -> Request {
        Request { prompt: "a cat".into(), ..Request::default() }
    }

    fn check(req: &Request) -> Result<(), RequestError> {
        req.validate(&Profiles::builtin(), &Catalog::builtin())
    }

    #[test]
    fn defaults_are_valid() {
        check(&ok_request()).expect("valid");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(Request, &str)> = vec![
            (Request { width: Some(1001), ..ok_request() }, "width"),
            (Request { height: Some(8), ..ok_request() }, "height"),
            (Request { steps: Some(0), ..ok_request() }, "steps"),
            (Request { cfg: Some(-1.0), ..ok_request() }, "cfg"),
            (Request { cfg: Some(f32::NAN), ..ok_request() }, "cfg"),
            (Request { batch: 0, ..ok_request() }, "batch"),
            (Request { strength: 1.5, ..ok_request() }, "strength"),
            (Request { profile: "Nope".into(), ..ok_request() }, "profile"),
            (Request { model: "not a model".into(), ..ok_request() }, "model"),
            (
                Request {
                    output: SaveOptions { quality: 0, ..SaveOptions::default() },
                    ..ok_request()
                },
                "quality",
            ),
            (
                Request {
                    output: SaveOptions { quality: 101, ..SaveOptions::default() },
                    ..ok_request()
                },
                "quality",
            ),
            (
                Request {
                    output: SaveOptions {
                        format: OutputFormat::Jpeg,
                        lossless: true,
                        ..SaveOptions::default()
                    },
                    ..ok_request()
                },
                "lossless",
            ),
        ];
        for (req, field) in cases {
            let err = check(&req).expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn both_sweeps_refused_naming_both() {
        let err = Sweep::from_switches(true, true).expect_err("both");
        assert!(err.message.contains("--all-profiles") && err.message.contains("--all-models"));
    }
}
