//! diffusers' `AutoencoderKL` read from `vae/config.json`: the encoder (img2img, giving the
//! latent distribution's mean and std) and the decoder, with `scaling_factor`, `force_upcast`
//! and the scale factor `2^(len(block_out_channels)` − 1).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use serde::Deserialize;

use super::error::{DiffusionError, Result, read_json};
use super::layers::{
    Attention, Conv, Downsample, GroupNorm, ResnetBlock, ResnetShape, Upsample, conv_same, conv2d,
    group_norm,
};
use super::weights::{component_weights, mmap_var_builder, safetensors_bytes};
use crate::models::cache::{ByteSize, LazyPart};

/// `vae/config.json`, the fields the model uses.
#[derive(Debug, Clone, Deserialize)]
#[allow(clippy::struct_excessive_bools, reason = "mirrors the config file's switches")]
pub struct VaeConfig {
    /// Image channels in.
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "three")]
    pub out_channels: usize,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder level (decoder: one more).
    #[serde(default = "one")]
    pub layers_per_block: usize,
    /// Latent channels.
    #[serde(default = "four")]
    pub latent_channels: usize,
    /// GroupNorm groups.
    #[serde(default = "groups")]
    pub norm_num_groups: usize,
    /// Latents are multiplied by this after encoding and divided before decoding.
    #[serde(default = "scaling")]
    pub scaling_factor: f64,
    /// Decode in f32 even when the rest runs in half precision.
    #[serde(default)]
    pub force_upcast: bool,
    /// Attention in the mid-blocks.
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
    /// `quant_conv` present.
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    /// `post_quant_conv` present.
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    /// Latent shift (SD3/Flux VAEs); unsupported when set.
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// Per-channel latent means (some SDXL fine-tunes); unsupported when set.
    #[serde(default)]
    pub latents_mean: Option<Vec<f64>>,
}

fn three() -> usize {
    3
}
fn one() -> usize {
    1
}
fn four() -> usize {
    4
}
fn groups() -> usize {
    32
}
fn scaling() -> f64 {
    0.18215
}
fn yes() -> bool {
    true
}

impl VaeConfig {
    /// Pixels per latent: `2^(len(block_out_channels)` − 1).
    pub fn scale_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }
}

const VAE_EPS: f64 = 1e-6;

#[derive(Debug, Clone)]
struct MidBlock {
    resnet_in: ResnetBlock,
    attention: Option<(GroupNorm, Attention)>,
    resnet_out: ResnetBlock,
}

impl MidBlock {
    fn new(channels: usize, config: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let shape = ResnetShape {
            in_channels: channels,
            out_channels: channels,
            temb_channels: None,
            groups: config.norm_num_groups,
            eps: VAE_EPS,
            output_scale_factor: 1.0,
        };
        let attention = if config.mid_block_add_attention {
            let attn = vb.pp("attentions.0");
            let norm =
                group_norm(config.norm_num_groups, channels, VAE_EPS, attn.pp("group_norm"))?;
            Some((norm, Attention::new(channels, channels, 1, channels, true, attn)?))
        } else {
            None
        };
        Ok(Self {
            resnet_in: ResnetBlock::new(shape, vb.pp("resnets.0"))?,
            attention,
            resnet_out: ResnetBlock::new(shape, vb.pp("resnets.1"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut hidden = self.resnet_in.forward(x, None)?;
        if let Some((norm, attention)) = &self.attention {
            let (batch, channels, height, width) = hidden.dims4()?;
            let normed = norm.forward(&hidden)?;
            let tokens = normed.reshape((batch, channels, height * width))?.transpose(1, 2)?;
            let attended = attention.forward(&tokens, None)?;
            let attended = attended.transpose(1, 2)?.reshape((batch, channels, height, width))?;
            hidden = (hidden + attended)?;
        }
        Ok(self.resnet_out.forward(&hidden, None)?)
    }
}

#[derive(Debug, Clone)]
struct Level {
    resnets: Vec<ResnetBlock>,
    downsample: Option<Downsample>,
    upsample: Option<Upsample>,
}

/// The latent distribution of an encoded image.
#[derive(Debug, Clone)]
pub struct LatentDistribution {
    /// Mean (B, latent, h, w).
    pub mean: Tensor,
    /// Standard deviation exp(½·clamp(logvar, −30, 20)).
    pub std: Tensor,
}

impl LatentDistribution {
    /// `mean + std · noise` (diffusers' `latent_dist.sample(generator)`).
    ///
    /// # Errors
    /// Shape mismatch.
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        Ok((&self.mean + (&self.std * noise)?)?)
    }
}

/// The encoder half of an [`AutoencoderKl`] (only img2img needs it), built on first use.
#[derive(Debug, Clone)]
pub struct VaeEncoder {
    conv_in: Conv,
    levels: Vec<Level>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv,
    quant_conv: Option<Conv>,
    latent_channels: usize,
    dtype: DType,
    /// Bytes of its tensors (from the weights headers).
    bytes: u64,
}

impl ByteSize for VaeEncoder {
    fn byte_size(&self) -> u64 {
        self.bytes
    }
}

/// True for the tensors of a VAE's encoder half (`encoder.*` and `quant_conv.*`).
pub fn is_encoder_tensor(name: &str) -> bool {
    name.starts_with("encoder.") || name.starts_with("quant_conv.")
}

fn resnet_shape(config: &VaeConfig, in_channels: usize, out_channels: usize) -> ResnetShape {
    ResnetShape {
        in_channels,
        out_channels,
        temb_channels: None,
        groups: config.norm_num_groups,
        eps: VAE_EPS,
        output_scale_factor: 1.0,
    }
}

fn one_by_one(channels_in: usize, channels_out: usize, vb: VarBuilder) -> Result<Conv> {
    Ok(conv2d(channels_in, channels_out, 1, Conv2dConfig::default(), vb)?)
}

fn top_channels(config: &VaeConfig) -> Result<usize> {
    config
        .block_out_channels
        .last()
        .copied()
        .ok_or_else(|| DiffusionError::InvalidRequest("VAE block_out_channels is empty".to_owned()))
}

impl VaeEncoder {
    /// Builds the encoder (`encoder.*`, `quant_conv`) of a VAE from the VAE's root weights;
    /// `bytes` is what its tensors hold, for the model cache.
    ///
    /// # Errors
    /// Missing weights; an empty `block_out_channels`.
    pub fn new(config: &VaeConfig, vb: &VarBuilder, dtype: DType, bytes: u64) -> Result<Self> {
        let channels = &config.block_out_channels;
        let levels = channels.len();
        let top = top_channels(config)?;
        let latent = config.latent_channels;
        let encoder = vb.pp("encoder");
        let mut encoder_levels = Vec::with_capacity(levels);
        let mut previous = channels[0];
        for (index, &out) in channels.iter().enumerate() {
            let block = encoder.pp(format!("down_blocks.{index}"));
            let mut resnets = Vec::new();
            for layer in 0..config.layers_per_block {
                let input = if layer == 0 { previous } else { out };
                resnets.push(ResnetBlock::new(
                    resnet_shape(config, input, out),
                    block.pp(format!("resnets.{layer}")),
                )?);
            }
            let downsample = if index + 1 < levels {
                Some(Downsample::new(out, 0, block.pp("downsamplers.0"))?)
            } else {
                None
            };
            encoder_levels.push(Level { resnets, downsample, upsample: None });
            previous = out;
        }
        Ok(Self {
            conv_in: conv_same(config.in_channels, channels[0], 3, encoder.pp("conv_in"))?,
            levels: encoder_levels,
            mid: MidBlock::new(top, config, encoder.pp("mid_block"))?,
            norm_out: group_norm(
                config.norm_num_groups,
                top,
                VAE_EPS,
                encoder.pp("conv_norm_out"),
            )?,
            conv_out: conv_same(top, 2 * latent, 3, encoder.pp("conv_out"))?,
            quant_conv: if config.use_quant_conv {
                Some(one_by_one(2 * latent, 2 * latent, vb.pp("quant_conv"))?)
            } else {
                None
            },
            latent_channels: latent,
            dtype,
            bytes,
        })
    }

    /// Encodes images in [−1, 1] (B, 3, H, W) to the latent distribution (unscaled).
    ///
    /// # Errors
    /// Tensor errors.
    pub fn encode(&self, images: &Tensor) -> Result<LatentDistribution> {
        let mut hidden = self.conv_in.forward(&images.to_dtype(self.dtype)?)?;
        for level in &self.levels {
            for resnet in &level.resnets {
                hidden = resnet.forward(&hidden, None)?;
            }
            if let Some(downsample) = &level.downsample {
                hidden = downsample.forward(&hidden)?;
            }
        }
        hidden = self.mid.forward(&hidden)?;
        hidden = self.norm_out.forward_silu(&hidden)?;
        hidden = self.conv_out.forward(&hidden)?;
        if let Some(conv) = &self.quant_conv {
            hidden = conv.forward(&hidden)?;
        }
        let latent = self.latent_channels;
        let mean = hidden.narrow(1, 0, latent)?;
        let logvar = hidden.narrow(1, latent, latent)?.clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        Ok(LatentDistribution { mean, std })
    }
}

/// An `AutoencoderKL`: the decoder is built at load, the encoder on the first
/// [`AutoencoderKl::encode`] and reused after (txt2img never pays for it).
pub struct AutoencoderKl {
    encoder: LazyPart<VaeEncoder>,
    /// The VAE's root weights (memory-mapped), kept to build the encoder later.
    weights: VarBuilder<'static>,
    /// Bytes the encoder's tensors will hold once built.
    encoder_bytes: u64,
    post_quant_conv: Option<Conv>,
    decoder_conv_in: Conv,
    decoder_mid: MidBlock,
    decoder_levels: Vec<Level>,
    decoder_norm_out: GroupNorm,
    decoder_conv_out: Conv,
    config: VaeConfig,
    dtype: DType,
}

impl std::fmt::Debug for AutoencoderKl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoencoderKl")
            .field("config", &self.config)
            .field("dtype", &self.dtype)
            .field("encoder_loaded", &self.encoder.is_loaded())
            .field("encoder_bytes", &self.encoder_bytes)
            .finish_non_exhaustive()
    }
}

impl AutoencoderKl {
    /// Loads a `vae` folder (`config.json` + `diffusion_pytorch_model.safetensors`): the
    /// decoder now, the encoder on first use.
    ///
    /// # Errors
    /// Missing files or weights, unsupported options.
    pub fn load(folder: &Path, dtype: DType, device: &Device, prefer_fp16: bool) -> Result<Self> {
        let config_path = folder.join("config.json");
        let config: VaeConfig = read_json("VAE config", &config_path)?;
        if config.shift_factor.is_some() || config.latents_mean.is_some() {
            return Err(DiffusionError::config(
                "shift_factor/latents_mean",
                "latent shifting is not supported",
                &config_path,
            ));
        }
        if config.block_out_channels.is_empty() {
            return Err(DiffusionError::config("block_out_channels", "is empty", &config_path));
        }
        let weights = component_weights(folder, "diffusion_pytorch_model", prefer_fp16)?;
        let encoder_bytes = safetensors_bytes(&weights, dtype, &is_encoder_tensor)?;
        let vb = mmap_var_builder(&weights, dtype, device)?;
        Self::new(config, vb, dtype, encoder_bytes)
    }

    /// Builds the VAE's decoder from its config and weights; the encoder (whose tensors hold
    /// `encoder_bytes`) is built from the same weights on the first [`Self::encode`].
    ///
    /// # Errors
    /// Missing decoder weights; an empty `block_out_channels`.
    pub fn new(
        config: VaeConfig,
        vb: VarBuilder<'static>,
        dtype: DType,
        encoder_bytes: u64,
    ) -> Result<Self> {
        let channels = &config.block_out_channels;
        let groups = config.norm_num_groups;
        let latent = config.latent_channels;
        let levels = channels.len();
        let top = top_channels(&config)?;

        let decoder = vb.pp("decoder");
        let mut decoder_levels = Vec::with_capacity(levels);
        let mut previous = top;
        for (index, &out) in channels.iter().rev().enumerate() {
            let block = decoder.pp(format!("up_blocks.{index}"));
            let mut resnets = Vec::new();
            for layer in 0..=config.layers_per_block {
                let input = if layer == 0 { previous } else { out };
                resnets.push(ResnetBlock::new(
                    resnet_shape(&config, input, out),
                    block.pp(format!("resnets.{layer}")),
                )?);
            }
            let upsample = if index + 1 < levels {
                Some(Upsample::new(out, block.pp("upsamplers.0"))?)
            } else {
                None
            };
            decoder_levels.push(Level { resnets, downsample: None, upsample });
            previous = out;
        }
        Ok(Self {
            encoder: LazyPart::new(),
            encoder_bytes,
            post_quant_conv: if config.use_post_quant_conv {
                Some(one_by_one(latent, latent, vb.pp("post_quant_conv"))?)
            } else {
                None
            },
            decoder_conv_in: conv_same(latent, top, 3, decoder.pp("conv_in"))?,
            decoder_mid: MidBlock::new(top, &config, decoder.pp("mid_block"))?,
            decoder_levels,
            decoder_norm_out: group_norm(
                groups,
                channels[0],
                VAE_EPS,
                decoder.pp("conv_norm_out"),
            )?,
            decoder_conv_out: conv_same(
                channels[0],
                config.out_channels,
                3,
                decoder.pp("conv_out"),
            )?,
            weights: vb,
            config,
            dtype,
        })
    }

    /// The config the VAE was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// True once the encoder has been built (by the first [`Self::encode`] or
    /// [`Self::encoder`]).
    pub fn encoder_is_loaded(&self) -> bool {
        self.encoder.is_loaded()
    }

    /// The encoder, built on the first call and the same one after.
    ///
    /// # Errors
    /// Missing encoder weights (the next call tries again).
    pub fn encoder(&self) -> Result<Arc<VaeEncoder>> {
        self.encoder.get_or_load("vae encoder", || {
            VaeEncoder::new(&self.config, &self.weights, self.dtype, self.encoder_bytes)
        })
    }

    /// Bytes held by the encoder now: 0 until it is built.
    pub fn encoder_byte_size(&self) -> u64 {
        self.encoder.byte_size()
    }

    /// Encodes images in [−1, 1] (B, 3, H, W) to the latent distribution (unscaled), building
    /// the encoder first if this is the first call.
    ///
    /// # Errors
    /// Missing encoder weights; tensor errors.
    pub fn encode(&self, images: &Tensor) -> Result<LatentDistribution> {
        self.encoder()?.encode(images)
    }

    /// Decodes latents that are already divided by `scaling_factor` to images in about [−1, 1].
    ///
    /// # Errors
    /// Tensor errors.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let mut hidden = latents.to_dtype(self.dtype)?;
        if let Some(conv) = &self.post_quant_conv {
            hidden = conv.forward(&hidden)?;
        }
        hidden = self.decoder_conv_in.forward(&hidden)?;
        hidden = self.decoder_mid.forward(&hidden)?;
        for level in &self.decoder_levels {
            for resnet in &level.resnets {
                hidden = resnet.forward(&hidden, None)?;
            }
            if let Some(upsample) = &level.upsample {
                hidden = upsample.forward(&hidden, None)?;
            }
        }
        hidden = self.decoder_norm_out.forward_silu(&hidden)?;
        Ok(self.decoder_conv_out.forward(&hidden)?)
    }
}
