//! A pipeline before it loads: each component's config and where its tensors are, from a
//! diffusers folder or a single-file checkpoint alike. Swapping the VAE, or patching tensors as
//! they load (LoRA), is done here, the same way for both layouts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::PipelineFamily;
use crate::diffusion::error::{DiffusionError, Result, read_json, read_text};
use crate::diffusion::single_file::{Component, SingleFile, TextEncoderPart};
use crate::diffusion::tokenizer::ClipTokenizer;
use crate::diffusion::weights::{ComponentWeights, TensorPatch};

/// One component ready to build: config, tensors, and an optional patch applied as they load.
#[derive(Clone)]
pub struct PartToLoad {
    /// Config and tensors.
    pub component: Component,
    /// Changes made to its tensors on the way in (LoRA deltas).
    pub patch: Option<Arc<dyn TensorPatch>>,
    /// The file its config came from (or the weights, for inferred configs), named in errors.
    pub config_path: PathBuf,
}

impl std::fmt::Debug for PartToLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartToLoad")
            .field("component", &self.component)
            .field("patched", &self.patch.is_some())
            .field("config_path", &self.config_path)
            .finish()
    }
}

impl PartToLoad {
    fn new(component: Component, config_path: PathBuf) -> Self {
        Self { component, patch: None, config_path }
    }
}

/// Everything a [`super::DiffusionPipeline`] is built from.
#[derive(Debug, Clone)]
pub struct PipelineParts {
    /// SDXL or SD.
    pub family: PipelineFamily,
    /// Tokenizers, in pipeline order.
    pub tokenizers: Vec<ClipTokenizer>,
    /// Text encoders, in pipeline order.
    pub text_encoders: Vec<PartToLoad>,
    /// The UNet.
    pub unet: PartToLoad,
    /// The VAE (a single file may lack one: then [`Self::with_vae`] is required).
    pub vae: Option<PartToLoad>,
    /// `scheduler_config.json`.
    pub scheduler: Value,
    /// An empty negative prompt means zero embeddings (SDXL).
    pub force_zeros_for_empty_prompt: bool,
    /// The folder or file the pipeline came from.
    pub origin: PathBuf,
}

impl PipelineParts {
    /// A diffusers folder (`model_index.json` + component folders); `prefer_fp16` picks the
    /// `fp16` variant files where present.
    ///
    /// # Errors
    /// Missing or malformed files; unsupported pipeline classes; a pipeline without its text
    /// encoders (an SDXL refiner).
    pub fn from_folder(folder: &Path, prefer_fp16: bool) -> Result<Self> {
        let index_path = folder.join("model_index.json");
        let index: Value = read_json("model_index.json", &index_path)?;
        let family = PipelineFamily::of(&index, &index_path)?;
        let component_names: &[(&str, &str)] = match family {
            PipelineFamily::Sdxl => {
                &[("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")]
            }
            PipelineFamily::StableDiffusion => &[("tokenizer", "text_encoder")],
        };
        let mut tokenizers = Vec::new();
        let mut text_encoders = Vec::new();
        for (tokenizer, encoder) in component_names {
            if index.get(*encoder).and_then(|entry| entry.get(0)).is_none_or(Value::is_null) {
                return Err(DiffusionError::config(
                    *encoder,
                    "this pipeline has no such text encoder (SDXL refiners are not supported)",
                    &index_path,
                ));
            }
            tokenizers.push(ClipTokenizer::from_folder(&folder.join(tokenizer))?);
            text_encoders.push(folder_part(
                &folder.join(encoder),
                "model",
                "text encoder config",
                prefer_fp16,
            )?);
        }
        let unet = folder_part(
            &folder.join("unet"),
            "diffusion_pytorch_model",
            "UNet config",
            prefer_fp16,
        )?;
        let vae =
            folder_part(&folder.join("vae"), "diffusion_pytorch_model", "VAE config", prefer_fp16)?;
        let scheduler_path = folder.join("scheduler/scheduler_config.json");
        let scheduler: Value =
            serde_json::from_str(&read_text("scheduler config", &scheduler_path)?).map_err(
                |err| DiffusionError::config("scheduler", err.to_string(), &scheduler_path),
            )?;
        let force_zeros_for_empty_prompt = index
            .get("force_zeros_for_empty_prompt")
            .and_then(Value::as_bool)
            .unwrap_or(family == PipelineFamily::Sdxl);
        Ok(Self {
            family,
            tokenizers,
            text_encoders,
            unet,
            vae: Some(vae),
            scheduler,
            force_zeros_for_empty_prompt,
            origin: folder.to_path_buf(),
        })
    }

    /// A diffusers folder or a single `.safetensors` checkpoint (with `config`, a diffusers
    /// folder of configs to use instead of the inferred ones, as diffusers' `config=`; without
    /// one, the file's [`config_sidecar`] when there is one).
    ///
    /// # Errors
    /// As [`Self::from_folder`] and [`SingleFile::open_with`].
    pub fn open(path: &Path, config: Option<&Path>, prefer_fp16: bool) -> Result<Self> {
        if path.is_dir() {
            Self::from_folder(path, prefer_fp16)
        } else {
            let sidecar = config.map(Path::to_path_buf).or_else(|| config_sidecar(path));
            Ok(Self::from_single_file(SingleFile::open_with(path, sidecar.as_deref())?))
        }
    }

    /// A single-file checkpoint, read and mapped ([`SingleFile::open`]).
    pub fn from_single_file(file: SingleFile) -> Self {
        let family = match file.info.architecture {
            crate::models::checkpoint::CheckpointArchitecture::SdxlBase => PipelineFamily::Sdxl,
            _ => PipelineFamily::StableDiffusion,
        };
        let origin = file.path.clone();
        let (tokenizers, text_encoders) = file
            .text_encoders
            .into_iter()
            .map(|TextEncoderPart { encoder, tokenizer }| {
                (tokenizer, PartToLoad::new(encoder, origin.clone()))
            })
            .unzip();
        Self {
            family,
            tokenizers,
            text_encoders,
            unet: PartToLoad::new(file.unet, origin.clone()),
            vae: file.vae.map(|vae| PartToLoad::new(vae, origin.clone())),
            scheduler: file.scheduler,
            force_zeros_for_empty_prompt: file.force_zeros_for_empty_prompt,
            origin,
        }
    }

    /// The same pipeline with another VAE (`--vae`), named by `source` in errors.
    #[must_use]
    pub fn with_vae(mut self, vae: Component, source: &Path) -> Self {
        self.vae = Some(PartToLoad::new(vae, source.to_path_buf()));
        self
    }

    /// The VAE scaling factor the pipeline's own VAE config says (a lone VAE file is given the
    /// model's), or the architecture's when the pipeline has no VAE.
    pub fn scaling_factor(&self) -> f64 {
        self.vae
            .as_ref()
            .and_then(|vae| vae.component.config.get("scaling_factor"))
            .and_then(Value::as_f64)
            .unwrap_or(match self.family {
                PipelineFamily::Sdxl => crate::diffusion::single_file::SDXL_SCALING_FACTOR,
                PipelineFamily::StableDiffusion => crate::diffusion::single_file::SD_SCALING_FACTOR,
            })
    }
}

/// The diffusers config folder that may sit beside a single file, `<file stem>.config/`, for a
/// checkpoint whose hyper-parameters are not its architecture's: used as diffusers'
/// `from_single_file(file, config=…)` (a pipeline's configs and tokenizers, no weights; for a
/// lone VAE file, the `config.json` of a `vae` folder).
pub fn config_sidecar(file: &Path) -> Option<PathBuf> {
    let stem = file.file_stem()?.to_string_lossy().into_owned();
    let folder = file.with_file_name(format!("{stem}.config"));
    folder.is_dir().then_some(folder)
}

/// A diffusers component folder: `config.json` and its chosen weight files.
fn folder_part(
    folder: &Path,
    stem: &str,
    what: &'static str,
    prefer_fp16: bool,
) -> Result<PartToLoad> {
    let config_path = folder.join("config.json");
    let config: Value = read_json(what, &config_path)?;
    let weights = ComponentWeights::folder(folder, stem, prefer_fp16)?;
    Ok(PartToLoad::new(Component { config, weights }, config_path))
}

/// A diffusers VAE given on its own (a folder with `config.json` + weights, as
/// madebyollin/sdxl-vae-fp16-fix), or a lone VAE file (its config inferred with
/// `scaling_factor`, or read from `config`).
///
/// # Errors
/// Not a VAE; missing or malformed files.
pub fn vae_override(
    path: &Path,
    scaling_factor: f64,
    config: Option<&Path>,
    prefer_fp16: bool,
) -> Result<Component> {
    if path.is_dir() {
        let part = folder_part(path, "diffusion_pytorch_model", "VAE config", prefer_fp16)?;
        return Ok(part.component);
    }
    let sidecar = config_sidecar(path).map(|folder| folder.join("config.json"));
    crate::diffusion::single_file::vae_file(path, scaling_factor, config.or(sidecar.as_deref()))
}
