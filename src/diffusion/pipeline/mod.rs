//! The text-to-image and image-to-image pipeline over a diffusers folder (`model_index.json` +
//! component folders), written as one unrolled loop in diffusers' order so it can be read
//! against `StableDiffusionXLPipeline.__call__`:
//!
//! 1. encode the prompts (both CLIP encoders for SDXL; empty negative ⇒ zeros when
//!    `force_zeros_for_empty_prompt`), 2. build the scheduler from `scheduler_config.json`,
//! 3. noise: img2img draws the VAE latent sample first, then the initial noise; ancestral
//!    samplers draw inside `step`, 4. the loop, CFG as one batch-2 UNet call (none when
//!    cfg ≤ 1), 5. decode `latents / scaling_factor` (the VAE in the pipeline's dtype; in f16
//!    checked, with an f32 fallback: `vae_precision.rs`).
//!
//! Beside it: the tiled VAE decode (`tiled_decode.rs`), the per-step latent preview
//! (`preview.rs`), the `.latent` file (`latent_file.rs`) and the VAE's precision policy
//! (`vae_precision.rs`).

mod latent_file;
mod preview;
mod tiled_decode;
mod vae_precision;

pub use vae_precision::{VAE_F32_FALLBACK_NOTE, VaeFallback, all_finite, vae_dtype};

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::clip::ClipTextModel;
use super::error::{DiffusionError, Result, read_json, read_text};
use super::rng::TorchGenerator;
use super::schedulers::{self, Scheduler, SchedulerConfig};
use super::tokenizer::{ClipTokenizer, LongPromptMode};
use super::unet::{UNet2DConditionModel, UNetConditioning};
use super::vae::{AutoencoderKl, is_encoder_tensor};
use super::weights::{component_weights, safetensors_bytes};
use crate::models::cache::ByteSize;
use crate::vocab::{SamplerKind, SigmaSchedule};

/// Which family the folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineFamily {
    /// `StableDiffusionXLPipeline`: two text encoders, pooled + time-id conditioning.
    Sdxl,
    /// `StableDiffusionPipeline` (SD 1.x/2.x): one text encoder, last layer normed.
    StableDiffusion,
}

impl PipelineFamily {
    /// The family of `model_index.json`'s `_class_name`.
    fn of(index: &Value, index_path: &Path) -> Result<Self> {
        match index.get("_class_name").and_then(Value::as_str).unwrap_or_default() {
            "StableDiffusionXLPipeline" | "StableDiffusionXLImg2ImgPipeline" => Ok(Self::Sdxl),
            "StableDiffusionPipeline" | "StableDiffusionImg2ImgPipeline" => {
                Ok(Self::StableDiffusion)
            }
            other => Err(DiffusionError::config(
                "_class_name",
                format!("{other:?} is not a supported pipeline"),
                index_path,
            )),
        }
    }
}

/// The tokenizers and text encoders of a pipeline, in pipeline order.
struct TextEncoders {
    tokenizers: Vec<ClipTokenizer>,
    encoders: Vec<ClipTextModel>,
    /// Bytes of the encoders' weights as loaded.
    weight_bytes: u64,
}

impl TextEncoders {
    /// Loads each (tokenizer, text encoder) pair the family has: one for SD, two for SDXL.
    fn load(
        folder: &Path,
        family: PipelineFamily,
        index: &Value,
        (device, dtype, prefer_fp16): (&Device, DType, bool),
    ) -> Result<Self> {
        let component_names: &[(&str, &str)] = match family {
            PipelineFamily::Sdxl => {
                &[("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")]
            }
            PipelineFamily::StableDiffusion => &[("tokenizer", "text_encoder")],
        };
        let mut loaded = Self { tokenizers: Vec::new(), encoders: Vec::new(), weight_bytes: 0 };
        for (tokenizer, encoder) in component_names {
            if index.get(*encoder).and_then(|entry| entry.get(0)).is_none_or(Value::is_null) {
                return Err(DiffusionError::config(
                    *encoder,
                    "this pipeline has no such text encoder (SDXL refiners are not supported)",
                    &folder.join("model_index.json"),
                ));
            }
            loaded.tokenizers.push(ClipTokenizer::from_folder(&folder.join(tokenizer))?);
            loaded.weight_bytes += safetensors_bytes(
                &component_weights(&folder.join(encoder), "model", prefer_fp16)?,
                dtype,
                &|_| true,
            )?;
            loaded.encoders.push(ClipTextModel::load(
                &folder.join(encoder),
                dtype,
                device,
                prefer_fp16,
            )?);
        }
        Ok(loaded)
    }
}

/// The prompt conditioning for one image.
#[derive(Debug, Clone)]
pub struct PromptEmbeddings {
    /// (1, 77·windows, `cross_attention_dim`).
    pub prompt: Tensor,
    /// Same shape as `prompt`; zeros for an empty negative under `force_zeros_for_empty_prompt`.
    pub negative: Tensor,
    /// SDXL: `text_encoder_2`'s projected EOS token of the prompt's first window.
    pub pooled: Option<Tensor>,
    /// SDXL: the same for the negative prompt.
    pub negative_pooled: Option<Tensor>,
    /// Human notes on chunking/truncation ("prompt: 90 tokens, 15 encoded in a second window").
    pub notes: Vec<String>,
}

/// One image to make.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// Prompt.
    pub prompt: String,
    /// Negative prompt (empty = none).
    pub negative: String,
    /// Width in pixels (a multiple of the VAE scale factor).
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Steps of the schedule (img2img runs the last `strength` part of it).
    pub steps: usize,
    /// CFG scale; ≤ 1 skips the unconditional pass.
    pub cfg: f64,
    /// Sampler; `Default` = the class in `scheduler_config.json`.
    pub sampler: SamplerKind,
    /// Sigma schedule; `Automatic` = the sampler's own.
    pub schedule: SigmaSchedule,
    /// Seed of `torch.Generator("cpu").manual_seed(seed)`.
    pub seed: u64,
    /// img2img source; resized to `width`×`height` when its size differs.
    pub init_image: Option<image::RgbImage>,
    /// img2img strength in (0, 1].
    pub strength: f64,
    /// Long prompts: chunk (A1111/ComfyUI) or truncate (diffusers).
    pub long_prompt: LongPromptMode,
    /// Compute a latent preview after every step.
    pub want_preview: bool,
}

/// What the step callback receives.
#[derive(Debug)]
pub struct StepProgress<'a> {
    /// Steps done, from 1.
    pub step: usize,
    /// Steps this run makes.
    pub steps: usize,
    /// Seconds the step took.
    pub step_s: f64,
    /// A cheap RGB picture of the current latents (when asked for).
    pub preview: Option<&'a image::RgbImage>,
}

/// A finished image and what it took.
#[derive(Debug, Clone)]
pub struct GenerationOutput {
    /// The image.
    pub image: image::RgbImage,
    /// The image as floats in [0, 1], (1, 3, H, W), before 8-bit rounding.
    pub image_tensor: Tensor,
    /// The final latents (before division by `scaling_factor`), f32.
    pub latents: Tensor,
    /// The sampler that ran (`Default` resolved).
    pub sampler: SamplerKind,
    /// Chunking/truncation notes.
    pub notes: Vec<String>,
    /// Seconds encoding the prompts.
    pub encode_s: f64,
    /// Seconds per step.
    pub steps_s: Vec<f64>,
    /// Seconds decoding.
    pub decode_s: f64,
}

/// The UNet's conditioning for every step, batched [negative, positive] when guiding.
struct Conditioning {
    /// Text hidden states.
    context: Tensor,
    /// SDXL: pooled text embeddings.
    text_embeds: Option<Tensor>,
    /// SDXL: size and crop ids.
    time_ids: Option<Tensor>,
}

/// How the final latents are decoded to pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VaeDecode {
    /// The whole image at once.
    #[default]
    Full,
    /// In overlapping tiles ([`DiffusionPipeline::decode_tiled`]), sizes in latent pixels.
    Tiled {
        /// Tile side.
        tile_latent_px: usize,
        /// Overlap between neighbouring tiles.
        overlap: usize,
    },
}

/// A loaded diffusers pipeline.
#[derive(Debug)]
pub struct DiffusionPipeline {
    family: PipelineFamily,
    tokenizers: Vec<ClipTokenizer>,
    text_encoders: Vec<ClipTextModel>,
    unet: UNet2DConditionModel,
    vae: AutoencoderKl,
    /// Whether the VAE's results are checked for overflow (f16).
    vae_checked: bool,
    /// The f32 VAE, once an f16 result overflowed.
    vae_fallback: VaeFallback,
    scheduler_config: SchedulerConfig,
    force_zeros_for_empty_prompt: bool,
    device: Device,
    dtype: DType,
    folder: PathBuf,
    /// Bytes of the weights loaded eagerly (every tensor in the dtype it was loaded in; the
    /// VAE encoder, built on first use, is counted by [`AutoencoderKl::encoder_byte_size`]).
    weight_bytes: u64,
}

impl ByteSize for DiffusionPipeline {
    fn byte_size(&self) -> u64 {
        self.weight_bytes + self.vae.encoder_byte_size() + self.vae_fallback.byte_size()
    }
}

impl DiffusionPipeline {
    /// Loads a diffusers folder on `device`: UNet, text encoders and VAE in `dtype` (an f16
    /// VAE is checked and falls back to f32 on overflow, see `vae_precision.rs`). On a GPU the
    /// `*.fp16` weight files are preferred when present.
    ///
    /// # Errors
    /// Missing or malformed files; unsupported pipeline classes or options.
    pub fn load(folder: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let index_path = folder.join("model_index.json");
        let index: Value = read_json("model_index.json", &index_path)?;
        let family = PipelineFamily::of(&index, &index_path)?;
        let prefer_fp16 = !device.is_cpu() && dtype != DType::F32;
        let TextEncoders { tokenizers, encoders: text_encoders, weight_bytes } =
            TextEncoders::load(folder, family, &index, (device, dtype, prefer_fp16))?;
        let mut weight_bytes = weight_bytes;
        let unet = UNet2DConditionModel::load(&folder.join("unet"), dtype, device, prefer_fp16)?;
        weight_bytes += safetensors_bytes(
            &component_weights(&folder.join("unet"), "diffusion_pytorch_model", prefer_fp16)?,
            dtype,
            &|_| true,
        )?;
        let (vae_dtype, vae_checked) = vae_dtype(dtype);
        let vae = AutoencoderKl::load(
            &folder.join("vae"),
            vae_dtype,
            device,
            prefer_fp16 && vae_dtype != DType::F32,
        )?;
        weight_bytes += safetensors_bytes(
            &component_weights(
                &folder.join("vae"),
                "diffusion_pytorch_model",
                prefer_fp16 && vae_dtype != DType::F32,
            )?,
            vae_dtype,
            &|name| !is_encoder_tensor(name),
        )?;
        let scheduler_path = folder.join("scheduler/scheduler_config.json");
        let scheduler_config =
            SchedulerConfig::from_json(&read_text("scheduler config", &scheduler_path)?).map_err(
                |err| DiffusionError::config("scheduler", err.to_string(), &scheduler_path),
            )?;
        let force_zeros_for_empty_prompt = index
            .get("force_zeros_for_empty_prompt")
            .and_then(Value::as_bool)
            .unwrap_or(family == PipelineFamily::Sdxl);
        if family == PipelineFamily::Sdxl && !unet.needs_text_time() {
            return Err(DiffusionError::config(
                "addition_embed_type",
                "an SDXL UNet needs text_time",
                &folder.join("unet/config.json"),
            ));
        }
        Ok(Self {
            family,
            tokenizers,
            text_encoders,
            unet,
            vae,
            vae_checked,
            vae_fallback: VaeFallback::default(),
            scheduler_config,
            force_zeros_for_empty_prompt,
            device: device.clone(),
            dtype,
            folder: folder.to_path_buf(),
            weight_bytes,
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// SDXL or SD.
    pub fn family(&self) -> PipelineFamily {
        self.family
    }

    /// The folder the pipeline came from.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// The UNet.
    pub fn unet(&self) -> &UNet2DConditionModel {
        &self.unet
    }

    /// The VAE as loaded (see [`Self::active_vae`] for the one in use).
    pub fn vae(&self) -> &AutoencoderKl {
        &self.vae
    }

    /// The text encoders, in pipeline order.
    pub fn text_encoders(&self) -> &[ClipTextModel] {
        &self.text_encoders
    }

    /// The tokenizers, in pipeline order.
    pub fn tokenizers(&self) -> &[ClipTokenizer] {
        &self.tokenizers
    }

    /// The model's `scheduler_config.json`.
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler_config
    }

    /// The dtype of UNet and text encoders.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Pixels per latent.
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config().scale_factor()
    }

    /// Encodes prompt and negative prompt as the pipeline does.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn encode_prompt(
        &self,
        prompt: &str,
        negative: &str,
        long_prompt: LongPromptMode,
    ) -> Result<PromptEmbeddings> {
        let mut notes = Vec::new();
        let positive = self.tokenize(prompt, long_prompt, "prompt", &mut notes);
        let zero_negative = negative.is_empty() && self.force_zeros_for_empty_prompt;
        let mut negative_windows =
            self.tokenize(negative, long_prompt, "negative prompt", &mut notes);
        let windows = positive[0].len().max(negative_windows[0].len());
        let mut positive = positive;
        for (index, tokenizer) in self.tokenizers.iter().enumerate() {
            positive[index].resize(windows, tokenizer.empty_window());
            negative_windows[index].resize(windows, tokenizer.empty_window());
        }
        let (prompt_embeds, pooled) = self.encode_windows(&positive)?;
        let (negative, negative_pooled) = if zero_negative {
            (prompt_embeds.zeros_like()?, pooled.as_ref().map(Tensor::zeros_like).transpose()?)
        } else {
            self.encode_windows(&negative_windows)?
        };
        Ok(PromptEmbeddings { prompt: prompt_embeds, negative, pooled, negative_pooled, notes })
    }

    fn tokenize(
        &self,
        text: &str,
        mode: LongPromptMode,
        label: &str,
        notes: &mut Vec<String>,
    ) -> Vec<Vec<Vec<u32>>> {
        let mut per_encoder = Vec::new();
        for (index, tokenizer) in self.tokenizers.iter().enumerate() {
            let tokens = tokenizer.tokenize(text, mode);
            if index == 0 {
                if tokens.chunked_tokens > 0 {
                    notes.push(format!(
                        "{label}: {} tokens, encoded in {} windows of 75 ({} beyond the first)",
                        tokens.token_count,
                        tokens.windows.len(),
                        tokens.chunked_tokens
                    ));
                }
                if tokens.dropped_tokens > 0 {
                    notes.push(format!(
                        "{label}: {} tokens, {} dropped (truncated at 75)",
                        tokens.token_count, tokens.dropped_tokens
                    ));
                }
            }
            per_encoder.push(tokens.windows);
        }
        per_encoder
    }

    /// Encodes the windows of every encoder: (1, 77·windows, features), pooled (1, P).
    fn encode_windows(&self, windows: &[Vec<Vec<u32>>]) -> Result<(Tensor, Option<Tensor>)> {
        let mut features = Vec::new();
        let mut pooled = None;
        for (encoder, encoder_windows) in self.text_encoders.iter().zip(windows) {
            let output = encoder.forward(encoder_windows)?;
            let hidden = match self.family {
                PipelineFamily::Sdxl => output.penultimate,
                PipelineFamily::StableDiffusion => output.last_normed,
            };
            // (windows, 77, C) → (1, windows·77, C): the chunks follow each other in sequence.
            let (count, length, width) = hidden.dims3()?;
            features.push(hidden.reshape((1, count * length, width))?);
            if let Some(text_embeds) = output.text_embeds {
                pooled = Some(text_embeds.narrow(0, 0, 1)?);
            }
        }
        let embeds = Tensor::cat(&features, 2)?;
        let pooled = if self.family == PipelineFamily::Sdxl { pooled } else { None };
        Ok((embeds, pooled))
    }

    /// Runs one generation.
    ///
    /// # Errors
    /// Invalid sizes or strength, cancellation ([`DiffusionError::Cancelled`]), tensor errors.
    pub fn generate(
        &self,
        request: &GenerationRequest,
        on_step: &mut dyn FnMut(StepProgress<'_>) -> ControlFlow<()>,
    ) -> Result<GenerationOutput> {
        self.generate_with_decode(request, VaeDecode::Full, on_step)
    }

    /// [`Self::generate`] with a choice of VAE decode (tiled: the out-of-memory ladder's last
    /// rung).
    ///
    /// # Errors
    /// As [`Self::generate`]; a tiled decode also refuses an overlap not below the tile.
    pub fn generate_with_decode(
        &self,
        request: &GenerationRequest,
        vae_decode: VaeDecode,
        on_step: &mut dyn FnMut(StepProgress<'_>) -> ControlFlow<()>,
    ) -> Result<GenerationOutput> {
        self.check_request(request)?;
        let started = Instant::now();
        let use_cfg = request.cfg > 1.0;
        let embeddings =
            self.encode_prompt(&request.prompt, &request.negative, request.long_prompt)?;
        let encode_s = started.elapsed().as_secs_f64();

        let sampler = schedulers::resolve_default(request.sampler, &self.scheduler_config);
        let mut scheduler: Box<dyn Scheduler> = schedulers::build_with_schedule(
            sampler,
            request.schedule,
            &self.scheduler_config,
            request.steps,
        )?;
        let mut generator = TorchGenerator::new(request.seed);
        // Conditioning, batch [negative, positive] when guiding.
        let conditioning = self.conditioning(&embeddings, request, use_cfg)?;
        let (latents, start_index) =
            self.initial_latents(request, scheduler.as_mut(), &mut generator)?;
        let (latents, steps_s) = self.denoise(
            request,
            &conditioning,
            scheduler.as_mut(),
            &mut generator,
            (latents, start_index),
            on_step,
        )?;

        let decode_started = Instant::now();
        let image_tensor = match vae_decode {
            VaeDecode::Full => self.decode(&latents)?,
            VaeDecode::Tiled { tile_latent_px, overlap } => {
                self.decode_tiled(&latents, tile_latent_px, overlap)?
            }
        };
        let image = tensor_to_image(&image_tensor)?;
        let mut notes = embeddings.notes;
        notes.extend(self.vae_note().map(str::to_owned));
        Ok(GenerationOutput {
            image,
            image_tensor,
            latents,
            sampler,
            notes,
            encode_s,
            steps_s,
            decode_s: decode_started.elapsed().as_secs_f64(),
        })
    }

    /// Refuses sizes that are not positive multiples of the VAE scale, and zero steps.
    fn check_request(&self, request: &GenerationRequest) -> Result<()> {
        let scale = self.vae_scale_factor();
        if request.width == 0
            || request.height == 0
            || !request.width.is_multiple_of(scale)
            || !request.height.is_multiple_of(scale)
        {
            return Err(DiffusionError::InvalidRequest(format!(
                "{}x{} is not a positive multiple of {scale}",
                request.width, request.height
            )));
        }
        if request.steps == 0 {
            return Err(DiffusionError::InvalidRequest("steps must be at least 1".to_owned()));
        }
        Ok(())
    }

    /// The latents the loop starts from, and the schedule index it starts at. txt2img: noise
    /// × `init_noise_sigma` from index 0; img2img: the VAE latent sample is drawn first, then
    /// the noise, added at the index `strength` gives.
    fn initial_latents(
        &self,
        request: &GenerationRequest,
        scheduler: &mut dyn Scheduler,
        generator: &mut TorchGenerator,
    ) -> Result<(Tensor, usize)> {
        let scale = self.vae_scale_factor();
        let latent_shape =
            (1, self.unet.config().in_channels, request.height / scale, request.width / scale);
        let Some(init) = &request.init_image else {
            let noise = self.randn(generator, latent_shape)?;
            return Ok(((noise * scheduler.init_noise_sigma())?, 0));
        };
        if !(request.strength > 0.0 && request.strength <= 1.0) {
            return Err(DiffusionError::InvalidRequest(format!(
                "strength {} is not in (0, 1]",
                request.strength
            )));
        }
        let pixels = self.image_to_tensor(init, request.width, request.height)?;
        let distribution = self.vae_encode(&pixels)?;
        let sample_noise = self.randn(generator, distribution.mean.dims4()?)?;
        let init_latents = (distribution
            .sample(&sample_noise.to_dtype(distribution.mean.dtype())?)?
            .to_dtype(DType::F32)?
            * self.vae.config().scaling_factor)?;
        let noise = self.randn(generator, latent_shape)?;
        let start =
            schedulers::img2img_start_index(request.steps, request.strength, scheduler.order());
        if start >= scheduler.timesteps().len() {
            return Err(DiffusionError::InvalidRequest(format!(
                "strength {} with {} steps leaves no step to run",
                request.strength, request.steps
            )));
        }
        Ok((scheduler.add_noise(&init_latents, &noise, start)?, start))
    }

    /// The denoising loop from `start_index`: one UNet call per step (batch 2 with CFG), the
    /// scheduler's step, a preview when asked, the callback. Returns the final latents and the
    /// seconds of each step.
    fn denoise(
        &self,
        request: &GenerationRequest,
        conditioning: &Conditioning,
        scheduler: &mut dyn Scheduler,
        generator: &mut TorchGenerator,
        (mut latents, start_index): (Tensor, usize),
        on_step: &mut dyn FnMut(StepProgress<'_>) -> ControlFlow<()>,
    ) -> Result<(Tensor, Vec<f64>)> {
        let use_cfg = request.cfg > 1.0;
        let timesteps: Vec<f64> = scheduler.timesteps()[start_index..].to_vec();
        let total = timesteps.len();
        let mut steps_s = Vec::with_capacity(total);
        for (offset, &timestep) in timesteps.iter().enumerate() {
            let step_started = Instant::now();
            let index = start_index + offset;
            let model_input =
                if use_cfg { Tensor::cat(&[&latents, &latents], 0)? } else { latents.clone() };
            let model_input = scheduler.scale_model_input(&model_input, index)?;
            let unet_conditioning = UNetConditioning {
                encoder_hidden_states: &conditioning.context,
                text_embeds: conditioning.text_embeds.as_ref(),
                time_ids: conditioning.time_ids.as_ref(),
            };
            let prediction = self
                .unet
                .forward(&model_input, timestep, unet_conditioning)?
                .to_dtype(DType::F32)?;
            let noise_pred = if use_cfg {
                let unconditional = prediction.narrow(0, 0, 1)?;
                let text = prediction.narrow(0, 1, 1)?;
                (&unconditional + ((text - &unconditional)? * request.cfg)?)?
            } else {
                prediction
            };
            latents = scheduler.step(&noise_pred, index, &latents, generator)?;
            let seconds = step_started.elapsed().as_secs_f64();
            steps_s.push(seconds);
            let preview = if request.want_preview { Some(self.preview(&latents)?) } else { None };
            let progress = StepProgress {
                step: offset + 1,
                steps: total,
                step_s: seconds,
                preview: preview.as_ref(),
            };
            if on_step(progress).is_break() {
                return Err(DiffusionError::Cancelled);
            }
        }
        Ok((latents, steps_s))
    }

    /// `torch.randn(shape, generator)` on the CPU, moved to the device.
    fn randn(
        &self,
        generator: &mut TorchGenerator,
        shape: (usize, usize, usize, usize),
    ) -> Result<Tensor> {
        let count = shape.0 * shape.1 * shape.2 * shape.3;
        Ok(Tensor::from_vec(generator.randn(count), shape, &Device::Cpu)?
            .to_device(&self.device)?)
    }

    fn conditioning(
        &self,
        embeddings: &PromptEmbeddings,
        request: &GenerationRequest,
        use_cfg: bool,
    ) -> Result<Conditioning> {
        let batch = |negative: &Tensor, positive: &Tensor| -> Result<Tensor> {
            if use_cfg { Ok(Tensor::cat(&[negative, positive], 0)?) } else { Ok(positive.clone()) }
        };
        let context = batch(&embeddings.negative, &embeddings.prompt)?;
        if self.family != PipelineFamily::Sdxl {
            return Ok(Conditioning { context, text_embeds: None, time_ids: None });
        }
        let (Some(pooled), Some(negative_pooled)) =
            (&embeddings.pooled, &embeddings.negative_pooled)
        else {
            return Err(DiffusionError::Unsupported(
                "text_encoder_2 has no text_projection".to_owned(),
            ));
        };
        let text_embeds = batch(negative_pooled, pooled)?;
        let (height, width) = (request.height as f32, request.width as f32);
        let ids = Tensor::new(&[[height, width, 0.0, 0.0, height, width]], &self.device)?;
        let time_ids = batch(&ids, &ids)?;
        Ok(Conditioning { context, text_embeds: Some(text_embeds), time_ids: Some(time_ids) })
    }

    /// An RGB image as the VAE's input: resized if needed, `x/255·2 − 1`, (1, 3, H, W).
    fn image_to_tensor(
        &self,
        image: &image::RgbImage,
        width: usize,
        height: usize,
    ) -> Result<Tensor> {
        let (width_px, height_px) =
            (u32::try_from(width).unwrap_or(u32::MAX), u32::try_from(height).unwrap_or(u32::MAX));
        let resized;
        let image = if image.width() == width_px && image.height() == height_px {
            image
        } else {
            resized = image::imageops::resize(
                image,
                width_px,
                height_px,
                image::imageops::FilterType::Lanczos3,
            );
            &resized
        };
        let values: Vec<f32> =
            image.as_raw().iter().map(|&byte| f32::from(byte) / 255.0 * 2.0 - 1.0).collect();
        let tensor = Tensor::from_vec(values, (height, width, 3), &Device::Cpu)?
            .permute((2, 0, 1))?
            .unsqueeze(0)?;
        Ok(tensor.to_device(&self.device)?)
    }

    /// `vae.decode(latents / scaling_factor)`, then `(x/2 + 0.5).clamp(0, 1)`, f32 on the CPU.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let scaled = (latents / self.vae.config().scaling_factor)?;
        let decoded = self.vae_decode(&scaled)?;
        Ok(((decoded / 2.0)? + 0.5)?.clamp(0f32, 1f32)?.to_device(&Device::Cpu)?)
    }
}

/// (1, 3, H, W) floats in [0, 1] → RGB8 with `(x·255).round()`, as diffusers' `numpy_to_pil`.
///
/// # Errors
/// Tensor errors.
pub fn tensor_to_image(tensor: &Tensor) -> Result<image::RgbImage> {
    let (_, _, height, width) = tensor.dims4()?;
    let hwc = tensor.squeeze(0)?.permute((1, 2, 0))?.flatten_all()?.to_dtype(DType::F32)?;
    let values: Vec<f32> = hwc.to_vec1()?;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "pixels are in [0, 1], so x·255 fits a byte"
    )]
    let bytes: Vec<u8> = values.iter().map(|value| (value * 255.0).round() as u8).collect();
    let (width_px, height_px) =
        (u32::try_from(width).unwrap_or(0), u32::try_from(height).unwrap_or(0));
    image::RgbImage::from_raw(width_px, height_px, bytes)
        .ok_or_else(|| DiffusionError::Unsupported("image buffer size".to_owned()))
}
