//! The `Backend` trait: what the engine asks of a generator (candle, mock), and what each one
//! can do. A request that needs a capability the backend lacks is refused before any work.

use std::ops::ControlFlow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::models::catalog::{EntryKind, LoraChoice, ModelDefaults, ModelRef, ModelSource};
use crate::request::{Plan, Sweep};
use crate::vocab::{DeviceChoice, LoraHash, LoraSpec, Precision, SamplerKind, SigmaSchedule};

/// What a backend can do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[allow(clippy::struct_excessive_bools, reason = "one switch per capability")]
pub struct Capabilities {
    /// Image to image.
    pub img2img: bool,
    /// A negative prompt (an unconditional pass with text).
    pub negative_prompt: bool,
    /// Seeded, reproducible noise.
    pub seeds: bool,
    /// Samplers other than the model's default.
    pub custom_schedulers: bool,
    /// LoRA adapters.
    pub lora: bool,
    /// ControlNet conditioning.
    pub controlnet: bool,
    /// Upscaling.
    pub upscaling: bool,
}

impl Capabilities {
    /// Every capability the plan needs that this backend lacks, as user-facing names.
    pub fn missing_for(&self, plan: &Plan) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if plan.request.init_image.is_some() && !self.img2img {
            missing.push("img2img (--init-image)");
        }
        if !self.negative_prompt && plan.items.iter().any(|item| !item.negative.is_empty()) {
            missing.push("negative prompt");
        }
        if !self.seeds {
            missing.push("seeds");
        }
        if !self.custom_schedulers
            && plan
                .items
                .iter()
                .any(|item| item.scheduler.is_some_and(|s| s != SamplerKind::Default))
        {
            missing.push("custom schedulers (--scheduler)");
        }
        // A LoRA the user chose needs the capability; in an all-models sweep a catalog LoRA entry
        // is one item among many and fails on its own (logged) while the sweep goes on.
        let needs_lora = !plan.loras.is_empty()
            || (plan.request.sweep != Sweep::AllModelsAllProfiles
                && plan.items.iter().any(|item| matches!(item.model.kind, EntryKind::Lora { .. })));
        if needs_lora && !self.lora {
            missing.push("LoRA adapters");
        }
        missing
    }
}

/// How a model is to be loaded, besides which model: what the engine passes to
/// [`Backend::load`] from the request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadOptions {
    /// The device asked for.
    pub device: DeviceChoice,
    /// The precision asked for (`None`: the device's default).
    pub dtype: Option<Precision>,
    /// A VAE swapped in for the model's own (`--vae`; kind [`EntryKind::Vae`]).
    pub vae: Option<ModelRef>,
    /// LoRAs merged into the weights as they load, in order.
    pub loras: Vec<LoraChoice>,
}

/// What identifies a loaded model — the engine's "already loaded" check and the backends'
/// model caches: the same source on another device, in another precision, with another VAE or
/// other LoRAs (or weights) is another set of tensors.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelKey {
    /// Where the model comes from.
    pub source: ModelSource,
    /// The device asked for.
    pub device: DeviceChoice,
    /// The precision asked for (`None`: the device's default).
    pub dtype: Option<Precision>,
    /// Where the swapped-in VAE comes from, if any.
    pub vae: Option<ModelSource>,
    /// The merged LoRAs: where each comes from and its weight (as bits: weights compare
    /// exactly), in order.
    pub loras: Vec<(ModelSource, String, u32)>,
}

impl ModelKey {
    /// The key of `model` loaded with `options`.
    pub fn new(model: &ModelRef, options: &LoadOptions) -> Self {
        Self {
            source: model.source.clone(),
            device: options.device,
            dtype: options.dtype,
            vae: options.vae.as_ref().map(|vae| vae.source.clone()),
            loras: options
                .loras
                .iter()
                .map(|choice| {
                    let file = match &choice.lora.kind {
                        EntryKind::Lora { file, .. } => file.clone(),
                        EntryKind::Pipeline | EntryKind::Vae => String::new(),
                    };
                    (choice.lora.source.clone(), file, choice.weight.to_bits())
                })
                .collect(),
        }
    }
}

/// Progress while a model loads or downloads.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadProgress {
    /// What is happening ("downloading `unet/diffusion_pytorch_model.fp16.safetensors`").
    pub message: String,
    /// Fraction done, when known.
    pub fraction: Option<f32>,
}

/// A model ready to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedModel {
    /// Native settings (from the model's own config when the backend reads it).
    pub defaults: ModelDefaults,
    /// Hub id or path.
    pub model_id: String,
    /// Hub commit, when known.
    pub revision: Option<String>,
    /// Seconds spent loading (0 when it came from the cache).
    pub load_s: f64,
    /// A1111's name and hash of each of [`LoadOptions::loras`], in order.
    pub lora_hashes: Vec<LoraHash>,
}

/// Everything one image needs, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Prompt with the profile applied.
    pub prompt: String,
    /// Negative prompt with the profile applied.
    pub negative: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Denoising steps.
    pub steps: u32,
    /// CFG scale; ≤ 1 means no unconditional pass.
    pub cfg: f32,
    /// Sampler (`Default` = the model config's).
    pub sampler: SamplerKind,
    /// Sigma schedule (`Automatic` = the sampler's own).
    pub schedule_type: SigmaSchedule,
    /// Seed of this image.
    pub seed: u64,
    /// img2img source, already at `width`×`height`.
    pub init_image: Option<image::RgbImage>,
    /// img2img strength.
    pub strength: f32,
    /// Truncate prompts at 77 tokens instead of chunking.
    pub truncate_prompt: bool,
    /// Return the latent handed to the VAE.
    pub save_latent: bool,
    /// LoRA adapters.
    pub loras: Vec<LoraSpec>,
    /// Compute a preview each step.
    pub want_preview: bool,
}

/// A small RGB8 picture of the current latents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major RGB8.
    pub rgb: Vec<u8>,
}

/// Sent after every denoising step.
#[derive(Debug)]
pub struct StepUpdate<'a> {
    /// Steps completed, from 1.
    pub step: usize,
    /// Steps in all.
    pub steps: usize,
    /// The newest preview, when asked for.
    pub preview: Option<&'a Preview>,
}

/// Where the time went, in seconds (the CLI's `--json` `timings`, the window's figures).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Timings {
    /// Model load (0 when cached).
    pub load_s: f64,
    /// Prompt encoding.
    pub encode_s: f64,
    /// Each denoising step.
    pub steps_s: Vec<f64>,
    /// VAE decode.
    pub decode_s: f64,
    /// The whole image.
    pub total_s: f64,
}

/// A finished image.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The image.
    pub image: image::RgbImage,
    /// The latent handed to the VAE decoder as safetensors bytes (key `latent_tensor`).
    pub latent_safetensors: Option<Vec<u8>>,
    /// The sampler that ran (`Default` resolved).
    pub sampler: SamplerKind,
    /// Noise source label (see `storage::metadata::NOISE_SOURCE_TORCH_CPU`).
    pub noise_source: String,
    /// Precision label (`f32`, `f16`, `bf16`).
    pub dtype: String,
    /// What was done that the metadata should say (prompt chunking, OOM fallback…).
    pub notes: Vec<String>,
    /// Where the time went.
    pub timings: Timings,
}

/// Why a backend call ended without an image.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The step callback asked to stop.
    #[error("cancelled")]
    Cancelled,
    /// The device ran out of memory (after any fallbacks the backend tried).
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The model or request uses something this backend does not support.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Anything else, with its context.
    #[error("{0}")]
    Failed(String),
}

/// A generator the engine can drive. One lives on the engine thread and owns its models.
pub trait Backend: Send {
    /// `candle` or `mock`.
    fn name(&self) -> &'static str;

    /// A check of a model's files that front ends run while planning, before any work, so a
    /// model that cannot load is bad input (exit 2) rather than a failed job. The default
    /// accepts every model (the mock needs no files).
    fn model_checker(&self) -> ModelChecker {
        Arc::new(|_| Ok(()))
    }

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Human label of the device in use (`cpu`, `cuda:0 (NVIDIA H200)`).
    fn device_label(&self) -> String;

    /// Makes `model` ready as `options` say (from its cache when possible).
    ///
    /// # Errors
    /// Missing files, unsafe weights, unsupported layouts, device errors.
    fn load(
        &mut self,
        model: &ModelRef,
        options: &LoadOptions,
        on_progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<LoadedModel, BackendError>;

    /// Makes one image with the model last loaded. `on_step` is called after every step;
    /// returning `Break` stops within that step with [`BackendError::Cancelled`].
    ///
    /// # Errors
    /// Cancelled, out of memory, or a failure with its context.
    fn generate(
        &mut self,
        params: &GenerateParams,
        on_step: &mut dyn FnMut(StepUpdate<'_>) -> ControlFlow<()>,
    ) -> Result<Generated, BackendError>;
}

/// A planning-time check of a model's files: `Err` says what is wrong, naming the file.
pub type ModelChecker = Arc<dyn Fn(&ModelRef) -> Result<(), String> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Catalog;
    use crate::request::{Profiles, Request, build_plan};

    fn plan(request: &Request) -> Plan {
        let now = chrono::Local::now();
        build_plan(request, &Profiles::builtin(), &Catalog::builtin(), now, || 1).expect("plan")
    }

    #[test]
    fn a_lora_is_needed_only_when_chosen() {
        let no_lora = Capabilities {
            img2img: true,
            negative_prompt: true,
            seeds: true,
            custom_schedulers: true,
            ..Capabilities::default()
        };
        let chosen = plan(&Request { model: "Pixel Art XL".into(), ..Request::default() });
        assert_eq!(no_lora.missing_for(&chosen), vec!["LoRA adapters"]);
        let sweep = plan(&Request { sweep: Sweep::AllModelsAllProfiles, ..Request::default() });
        assert!(
            no_lora.missing_for(&sweep).is_empty(),
            "the sweep runs; the LoRA items fail alone"
        );
        let flag = plan(&Request {
            loras: vec![LoraSpec { source: "nerijs/pixel-art-xl".into(), weight: 1.0 }],
            ..Request::default()
        });
        assert_eq!(no_lora.missing_for(&flag), vec!["LoRA adapters"]);
    }
}
