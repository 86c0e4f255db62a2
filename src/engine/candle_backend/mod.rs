//! The candle backend: drives [`DiffusionPipeline`] for the engine, translating its step
//! callback into progress, previews and cancel, and its errors into [`BackendError`].
//!
//! It loads diffusers folders from disk. Hub ids are turned into a local snapshot folder by the
//! resolver the engine passes in (the `models` layer owns the hub cache); without one, only
//! local folders load.
//!
//! Loaded pipelines stay in a [`ModelCache`] keyed by (model source, device, precision) within
//! a byte budget (`IMAGELAB_MODEL_CACHE_MB`; unset or 0 keeps only the newest pipeline, the
//! old behaviour, because an SDXL pipeline is 5–7 GB and a second one rarely fits a desktop
//! GPU). Switching back to a cached model is immediate: `load_s` is 0 and nothing is read.
//!
//! Generation walks the models layer's out-of-memory ladder ([`crate::models::oom`]): with a
//! memory budget (`IMAGELAB_MEMORY_BUDGET_MB`; unset: none) the first rung whose estimate
//! ([`CandleBackend::estimate_bytes`]) fits is planned before anything is allocated; on a real
//! allocation failure the next rung is tried (freeing other cached models, smaller sizes with
//! the aspect ratio kept, then a tiled VAE decode). What was done is a note on the result.
//!
//! This file is the adapter; the cache policy (`cache_policy.rs`) and the out-of-memory ladder
//! with its memory estimate (`ladder.rs`) sit beside it.

mod cache_policy;
mod ladder;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;

use super::backend::{
    Backend, BackendError, Capabilities, GenerateParams, Generated, LoadProgress, LoadedModel,
    ModelChecker, ModelKey, Preview, StepUpdate, Timings,
};
use crate::diffusion::DiffusionError;
use crate::diffusion::device::{device_label, dtype_label, select_device, select_dtype};
use crate::diffusion::pipeline::VaeDecode;
use crate::diffusion::pipeline::{DiffusionPipeline, GenerationRequest};
use crate::diffusion::tokenizer::LongPromptMode;
use crate::diffusion::unet::SampleSize;
use crate::models::ModelError;
use crate::models::cache::{CacheStats, ModelCache};
use crate::models::catalog::{EntryKind, ModelDefaults, ModelRef, ModelSource};
use crate::models::hub::HubConfig;
use crate::models::oom::{Attempt, VAE_TILE_PX, is_out_of_memory};
use crate::models::preflight;
use crate::models::weight_files::WeightVariant;
use crate::storage::metadata::NOISE_SOURCE_TORCH_CPU;
use crate::vocab::{DeviceChoice, Precision};

/// Turns a model reference into a local diffusers folder (e.g. a hub snapshot).
pub type FolderResolver =
    Box<dyn FnMut(&ModelRef, &mut dyn FnMut(LoadProgress)) -> Result<PathBuf, ModelError> + Send>;

/// The candle backend. Keeps loaded pipelines in an LRU cache; generates with the current one.
pub struct CandleBackend {
    resolver: Option<FolderResolver>,
    /// The hub settings and weight variant of planning-time model checks (`None`: local
    /// models only).
    model_checks: Option<(HubConfig, WeightVariant)>,
    cache: ModelCache<ModelKey, DiffusionPipeline>,
    current: Option<(ModelKey, Arc<DiffusionPipeline>)>,
    device: Option<Device>,
    memory_budget: Option<u64>,
    vae_tile_px: u32,
    /// Tests only: this many attempts fail as if the allocator had run out of memory.
    #[cfg(test)]
    simulated_out_of_memory: u32,
}

impl std::fmt::Debug for CandleBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleBackend")
            .field("current", &self.current.as_ref().map(|(key, _)| &key.source))
            .field("cache", &self.cache.stats())
            .finish_non_exhaustive()
    }
}

impl Default for CandleBackend {
    fn default() -> Self {
        Self::new(None)
    }
}

impl CandleBackend {
    /// A backend that resolves hub models with `resolver` (local folders load without it),
    /// keeping only the newest pipeline and with no memory budget (see
    /// [`Self::with_cache_budget`] and [`Self::with_memory_budget`]).
    pub fn new(resolver: Option<FolderResolver>) -> Self {
        Self {
            resolver,
            model_checks: None,
            cache: ModelCache::new(0),
            current: None,
            device: None,
            memory_budget: None,
            vae_tile_px: VAE_TILE_PX,
            #[cfg(test)]
            simulated_out_of_memory: 0,
        }
    }

    /// The same backend checking hub models too while planning, with the hub settings and
    /// weight variant its resolver uses (`models::preflight`).
    #[must_use]
    pub fn with_model_checks(mut self, hub: HubConfig, prefer: WeightVariant) -> Self {
        self.model_checks = Some((hub, prefer));
        self
    }

    /// The same backend with a memory budget of `bytes` per generation (`None`: no budget).
    #[must_use]
    pub fn with_memory_budget(mut self, bytes: Option<u64>) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// The same backend with tiled VAE decodes in tiles of `pixels` (default
    /// [`VAE_TILE_PX`]); tiles overlap by a quarter, as in diffusers.
    #[must_use]
    pub fn with_vae_tile_px(mut self, pixels: u32) -> Self {
        self.vae_tile_px = pixels.max(1);
        self
    }

    /// The same backend with a model cache budget of `bytes` (0: keep only the newest).
    #[must_use]
    pub fn with_cache_budget(mut self, bytes: u64) -> Self {
        self.cache = ModelCache::new(bytes);
        self.current = None;
        self
    }

    /// The model cache's counters (hits, misses, evictions, bytes).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
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
                Some(resolve) => {
                    resolve(model, on_progress).map_err(|err| BackendError::Failed(err.to_string()))
                }
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
            if is_out_of_memory(&message) {
                BackendError::OutOfMemory(message)
            } else {
                BackendError::Failed(message)
            }
        }
    }
}

/// Native defaults read from the loaded pipeline: size = UNet `sample_size` × VAE scale.
fn native_defaults(pipeline: &DiffusionPipeline, fallback: ModelDefaults) -> ModelDefaults {
    let scale = pipeline.vae_scale_factor();
    let side = |latent: usize| u32::try_from(latent.checked_mul(scale)?).ok();
    match pipeline.unet().config().sample_size.map(SampleSize::height_width) {
        Some((height, width)) => match (side(width), side(height)) {
            (Some(width), Some(height)) => ModelDefaults { width, height, ..fallback },
            _ => fallback,
        },
        None => fallback,
    }
}

impl Backend for CandleBackend {
    fn name(&self) -> &'static str {
        "candle"
    }

    /// What `load` would refuse, found while planning: LoRA adapters (not applied yet), then
    /// the loader's own resolution of the files (`models::preflight`). Hub models are checked
    /// only with hub settings ([`CandleBackend::with_model_checks`]).
    fn model_checker(&self) -> ModelChecker {
        let checks = self.model_checks.clone();
        Arc::new(move |model: &ModelRef| {
            if let EntryKind::Lora { .. } = model.kind {
                return Err(format!(
                    "{} is a LoRA adapter; the candle backend does not apply LoRAs yet",
                    model.display_name
                ));
            }
            match (&model.source, &checks) {
                (ModelSource::Hub(_), None) => Ok(()),
                (_, Some((hub, prefer))) => {
                    preflight::check_model(model, hub, *prefer).map_err(|err| err.to_string())
                }
                (_, None) => {
                    let local_only = HubConfig::offline_at(PathBuf::new());
                    preflight::check_model(model, &local_only, WeightVariant::Full)
                        .map_err(|err| err.to_string())
                }
            }
        })
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
        let key = ModelKey::new(model, device, dtype);
        if let Some(pipeline) = self.use_cached(&key) {
            let defaults = native_defaults(&pipeline, model.defaults);
            on_progress(LoadProgress {
                message: format!("{} is already loaded", model.display_name),
                fraction: Some(1.0),
            });
            return Ok(LoadedModel {
                defaults,
                model_id: model.model_id(),
                revision: None,
                load_s: 0.0,
            });
        }
        let folder = self.folder_for(model, on_progress)?;
        let candle_device = select_device(device).map_err(backend_error)?;
        let candle_dtype = select_dtype(&candle_device, dtype).map_err(backend_error)?;
        on_progress(LoadProgress {
            message: format!("loading {} ({})", model.display_name, dtype_label(candle_dtype)),
            fraction: None,
        });
        self.make_room_to_load();
        let pipeline = DiffusionPipeline::load(&folder, &candle_device, candle_dtype)
            .map_err(backend_error)?;
        let defaults = native_defaults(&pipeline, model.defaults);
        on_progress(LoadProgress {
            message: format!("loaded {}", model.display_name),
            fraction: Some(1.0),
        });
        self.keep_loaded(key, pipeline);
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
        if !params.loras.is_empty() {
            return Err(BackendError::Unsupported("LoRA adapters (candle backend)".to_owned()));
        }
        self.generate_within_memory(params, on_step)
    }
}

impl CandleBackend {
    /// One try at `params` with the size and measures of `attempt`.
    fn generate_attempt(
        &mut self,
        params: &GenerateParams,
        attempt: &Attempt,
        on_step: &mut dyn FnMut(StepUpdate<'_>) -> ControlFlow<()>,
    ) -> Result<Generated, BackendError> {
        #[cfg(test)]
        if self.simulated_out_of_memory > 0 {
            self.simulated_out_of_memory -= 1;
            return Err(backend_error(DiffusionError::Tensor(candle_core::Error::Msg(
                "simulated DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".to_owned(),
            ))));
        }
        let Some((_, pipeline)) = &self.current else {
            return Err(BackendError::Failed("candle: generate before load".to_owned()));
        };
        let started = Instant::now();
        let request = GenerationRequest {
            prompt: params.prompt.clone(),
            negative: params.negative.clone(),
            width: attempt.width as usize,
            height: attempt.height as usize,
            steps: params.steps as usize,
            cfg: f64::from(params.cfg),
            sampler: params.sampler,
            schedule: params.schedule_type,
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
        let vae_decode = if attempt.tiled_vae_decode {
            let tile_latent_px = (self.vae_tile_px as usize / pipeline.vae_scale_factor()).max(2);
            VaeDecode::Tiled { tile_latent_px, overlap: tile_latent_px / 4 }
        } else {
            VaeDecode::Full
        };
        let output = pipeline
            .generate_with_decode(&request, vae_decode, &mut |progress| {
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
#[allow(clippy::float_cmp, reason = "a cache hit takes exactly no load time")]
mod tests {
    use super::ladder::activation_shape;
    use super::*;
    use crate::models::oom::ActivationShape;
    use crate::vocab::SamplerKind;

    fn tiny_sdxl() -> ModelRef {
        fixture_model("sdxl_tiny")
    }

    fn fixture_model(name: &str) -> ModelRef {
        let folder =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusion").join(name);
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
            schedule_type: crate::vocab::SigmaSchedule::Automatic,
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

    /// Load A, load B, back to A: with room for both, A comes from the cache (a hit, no load,
    /// `load_s == 0`); with a budget below A + B, B's load evicts A and A loads again.
    #[test]
    fn switching_back_to_a_cached_model_is_a_hit_and_a_small_budget_evicts() {
        let (model_a, model_b) = (fixture_model("sdxl_tiny"), fixture_model("sd15_tiny"));
        let load = |backend: &mut CandleBackend, model: &ModelRef| {
            backend.load(model, DeviceChoice::Cpu, None, &mut |_| {}).expect("load")
        };
        let mut roomy = CandleBackend::default().with_cache_budget(u64::MAX);
        let first_a = load(&mut roomy, &model_a);
        assert!(first_a.load_s > 0.0);
        let size_a = roomy.cache_stats().used_bytes;
        // The tiny SDXL fixture's f32 tensors, from its safetensors headers.
        assert!(size_a > 100_000, "{size_a}");
        load(&mut roomy, &model_b);
        let again_a = load(&mut roomy, &model_a);
        assert_eq!(again_a.load_s, 0.0);
        assert_eq!(again_a.defaults.width, first_a.defaults.width);
        let stats = roomy.cache_stats();
        assert_eq!((stats.hits, stats.misses, stats.evictions, stats.entries), (1, 2, 0, 2));
        let size_b = stats.used_bytes - size_a;
        assert!(size_b > 0);

        let mut tight = CandleBackend::default().with_cache_budget(size_a + size_b - 1);
        load(&mut tight, &model_a);
        load(&mut tight, &model_b);
        let reloaded_a = load(&mut tight, &model_a);
        assert!(reloaded_a.load_s > 0.0, "A was evicted, so it loads again");
        let stats = tight.cache_stats();
        assert_eq!((stats.hits, stats.misses, stats.evictions, stats.entries), (0, 3, 2, 1));

        // The default budget (0) keeps only the newest, and the same model again is a hit.
        let mut newest_only = CandleBackend::default().with_cache_budget(0);
        load(&mut newest_only, &model_a);
        assert_eq!(load(&mut newest_only, &model_a).load_s, 0.0);
        load(&mut newest_only, &model_b);
        let stats = newest_only.cache_stats();
        assert_eq!((stats.hits, stats.evictions, stats.entries), (1, 1, 1));
    }

    /// The estimate's measures come from the loaded pipeline's own configs: the tiny SDXL
    /// fixture's first UNet channels, its first cross-attention level and heads there, its VAE
    /// channels and scale, and the element sizes it was loaded in (f32).
    #[test]
    fn activation_shape_is_read_from_the_pipeline_configs() {
        let mut backend = CandleBackend::default();
        backend.load(&tiny_sdxl(), DeviceChoice::Cpu, None, &mut |_| {}).expect("load");
        let Some((_, pipeline)) = &backend.current else { panic!("a current pipeline") };
        let folder =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusion/sdxl_tiny");
        let read = |file: &str| -> serde_json::Value {
            serde_json::from_str(&fs_err::read_to_string(folder.join(file)).expect("config"))
                .expect("json")
        };
        let (unet, vae) = (read("unet/config.json"), read("vae/config.json"));
        let level = unet["down_block_types"]
            .as_array()
            .expect("list")
            .iter()
            .position(|kind| kind.as_str().is_some_and(|k| k.contains("CrossAttn")))
            .expect("a cross-attention level");
        let heads = &unet["attention_head_dim"];
        let heads = heads.as_u64().or_else(|| heads[level].as_u64()).expect("heads");
        let vae_levels = vae["block_out_channels"].as_array().expect("list").len();
        assert_eq!(
            activation_shape(pipeline),
            ActivationShape {
                vae_scale: 1 << (vae_levels - 1),
                unet_channels: unet["block_out_channels"][0].as_u64().expect("channels"),
                attention_level: u32::try_from(level).expect("small"),
                attention_heads: heads,
                unet_element_bytes: 4,
                vae_channels: vae["block_out_channels"][0].as_u64().expect("channels"),
                vae_element_bytes: 4,
            }
        );
    }

    fn small_params(width: u32, height: u32) -> GenerateParams {
        GenerateParams {
            prompt: "a red cube".to_owned(),
            negative: String::new(),
            width,
            height,
            steps: 2,
            cfg: 5.0,
            sampler: SamplerKind::Default,
            schedule_type: crate::vocab::SigmaSchedule::Automatic,
            seed: 5,
            init_image: None,
            strength: 1.0,
            truncate_prompt: false,
            save_latent: false,
            loras: Vec::new(),
            want_preview: false,
        }
    }

    /// The cache accounts the VAE encoder only once img2img has built it: txt2img leaves the
    /// cached size alone, the first img2img adds exactly the encoder's bytes, a second adds
    /// nothing.
    #[test]
    fn the_cache_counts_the_vae_encoder_once_img2img_builds_it() {
        let mut backend = CandleBackend::default().with_cache_budget(u64::MAX);
        backend.load(&tiny_sdxl(), DeviceChoice::Cpu, None, &mut |_| {}).expect("load");
        let loaded = backend.cache_stats().used_bytes;
        let mut params = small_params(64, 64);
        run(&mut backend, &params).expect("txt2img");
        assert_eq!(backend.cache_stats().used_bytes, loaded);
        let Some((_, pipeline)) = &backend.current else { panic!("a current pipeline") };
        let pipeline = Arc::clone(pipeline);
        assert!(!pipeline.vae().encoder_is_loaded());

        params.init_image = Some(image::RgbImage::from_pixel(64, 64, image::Rgb([200, 40, 40])));
        params.strength = 0.5;
        run(&mut backend, &params).expect("img2img");
        let encoder = pipeline.vae().encoder_byte_size();
        assert!(encoder > 0 && pipeline.vae().encoder_is_loaded());
        assert_eq!(backend.cache_stats().used_bytes, loaded + encoder);
        run(&mut backend, &params).expect("img2img again");
        assert_eq!(backend.cache_stats().used_bytes, loaded + encoder);
    }

    /// Two tiny pipelines cached (SD 1.5 then SDXL, the current one), 32-px VAE tiles.
    fn two_models_cached() -> CandleBackend {
        let mut backend = CandleBackend::default().with_cache_budget(u64::MAX).with_vae_tile_px(32);
        for name in ["sd15_tiny", "sdxl_tiny"] {
            backend.load(&fixture_model(name), DeviceChoice::Cpu, None, &mut |_| {}).expect("load");
        }
        backend
    }

    fn run(
        backend: &mut CandleBackend,
        params: &GenerateParams,
    ) -> Result<Generated, BackendError> {
        backend.generate(params, &mut |_| ControlFlow::Continue(()))
    }

    /// A budget of exactly a rung's estimate picks that rung (each rung needs less than the one
    /// before): the saved image has the rung's size, the note says what was done, freeing the
    /// cache leaves only the current model, and below the last rung the error says so. The
    /// tiled rung decodes the same latents as the 64×64 rung, in tiles: close but not equal.
    #[test]
    fn memory_budgets_force_each_rung_of_the_ladder() {
        use crate::models::oom::{Rung, ladder};
        let params = small_params(128, 128);
        let probe = two_models_cached();
        let rungs = ladder(128, 128);
        let needs: Vec<u64> =
            rungs.iter().map(|rung| probe.estimate_bytes(rung, true).expect("loaded")).collect();
        assert!(needs.windows(2).all(|pair| pair[1] < pair[0]), "{needs:?}");
        let mut images = Vec::new();
        for (rung, need) in rungs.iter().zip(&needs) {
            let mut backend = two_models_cached().with_memory_budget(Some(*need));
            let generated = run(&mut backend, &params).expect("a rung fits");
            assert_eq!(generated.image.dimensions(), (rung.width, rung.height), "{rung:?}");
            let note = rung.describe(128, 128);
            let oom_notes: Vec<&String> =
                generated.notes.iter().filter(|n| n.starts_with("out of memory")).collect();
            if rung.rung == Rung::AsRequested {
                assert!(oom_notes.is_empty(), "{oom_notes:?}");
            } else {
                assert_eq!(oom_notes, [&note], "{rung:?}");
            }
            let expected_entries = if rung.caches_freed { 1 } else { 2 };
            assert_eq!(backend.cache_stats().entries, expected_entries, "{rung:?}");
            images.push(generated.image);
        }
        assert!(images[5].as_raw() != images[4].as_raw(), "the tiled rung must decode in tiles");
        let mean_levels = images[5]
            .as_raw()
            .iter()
            .zip(images[4].as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / images[4].as_raw().len() as f64;
        assert!(mean_levels < 5.0, "tiled vs full decode: mean {mean_levels} levels of 255");

        let mut starved = two_models_cached().with_memory_budget(Some(needs[5] - 1));
        match run(&mut starved, &params) {
            Err(BackendError::OutOfMemory(message)) => {
                assert!(message.contains("64x64") && message.contains("budget"), "{message}");
            }
            other => panic!("expected out of memory, got {:?}", other.map(|g| g.notes)),
        }
    }

    /// Allocation failures step down the ladder: two failures (as requested, then after freeing
    /// the cache) leave the 3/4 size with the aspect ratio kept; failing every rung ends with a
    /// clear out-of-memory error.
    #[test]
    fn allocation_failures_step_down_the_ladder() {
        let params = small_params(256, 128);
        let mut backend = two_models_cached();
        backend.simulated_out_of_memory = 2;
        let generated = run(&mut backend, &params).expect("third rung runs");
        assert_eq!(generated.image.dimensions(), (192, 96));
        assert!(
            generated.notes.contains(
                &"out of memory fallback: freed the model cache, reduced size to 192x96 \
                  (requested 256x128)"
                    .to_owned()
            ),
            "{:?}",
            generated.notes
        );
        assert_eq!(backend.cache_stats().entries, 1, "the other model was freed");
        assert_eq!(backend.simulated_out_of_memory, 0);

        backend.simulated_out_of_memory = 100;
        match run(&mut backend, &params) {
            Err(BackendError::OutOfMemory(message)) => {
                assert!(message.contains("every rung"), "{message}");
            }
            other => panic!("expected out of memory, got {:?}", other.map(|g| g.notes)),
        }
        let rungs_tried = 100 - backend.simulated_out_of_memory;
        assert_eq!(rungs_tried as usize, crate::models::oom::ladder(256, 128).len());
    }
}
