//! The text-to-image and image-to-image pipeline over a diffusers folder (`model_index.json` +
//! component folders), written as one unrolled loop in diffusers' order so it can be read
//! against `StableDiffusionXLPipeline.__call__`:
//!
//! 1. encode the prompts (both CLIP encoders for SDXL; empty negative ⇒ zeros when
//!    `force_zeros_for_empty_prompt`), 2. build the scheduler from `scheduler_config.json`,
//! 3. noise: img2img draws the VAE latent sample first, then the initial noise; ancestral
//!    samplers draw inside `step`, 4. the loop, CFG as one batch-2 UNet call (none when
//!    cfg ≤ 1), 5. decode `latents / scaling_factor` (the VAE in f32 when `force_upcast`).

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
use crate::request::sampler::{SamplerKind, SigmaSchedule};

/// Which family the folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineFamily {
    /// `StableDiffusionXLPipeline`: two text encoders, pooled + time-id conditioning.
    Sdxl,
    /// `StableDiffusionPipeline` (SD 1.x/2.x): one text encoder, last layer normed.
    StableDiffusion,
}

/// The prompt conditioning for one image.
#[derive(Debug, Clone)]
pub struct PromptEmbeddings {
    /// (1, 77·windows, cross_attention_dim).
    pub prompt: Tensor,
    /// Same shape as `prompt`; zeros for an empty negative under `force_zeros_for_empty_prompt`.
    pub negative: Tensor,
    /// SDXL: text_encoder_2's projected EOS token of the prompt's first window.
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

impl GenerationOutput {
    /// The tensor handed to the VAE decoder (`latents / scaling_factor`) as safetensors bytes
    /// with the key `latent_tensor`, as ComfyUI saves latents.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn latent_safetensors(&self, scaling_factor: f64) -> Result<Vec<u8>> {
        let vae_input =
            (&self.latents / scaling_factor)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        let shape = vae_input.dims().to_vec();
        let values: Vec<f32> = vae_input.flatten_all()?.to_vec1()?;
        let bytes: Vec<u8> = values.iter().flat_map(|value| value.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes)
            .map_err(|err| DiffusionError::Unsupported(format!("latent safetensors: {err}")))?;
        safetensors::tensor::serialize([("latent_tensor", view)], None)
            .map_err(|err| DiffusionError::Unsupported(format!("latent safetensors: {err}")))
    }
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
        self.weight_bytes + self.vae.encoder_byte_size()
    }
}

impl DiffusionPipeline {
    /// Loads a diffusers folder on `device`: UNet and text encoders in `dtype`, the VAE in f32
    /// when `dtype` is half and the VAE config says `force_upcast`. On a GPU the `*.fp16`
    /// weight files are preferred when present.
    ///
    /// # Errors
    /// Missing or malformed files; unsupported pipeline classes or options.
    pub fn load(folder: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let index_path = folder.join("model_index.json");
        let index: Value = read_json("model_index.json", &index_path)?;
        let class = index.get("_class_name").and_then(Value::as_str).unwrap_or_default();
        let family = match class {
            "StableDiffusionXLPipeline" | "StableDiffusionXLImg2ImgPipeline" => {
                PipelineFamily::Sdxl
            }
            "StableDiffusionPipeline" | "StableDiffusionImg2ImgPipeline" => {
                PipelineFamily::StableDiffusion
            }
            other => {
                return Err(DiffusionError::config(
                    "_class_name",
                    format!("{other:?} is not a supported pipeline"),
                    &index_path,
                ));
            }
        };
        let prefer_fp16 = !device.is_cpu() && dtype != DType::F32;
        let component_names: &[(&str, &str)] = match family {
            PipelineFamily::Sdxl => {
                &[("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")]
            }
            PipelineFamily::StableDiffusion => &[("tokenizer", "text_encoder")],
        };
        let mut tokenizers = Vec::new();
        let mut text_encoders = Vec::new();
        let mut weight_bytes = 0u64;
        for (tokenizer, encoder) in component_names {
            if index.get(*encoder).and_then(|entry| entry.get(0)).is_none_or(Value::is_null) {
                return Err(DiffusionError::config(
                    *encoder,
                    "this pipeline has no such text encoder (SDXL refiners are not supported)",
                    &index_path,
                ));
            }
            tokenizers.push(ClipTokenizer::from_folder(&folder.join(tokenizer))?);
            weight_bytes += safetensors_bytes(
                &component_weights(&folder.join(encoder), "model", prefer_fp16)?,
                dtype,
                &|_| true,
            )?;
            text_encoders.push(ClipTextModel::load(
                &folder.join(encoder),
                dtype,
                device,
                prefer_fp16,
            )?);
        }
        let unet = UNet2DConditionModel::load(&folder.join("unet"), dtype, device, prefer_fp16)?;
        weight_bytes += safetensors_bytes(
            &component_weights(&folder.join("unet"), "diffusion_pytorch_model", prefer_fp16)?,
            dtype,
            &|_| true,
        )?;
        let vae_config: super::vae::VaeConfig =
            read_json("VAE config", &folder.join("vae/config.json"))?;
        let vae_dtype = if vae_config.force_upcast { DType::F32 } else { dtype };
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

    /// The VAE.
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
    #[allow(clippy::too_many_lines)]
    pub fn generate_with_decode(
        &self,
        request: &GenerationRequest,
        vae_decode: VaeDecode,
        on_step: &mut dyn FnMut(StepProgress<'_>) -> ControlFlow<()>,
    ) -> Result<GenerationOutput> {
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
        let latent_shape =
            (1, self.unet.config().in_channels, request.height / scale, request.width / scale);

        // Conditioning, batch [negative, positive] when guiding.
        let (context, text_embeds, time_ids) = self.conditioning(&embeddings, request, use_cfg)?;

        // Initial latents. img2img: the VAE latent sample is drawn first, then the noise.
        let (mut latents, start_index) = match &request.init_image {
            None => {
                let noise = self.randn(&mut generator, latent_shape)?;
                ((noise * scheduler.init_noise_sigma())?, 0)
            }
            Some(init) => {
                if !(request.strength > 0.0 && request.strength <= 1.0) {
                    return Err(DiffusionError::InvalidRequest(format!(
                        "strength {} is not in (0, 1]",
                        request.strength
                    )));
                }
                let pixels = self.image_to_tensor(init, request.width, request.height)?;
                let distribution = self.vae.encode(&pixels)?;
                let sample_noise = self.randn(&mut generator, distribution.mean.dims4()?)?;
                let init_latents = (distribution
                    .sample(&sample_noise.to_dtype(self.vae.dtype())?)?
                    .to_dtype(DType::F32)?
                    * self.vae.config().scaling_factor)?;
                let noise = self.randn(&mut generator, latent_shape)?;
                let start = schedulers::img2img_start_index(
                    request.steps,
                    request.strength,
                    scheduler.order(),
                );
                if start >= scheduler.timesteps().len() {
                    return Err(DiffusionError::InvalidRequest(format!(
                        "strength {} with {} steps leaves no step to run",
                        request.strength, request.steps
                    )));
                }
                (scheduler.add_noise(&init_latents, &noise, start)?, start)
            }
        };

        let timesteps: Vec<f64> = scheduler.timesteps()[start_index..].to_vec();
        let total = timesteps.len();
        let mut steps_s = Vec::with_capacity(total);
        for (offset, &timestep) in timesteps.iter().enumerate() {
            let step_started = Instant::now();
            let index = start_index + offset;
            let model_input =
                if use_cfg { Tensor::cat(&[&latents, &latents], 0)? } else { latents.clone() };
            let model_input = scheduler.scale_model_input(&model_input, index)?;
            let conditioning = UNetConditioning {
                encoder_hidden_states: &context,
                text_embeds: text_embeds.as_ref(),
                time_ids: time_ids.as_ref(),
            };
            let prediction =
                self.unet.forward(&model_input, timestep, conditioning)?.to_dtype(DType::F32)?;
            let noise_pred = if use_cfg {
                let unconditional = prediction.narrow(0, 0, 1)?;
                let text = prediction.narrow(0, 1, 1)?;
                (&unconditional + ((text - &unconditional)? * request.cfg)?)?
            } else {
                prediction
            };
            latents = scheduler.step(&noise_pred, index, &latents, &mut generator)?;
            let step_s = step_started.elapsed().as_secs_f64();
            steps_s.push(step_s);
            let preview = if request.want_preview { Some(self.preview(&latents)?) } else { None };
            let progress =
                StepProgress { step: offset + 1, steps: total, step_s, preview: preview.as_ref() };
            if on_step(progress).is_break() {
                return Err(DiffusionError::Cancelled);
            }
        }

        let decode_started = Instant::now();
        let image_tensor = match vae_decode {
            VaeDecode::Full => self.decode(&latents)?,
            VaeDecode::Tiled { tile_latent_px, overlap } => {
                self.decode_tiled(&latents, tile_latent_px, overlap)?
            }
        };
        let image = tensor_to_image(&image_tensor)?;
        Ok(GenerationOutput {
            image,
            image_tensor,
            latents,
            sampler,
            notes: embeddings.notes,
            encode_s,
            steps_s,
            decode_s: decode_started.elapsed().as_secs_f64(),
        })
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
    ) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let batch = |negative: &Tensor, positive: &Tensor| -> Result<Tensor> {
            if use_cfg { Ok(Tensor::cat(&[negative, positive], 0)?) } else { Ok(positive.clone()) }
        };
        let context = batch(&embeddings.negative, &embeddings.prompt)?;
        if self.family != PipelineFamily::Sdxl {
            return Ok((context, None, None));
        }
        let (Some(pooled), Some(negative_pooled)) =
            (&embeddings.pooled, &embeddings.negative_pooled)
        else {
            return Err(DiffusionError::Unsupported(
                "text_encoder_2 has no text_projection".to_owned(),
            ));
        };
        let text_embeds = batch(negative_pooled, pooled)?;
        #[allow(clippy::cast_precision_loss)]
        let (height, width) = (request.height as f32, request.width as f32);
        let ids = Tensor::new(&[[height, width, 0.0, 0.0, height, width]], &self.device)?;
        let time_ids = batch(&ids, &ids)?;
        Ok((context, Some(text_embeds), Some(time_ids)))
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
        let decoded = self.vae.decode(&scaled)?.to_dtype(DType::F32)?;
        Ok(((decoded / 2.0)? + 0.5)?.clamp(0f32, 1f32)?.to_device(&Device::Cpu)?)
    }

    /// [`Self::decode`] in overlapping tiles, to bound the VAE's peak memory by a tile.
    ///
    /// Latents (B, C, h, w) are cut into `tile_latent_px`² tiles that overlap their neighbours
    /// by `overlap` latent pixels (the last tile of a row or column is moved back to end at the
    /// edge, overlapping more); each tile is decoded alone and the overlaps are cross-faded with
    /// linear weights (in the spirit of diffusers' `tiled_decode`). The result is close to, not
    /// equal to, the full decode: the VAE's GroupNorms take their statistics over each tile and
    /// its mid-block attention sees only the tile. Latents that fit in one tile decode whole.
    ///
    /// # Errors
    /// `overlap >= tile_latent_px` or a zero tile ([`DiffusionError::InvalidRequest`]); tensor
    /// errors.
    pub fn decode_tiled(
        &self,
        latents: &Tensor,
        tile_latent_px: usize,
        overlap: usize,
    ) -> Result<Tensor> {
        if tile_latent_px == 0 || overlap >= tile_latent_px {
            return Err(DiffusionError::InvalidRequest(format!(
                "tiled VAE decode: overlap {overlap} must be smaller than the tile \
                 {tile_latent_px} (latent pixels)"
            )));
        }
        let (batch, _, latent_h, latent_w) = latents.dims4()?;
        if latent_h <= tile_latent_px && latent_w <= tile_latent_px {
            return self.decode(latents);
        }
        let scale = self.vae_scale_factor();
        let (height, width) = (latent_h * scale, latent_w * scale);
        let rows = tile_spans(latent_h, tile_latent_px, overlap);
        let columns = tile_spans(latent_w, tile_latent_px, overlap);
        let channels = self.vae.config().out_channels;
        let plane = height * width;
        let mut sum = vec![0f32; batch * channels * plane];
        let mut weight_sum = vec![0f32; plane];
        let scaled = (latents / self.vae.config().scaling_factor)?;
        for (row_index, &(top, tile_h)) in rows.iter().enumerate() {
            let weights_y = blend_weights(&rows, row_index, scale);
            for (column_index, &(left, tile_w)) in columns.iter().enumerate() {
                let weights_x = blend_weights(&columns, column_index, scale);
                let tile = scaled.narrow(2, top, tile_h)?.narrow(3, left, tile_w)?;
                let decoded = self
                    .vae
                    .decode(&tile)?
                    .to_dtype(DType::F32)?
                    .to_device(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let (pixels_h, pixels_w) = (tile_h * scale, tile_w * scale);
                let (origin_y, origin_x) = (top * scale, left * scale);
                for (y, weight_y) in weights_y.iter().enumerate() {
                    for (x, weight_x) in weights_x.iter().enumerate() {
                        let weight = weight_y * weight_x;
                        let target = (origin_y + y) * width + origin_x + x;
                        weight_sum[target] += weight;
                        for image in 0..batch * channels {
                            sum[image * plane + target] +=
                                weight * decoded[(image * pixels_h + y) * pixels_w + x];
                        }
                    }
                }
            }
        }
        for (index, value) in sum.iter_mut().enumerate() {
            *value /= weight_sum[index % plane].max(f32::MIN_POSITIVE);
        }
        let decoded = Tensor::from_vec(sum, (batch, channels, height, width), &Device::Cpu)?;
        Ok(((decoded / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }

    /// A cheap RGB preview of latents (1, 4, h, w): a fixed linear map per latent pixel.
    fn preview(&self, latents: &Tensor) -> Result<image::RgbImage> {
        let (factors, bias): (&[[f32; 3]; 4], [f32; 3]) = match self.family {
            PipelineFamily::Sdxl => (&SDXL_LATENT_RGB, [0.1084, -0.0175, -0.0011]),
            PipelineFamily::StableDiffusion => (&SD_LATENT_RGB, [0.0, 0.0, 0.0]),
        };
        let latents = latents.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        let (_, channels, height, width) = latents.dims4()?;
        let values: Vec<f32> = latents.flatten_all()?.to_vec1()?;
        let plane = height * width;
        let mut rgb = Vec::with_capacity(plane * 3);
        for pixel in 0..plane {
            for (color, offset) in bias.iter().enumerate() {
                let mut value = *offset;
                for (channel, row) in factors.iter().enumerate().take(channels) {
                    value += values[channel * plane + pixel] * row[color];
                }
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                rgb.push((((value + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
        let (width_px, height_px) =
            (u32::try_from(width).unwrap_or(0), u32::try_from(height).unwrap_or(0));
        image::RgbImage::from_raw(width_px, height_px, rgb)
            .ok_or_else(|| DiffusionError::Unsupported("preview buffer size".to_owned()))
    }
}

/// Tiles along one axis of `length` latent pixels: (start, length) pairs, each `tile` long
/// (or the whole axis when shorter), consecutive ones overlapping by at least `overlap`.
fn tile_spans(length: usize, tile: usize, overlap: usize) -> Vec<(usize, usize)> {
    if length <= tile {
        return vec![(0, length)];
    }
    let stride = tile - overlap;
    let mut spans = Vec::new();
    let mut start = 0;
    loop {
        if start + tile >= length {
            spans.push((length - tile, tile));
            return spans;
        }
        spans.push((start, tile));
        start += stride;
    }
}

/// Per-pixel blend weights of tile `index` of `spans` (latent units, `scale` pixels each):
/// a linear ramp from 0 to 1 across each overlap with a neighbouring tile, 1 elsewhere. Where
/// two tiles overlap their ramps sum to 1: a linear cross-fade.
fn blend_weights(spans: &[(usize, usize)], index: usize, scale: usize) -> Vec<f32> {
    let (start, length) = spans[index];
    let end = start + length;
    let before = index.checked_sub(1).and_then(|previous| spans.get(previous)).map_or(
        0,
        |&(previous_start, previous_length)| {
            (previous_start + previous_length).saturating_sub(start) * scale
        },
    );
    let after =
        spans.get(index + 1).map_or(0, |&(next_start, _)| end.saturating_sub(next_start) * scale);
    let pixels = length * scale;
    (0..pixels)
        .map(|pixel| {
            #[allow(clippy::cast_precision_loss)]
            let ramp = |distance: usize, overlap: usize| {
                if overlap == 0 { 1.0 } else { ((distance as f32 + 0.5) / overlap as f32).min(1.0) }
            };
            ramp(pixel, before) * ramp(pixels - 1 - pixel, after)
        })
        .collect()
}

/// SDXL latent → RGB factors (the ones ComfyUI and A1111 use for previews).
const SDXL_LATENT_RGB: [[f32; 3]; 4] = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
];
/// SD 1.x latent → RGB factors.
const SD_LATENT_RGB: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// (1, 3, H, W) floats in [0, 1] → RGB8 with `(x·255).round()`, as diffusers' `numpy_to_pil`.
///
/// # Errors
/// Tensor errors.
pub fn tensor_to_image(tensor: &Tensor) -> Result<image::RgbImage> {
    let (_, _, height, width) = tensor.dims4()?;
    let hwc = tensor.squeeze(0)?.permute((1, 2, 0))?.flatten_all()?.to_dtype(DType::F32)?;
    let values: Vec<f32> = hwc.to_vec1()?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bytes: Vec<u8> = values.iter().map(|value| (value * 255.0).round() as u8).collect();
    let (width_px, height_px) =
        (u32::try_from(width).unwrap_or(0), u32::try_from(height).unwrap_or(0));
    image::RgbImage::from_raw(width_px, height_px, bytes)
        .ok_or_else(|| DiffusionError::Unsupported("image buffer size".to_owned()))
}

#[cfg(test)]
mod tiling_tests {
    use super::*;

    #[test]
    fn tiles_cover_the_axis_and_overlaps_cross_fade_to_one() {
        assert_eq!(tile_spans(8, 16, 4), [(0, 8)]);
        assert_eq!(tile_spans(32, 16, 4), [(0, 16), (12, 16), (16, 16)]);
        assert_eq!(tile_spans(28, 16, 4), [(0, 16), (12, 16)]);
        let spans = tile_spans(40, 16, 4);
        assert_eq!(spans.last(), Some(&(24, 16)));
        let scale = 2;
        let mut total = vec![0f32; 40 * scale];
        for index in 0..spans.len() {
            for (offset, weight) in blend_weights(&spans, index, scale).iter().enumerate() {
                total[spans[index].0 * scale + offset] += weight;
            }
        }
        assert!(total.iter().all(|sum| (sum - 1.0).abs() < 1e-5), "{total:?}");
    }
}
