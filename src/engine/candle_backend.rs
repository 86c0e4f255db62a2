//! The candle backend: drives [`DiffusionPipeline`] for the engine, translating its step
//! callback into progress, previews and cancel, and its errors into [`BackendError`].
//!
//! It loads diffusers folders from disk. Hub ids are turned into a local snapshot folder by the
//! resolver the engine passes in (the `models` layer owns the hub cache); without one, only
//! local folders load.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use super::backend::{
    Backend, BackendError, Capabilities, GenerateParams, Generated, LoadProgress, LoadedModel,
    Preview, StepUpdate, Timings,
};
use crate::diffusion::DiffusionError;
use crate::diffusion::device::{device_label, dtype_label, select_device, select_dtype};
use crate::diffusion::pipeline::{DiffusionPipeline, GenerationRequest};
use crate::diffusion::tokenizer::LongPromptMode;
use crate::models::catalog::{EntryKind, ModelDefaults, ModelRef, ModelSource};
use crate::request::{DeviceChoice, Precision};
use crate::storage::metadata::NOISE_SOURCE_TORCH_CPU;

/// Turns a model reference into a local diffusers folder (e.g. a hub snapshot).
pub type FolderResolver =
    Box<dyn FnMut(&ModelRef, &mut dyn FnMut(LoadProgress)) -> Result<PathBuf, String> + Send>;

/// The candle backend. Keeps one pipeline loaded.
pub struct CandleBackend {
    resolver: Option<FolderResolver>,
    loaded: Option<(ModelRef, DeviceChoice, Option<Precision>, DiffusionPipeline)>,
    device: Option<Device>,
}

impl std::fmt::Debug for CandleBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleBackend")
            .field("loaded", &self.loaded.as_ref().map(|(model, ..)| &model.display_name))
            .finish_non_exhaustive()
    }
}

impl Default for CandleBackend {
    fn default() -> Self {
        Self::new(None)
    }
}

impl CandleBackend {
    /// A backend that resolves hub models with `resolver` (local folders load without it).
    pub fn new(resolver: Option<FolderResolver>) -> Self {
        Self { resolver, loaded: None, device: None }
    }

    fn folder_for(
        &mut self,
        model: &ModelRef,
        on_progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<PathBuf, BackendError> {
        if let EntryKind::Lora { .. } = model.kind {
            return Err(BackendError::Unsupported(format!(
                "{} is a LoRA adapter; the candle backend does not apply LoRAs yet",
                model.display_name
            )));
        }
        match &model.source {
            ModelSource::LocalDir(folder) => Ok(folder.clone()),
            ModelSource::LocalFile(file) => Err(BackendError::Unsupported(format!(
                "single-file checkpoints are not supported by the candle backend yet: {}",
                file.display()
            ))),
            ModelSource::Hub(id) => match &mut self.resolver {
                Some(resolve) => resolve(model, on_progress).map_err(BackendError::Failed),
                None => Err(BackendError::Unsupported(format!(
                    "{id}: hub models need a resolver; pass a local diffusers folder"
                ))),
            },
        }
    }
}

fn backend_error(err: DiffusionError) -> BackendError {
    match err {
        DiffusionError::Cancelled => BackendError::Cancelled,
        DiffusionError::Unsupported(message) => BackendError::Unsupported(message),
        other => {
            let message = other.to_string();
            if message.to_ascii_lowercase().contains("out of memory") {
                BackendError::OutOfMemory(message)
            } else {
                BackendError::Failed(message)
            }
        }
    }
}

/// Native defaults read from the loaded pipeline: size = UNet `sample_size` × VAE scale.
fn native_defaults(
    pipeline: &DiffusionPipeline,
    fallback: ModelDefaults,
    folder: &Path,
) -> ModelDefaults {
    let config_path = folder.join("unet/config.json");
    let sample_size = std::fs::read_to_string(&config_path)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|config| config.get("sample_size").and_then(serde_json::Value::as_u64));
    let scale = u64::try_from(pipeline.vae_scale_factor()).unwrap_or(8);
    match sample_size.and_then(|size| u32::try_from(size * scale).ok()) {
        Some(side) => ModelDefaults { width: side, height: side, ..fallback },
        None => fallback,
    }
}

impl Backend for CandleBackend {
    fn name(&self) -> &'static str {
        "candle"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            img2img: true,
            negative_prompt: true,
            seeds: true,
            custom_schedulers: true,
            lora: false,
            controlnet: false,
            upscaling: false,
        }
    }

    fn device_label(&self) -> String {
        self.device.as_ref().map_or_else(|| "not loaded".to_owned(), device_label)
    }

    fn load(
        &mut self,
        model: &ModelRef,
        device: DeviceChoice,
        dtype: Option<Precision>,
        on_progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<LoadedModel, BackendError> {
        let started = Instant::now();
        if let Some((loaded, loaded_device, loaded_dtype, pipeline)) = &self.loaded
            && loaded == model
            && *loaded_device == device
            && *loaded_dtype == dtype
        {
            return Ok(LoadedModel {
                defaults: native_defaults(pipeline, model.defaults, pipeline.folder()),
                model_id: model.model_id(),
                revision: None,
                load_s: 0.0,
            });
        }
        self.loaded = None;
        let folder = self.folder_for(model, on_progress)?;
        let candle_device = select_device(device).map_err(backend_error)?;
        let candle_dtype = select_dtype(&candle_device, dtype).map_err(backend_error)?;
        on_progress(LoadProgress {
            message: format!("loading {} ({})", model.display_name, dtype_label(candle_dtype)),
            fraction: None,
        });
        let pipeline = DiffusionPipeline::load(&folder, &candle_device, candle_dtype)
            .map_err(backend_error)?;
        let defaults = native_defaults(&pipeline, model.defaults, &folder);
        on_progress(LoadProgress {
            message: format!("loaded {}", model.display_name),
            fraction: Some(1.0),
        });
        self.device = Some(candle_device);
        self.loaded = Some((model.clone(), device, dtype, pipeline));
        Ok(LoadedModel {
            defaults,
            model_id: model.model_id(),
            revision: None,
            load_s: started.elapsed().as_secs_f64(),
        })
    }

    fn generate(
        &mut self,
        params: &GenerateParams,
        on_step: &mut dyn FnMut(StepUpdate<'_>) -> ControlFlow<()>,
    ) -> Result<Generated, BackendError> {
        let Some((_, _, _, pipeline)) = &self.loaded else {
            return Err(BackendError::Failed("candle: generate before load".to_owned()));
        };
        if !params.loras.is_empty() {
            return Err(BackendError::Unsupported("LoRA adapters (candle backend)".to_owned()));
        }
        let started = Instant::now();
        let request = GenerationRequest {
            prompt: params.prompt.clone(),
            negative: params.negative.clone(),
            width: params.width as usize,
            height: params.height as usize,
            steps: params.steps as usize,
            cfg: f64::from(params.cfg),
            sampler: params.sampler,
            seed: params.seed,
            init_image: params.init_image.clone(),
            strength: f64::from(params.strength),
            long_prompt: if params.truncate_prompt {
                LongPromptMode::Truncate
            } else {
                LongPromptMode::Chunk
            },
            want_preview: params.want_preview,
        };
        let output = pipeline
            .generate(&request, &mut |progress| {
                let preview = progress.preview.map(|image| Preview {
                    width: image.width(),
                    height: image.height(),
                    rgb: image.as_raw().clone(),
                });
                on_step(StepUpdate {
                    step: progress.step,
                    steps: progress.steps,
                    preview: preview.as_ref(),
                })
            })
            .map_err(backend_error)?;
        let latent_safetensors = if params.save_latent {
            Some(
                output
                    .latent_safetensors(pipeline.vae().config().scaling_factor)
                    .map_err(backend_error)?,
            )
        } else {
            None
        };
        Ok(Generated {
            image: output.image,
            latent_safetensors,
            sampler: output.sampler,
            noise_source: NOISE_SOURCE_TORCH_CPU.to_owned(),
            dtype: dtype_label(pipeline.dtype()).to_owned(),
            notes: output.notes,
            timings: Timings {
                load_s: 0.0,
                encode_s: output.encode_s,
                steps_s: output.steps_s,
                decode_s: output.decode_s,
                total_s: started.elapsed().as_secs_f64(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::sampler::SamplerKind;

    fn tiny_sdxl() -> ModelRef {
        let folder =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusion/sdxl_tiny");
        ModelRef {
            display_name: "tiny".to_owned(),
            source: ModelSource::LocalDir(folder),
            kind: EntryKind::Pipeline,
            defaults: ModelDefaults::SDXL,
        }
    }

    /// The backend runs the real pipeline: progress per step, previews, a saved latent, and the
    /// same pixels the pipeline gives (the pipeline itself is checked against diffusers in
    /// tests/it/diffusion.rs).
    #[test]
    fn candle_backend_generates_with_progress_preview_and_latent() {
        let mut backend = CandleBackend::default();
        let loaded =
            backend.load(&tiny_sdxl(), DeviceChoice::Cpu, None, &mut |_| {}).expect("load");
        assert_eq!((loaded.defaults.width, loaded.defaults.height), (64, 64));
        assert_eq!(backend.device_label(), "cpu");
        let params = GenerateParams {
            prompt: "a red cube".to_owned(),
            negative: String::new(),
            width: 64,
            height: 64,
            steps: 3,
            cfg: 1.0,
            sampler: SamplerKind::Default,
            seed: 3,
            init_image: None,
            strength: 1.0,
            truncate_prompt: false,
            save_latent: true,
            loras: Vec::new(),
            want_preview: true,
        };
        let mut updates = Vec::new();
        let generated = backend
            .generate(&params, &mut |update| {
                updates.push((update.step, update.steps, update.preview.map(|p| p.width)));
                ControlFlow::Continue(())
            })
            .expect("generate");
        assert_eq!(updates, vec![(1, 3, Some(32)), (2, 3, Some(32)), (3, 3, Some(32))]);
        assert_eq!(generated.sampler, SamplerKind::Euler);
        assert_eq!(generated.timings.steps_s.len(), 3);
        let bytes = generated.latent_safetensors.expect("latent");
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).expect("parses");
        assert_eq!(tensors["latent_tensor"].dims(), &[1, 4, 32, 32]);
        let cancelled = backend.generate(&params, &mut |_| ControlFlow::Break(()));
        assert!(matches!(cancelled, Err(BackendError::Cancelled)));
    }
}
