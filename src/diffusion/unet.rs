//! diffusers' `UNet2DConditionModel`, built from `unet/config.json` with no architecture
//! hard-coded: any number of levels, `DownBlock2D`/`CrossAttnDownBlock2D` (and up) blocks,
//! `transformer_layers_per_block`, heads from `num_attention_heads` or (diffusers' naming)
//! `attention_head_dim`, linear or convolutional projections, and SDXL's `text_time`
//! micro-conditioning (`add_time_proj` + `add_embedding` of the pooled text embedding and the
//! size/crop time ids) that candle's own UNet lacks.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;
use serde_json::Value;

use super::error::{DiffusionError, Result, read_json};
use super::inplace::{add, mul_gelu};
use super::layers::{
    Attention, Conv, Dense, Downsample, GroupNorm, ResnetBlock, ResnetShape, Upsample, conv_same,
    conv2d, group_norm, timestep_embedding,
};
use super::weights::{component_weights, mmap_var_builder};

/// A config value written either once for all blocks or once per block.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// The same value for every block.
    One(T),
    /// One value per down block.
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    fn expand(&self, blocks: usize, field: &str, path: &Path) -> Result<Vec<T>> {
        match self {
            Self::One(value) => Ok(vec![value.clone(); blocks]),
            Self::Each(values) if values.len() == blocks => Ok(values.clone()),
            Self::Each(values) => Err(DiffusionError::config(
                field,
                format!("has {} entries for {blocks} blocks", values.len()),
                path,
            )),
        }
    }
}

/// `unet/config.json`, the fields the model uses.
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    /// Latent channels in.
    #[serde(default = "four")]
    pub in_channels: usize,
    /// Latent channels out.
    #[serde(default = "four")]
    pub out_channels: usize,
    /// Block types, top level first.
    pub down_block_types: Vec<String>,
    /// Block types, bottom level first.
    pub up_block_types: Vec<String>,
    /// `UNetMidBlock2DCrossAttn` or null.
    #[serde(default = "default_mid")]
    pub mid_block_type: Option<String>,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down level (up: one more).
    #[serde(default = "two")]
    pub layers_per_block: PerBlock<usize>,
    /// GroupNorm groups.
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    /// GroupNorm epsilon of resnets and the output norm.
    #[serde(default = "eps")]
    pub norm_eps: f64,
    /// Width of the text conditioning.
    pub cross_attention_dim: PerBlock<usize>,
    /// Transformer layers per level.
    #[serde(default = "one_layer")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// Up-block transformer layers, when they differ from the reversed down list.
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<Vec<usize>>,
    /// Heads (diffusers reads this as the head count when `num_attention_heads` is null).
    #[serde(default = "eight")]
    pub attention_head_dim: PerBlock<usize>,
    /// Heads per level.
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    /// Linear (SDXL, SD 2) or 1×1 convolution (SD 1) projections in the transformers.
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Sinusoid order of the time embedding.
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the time embedding.
    #[serde(default)]
    pub freq_shift: f32,
    /// Padding of the down-sampling convolutions.
    #[serde(default = "one")]
    pub downsample_padding: usize,
    /// `null` or `text_time` (SDXL).
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// Channels of each time id's sinusoid (`text_time`).
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    /// Input width of `add_embedding` (`text_time`).
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// Input convolution kernel.
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    /// Output convolution kernel.
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
    /// Overrides `4·block_out_channels`[0].
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    /// Latent side the model was trained at (× the VAE scale: its native image size).
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    /// Everything else, checked for options this implementation lacks.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

/// `sample_size`: one side, or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    /// A square latent.
    Square(usize),
    /// `[height, width]`.
    HeightWidth([usize; 2]),
}

impl SampleSize {
    /// (height, width) in latent pixels.
    pub fn height_width(self) -> (usize, usize) {
        match self {
            Self::Square(side) => (side, side),
            Self::HeightWidth([height, width]) => (height, width),
        }
    }
}

fn four() -> usize {
    4
}
fn two() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn one_layer() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn eight() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn thirty_two() -> usize {
    32
}
fn eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
#[allow(clippy::unnecessary_wraps, reason = "serde `default` functions return the field's type")]
fn default_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".to_owned())
}

/// Options that change the architecture in ways not implemented: (field, allowed value).
const UNSUPPORTED_UNLESS: &[(&str, &str)] = &[
    ("class_embed_type", "null"),
    ("encoder_hid_dim_type", "null"),
    ("time_cond_proj_dim", "null"),
    ("resnet_time_scale_shift", "\"default\""),
    ("time_embedding_type", "\"positional\""),
    ("attention_type", "\"default\""),
    ("dual_cross_attention", "false"),
    ("only_cross_attention", "false"),
    ("center_input_sample", "false"),
    ("num_class_embeds", "null"),
];

#[derive(Debug, Clone)]
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    /// GEGLU's input projection (`ff.net.0.proj`, 2·inner outputs) as its two halves: the value
    /// and the gate. Two GEMMs of half the width cost what one does, and give contiguous
    /// outputs, so GELU and the product run as parallel element-wise passes instead of
    /// single-threaded strided ones over views of one output.
    ff_value: Dense,
    ff_gate: Dense,
    ff_out: Dense,
}

impl TransformerBlock {
    fn new(dim: usize, heads: usize, context_dim: usize, vb: VarBuilder) -> Result<Self> {
        let head_dim = dim / heads;
        let inner = dim * 4;
        let proj = vb.pp("ff.net.0.proj");
        let weight = proj.get((inner * 2, dim), "weight")?;
        let bias = proj.get(inner * 2, "bias")?;
        // Row ranges of the (2·inner, dim) weight: contiguous views, no copy.
        let half = |start: usize| -> candle_core::Result<Dense> {
            Dense::new(weight.narrow(0, start, inner)?, Some(bias.narrow(0, start, inner)?))
        };
        let (ff_value, ff_gate) = (half(0)?, half(inner)?);
        Ok(Self {
            norm1: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(dim, dim, heads, head_dim, false, vb.pp("attn1"))?,
            norm2: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(dim, context_dim, heads, head_dim, false, vb.pp("attn2"))?,
            norm3: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff_value,
            ff_gate,
            ff_out: Dense::load(inner, dim, true, vb.pp("ff.net.2"))?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        // The residual additions go over the attention and feed-forward outputs (fresh tensors).
        let x = add(self.attn1.forward(&self.norm1.forward(x)?, None)?, x)?;
        let x = add(self.attn2.forward(&self.norm2.forward(&x)?, Some(context))?, &x)?;
        // GEGLU: hidden · gelu(gate), the projection's two halves.
        let normed = self.norm3.forward(&x)?;
        let hidden = self.ff_value.forward(&normed)?;
        let gate = self.ff_gate.forward(&normed)?;
        let fed = self.ff_out.forward(&mul_gelu(hidden, &gate)?)?;
        Ok(add(fed, &x)?)
    }
}

#[derive(Debug, Clone)]
enum Projection {
    Linear(Dense),
    Conv(Conv),
}

/// diffusers' `Transformer2DModel` with continuous input.
#[derive(Debug, Clone)]
struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<TransformerBlock>,
    proj_out: Projection,
}

impl SpatialTransformer {
    fn new(
        channels: usize,
        heads: usize,
        layers: usize,
        context_dim: usize,
        config: &UNetConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let projection = |name: &str| -> Result<Projection> {
            Ok(if config.use_linear_projection {
                Projection::Linear(Dense::load(channels, channels, true, vb.pp(name))?)
            } else {
                Projection::Conv(conv2d(
                    channels,
                    channels,
                    1,
                    Conv2dConfig::default(),
                    vb.pp(name),
                )?)
            })
        };
        let blocks = (0..layers)
            .map(|index| {
                TransformerBlock::new(
                    channels,
                    heads,
                    context_dim,
                    vb.pp(format!("transformer_blocks.{index}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: group_norm(config.norm_num_groups, channels, 1e-6, vb.pp("norm"))?,
            proj_in: projection("proj_in")?,
            blocks,
            proj_out: projection("proj_out")?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (batch, channels, height, width) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let to_tokens =
            |t: &Tensor| t.permute((0, 2, 3, 1))?.reshape((batch, height * width, channels));
        let mut hidden = match &self.proj_in {
            Projection::Linear(linear) => linear.forward(&to_tokens(&normed)?)?,
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
        };
        for block in &self.blocks {
            hidden = block.forward(&hidden, context)?;
        }
        let to_image =
            |t: &Tensor| t.reshape((batch, height, width, channels))?.permute((0, 3, 1, 2));
        let out = match &self.proj_out {
            Projection::Linear(linear) => to_image(&linear.forward(&hidden)?)?,
            Projection::Conv(conv) => conv.forward(&to_image(&hidden)?.contiguous()?)?,
        };
        Ok((out + x)?)
    }
}

#[derive(Debug, Clone)]
struct Level {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<SpatialTransformer>,
    downsample: Option<Downsample>,
    upsample: Option<Upsample>,
}

#[derive(Debug, Clone)]
struct MidBlock {
    resnet_in: ResnetBlock,
    attention: Option<SpatialTransformer>,
    resnet_out: ResnetBlock,
}

/// The per-level numbers of a UNet config, expanded to one entry per level and checked.
struct LevelShape {
    levels: usize,
    channels: Vec<usize>,
    layers_per_block: Vec<usize>,
    cross: Vec<usize>,
    transformer_layers: Vec<usize>,
    reverse_transformer_layers: Vec<usize>,
    heads: Vec<usize>,
    time_dim: usize,
}

impl LevelShape {
    /// Refuses options that are not implemented and lists of the wrong length.
    fn of(config: &UNetConfig, path: &Path) -> Result<Self> {
        for (field, allowed) in UNSUPPORTED_UNLESS {
            if let Some(value) = config.rest.get(*field) {
                let is_allowed = value.to_string().as_str() == *allowed
                    || (*allowed == "false" && value.is_null());
                if !is_allowed {
                    return Err(DiffusionError::config(
                        *field,
                        format!("{value} is not supported (only {allowed})"),
                        path,
                    ));
                }
            }
        }
        let levels = config.block_out_channels.len();
        if config.down_block_types.len() != levels
            || config.up_block_types.len() != levels
            || levels == 0
        {
            return Err(DiffusionError::config(
                "down_block_types/up_block_types",
                format!("need one entry per block_out_channels ({levels})"),
                path,
            ));
        }
        let transformer_layers = config.transformer_layers_per_block.expand(
            levels,
            "transformer_layers_per_block",
            path,
        )?;
        let reverse_transformer_layers = match &config.reverse_transformer_layers_per_block {
            Some(layers) if layers.len() == levels => layers.clone(),
            Some(_) => {
                return Err(DiffusionError::config(
                    "reverse_transformer_layers_per_block",
                    "needs one entry per level",
                    path,
                ));
            }
            None => transformer_layers.iter().rev().copied().collect(),
        };
        let heads = match &config.num_attention_heads {
            Some(heads) => heads.expand(levels, "num_attention_heads", path)?,
            None => config.attention_head_dim.expand(levels, "attention_head_dim", path)?,
        };
        Ok(Self {
            levels,
            channels: config.block_out_channels.clone(),
            layers_per_block: config.layers_per_block.expand(levels, "layers_per_block", path)?,
            cross: config.cross_attention_dim.expand(levels, "cross_attention_dim", path)?,
            transformer_layers,
            reverse_transformer_layers,
            heads,
            time_dim: config.time_embedding_dim.unwrap_or(config.block_out_channels[0] * 4),
        })
    }

    /// A resnet from `in_channels` to `out_channels` with the time embedding.
    fn resnet(
        &self,
        config: &UNetConfig,
        in_channels: usize,
        out_channels: usize,
        vb: VarBuilder,
    ) -> Result<ResnetBlock> {
        let shape = ResnetShape {
            in_channels,
            out_channels,
            temb_channels: Some(self.time_dim),
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            output_scale_factor: 1.0,
        };
        Ok(ResnetBlock::new(shape, vb)?)
    }

    /// Down level `index`: its resnets (and transformers), then a downsampler except at the
    /// bottom.
    fn down_level(
        &self,
        index: usize,
        config: &UNetConfig,
        block: &VarBuilder,
        path: &Path,
    ) -> Result<Level> {
        let with_attention =
            block_has_attention(&config.down_block_types[index], "down_block_types", path)?;
        let input_channels = self.channels[index.saturating_sub(1)];
        let output_channels = self.channels[index];
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for layer in 0..self.layers_per_block[index] {
            let input = if layer == 0 { input_channels } else { output_channels };
            resnets.push(self.resnet(
                config,
                input,
                output_channels,
                block.pp(format!("resnets.{layer}")),
            )?);
            if with_attention {
                attentions.push(SpatialTransformer::new(
                    output_channels,
                    self.heads[index],
                    self.transformer_layers[index],
                    self.cross[index],
                    config,
                    block.pp(format!("attentions.{layer}")),
                )?);
            }
        }
        let downsample = if index + 1 < self.levels {
            Some(Downsample::new(
                output_channels,
                config.downsample_padding,
                block.pp("downsamplers.0"),
            )?)
        } else {
            None
        };
        Ok(Level { resnets, attentions, downsample, upsample: None })
    }

    /// The mid block at the bottom level's width (with or without cross-attention), if any.
    fn mid_block(
        &self,
        config: &UNetConfig,
        block: &VarBuilder,
        path: &Path,
    ) -> Result<Option<MidBlock>> {
        let bottom = self.levels - 1;
        let top = self.channels[bottom];
        let attention = match config.mid_block_type.as_deref() {
            None => return Ok(None),
            Some("UNetMidBlock2DCrossAttn") => Some(SpatialTransformer::new(
                top,
                self.heads[bottom],
                self.transformer_layers[bottom],
                self.cross[bottom],
                config,
                block.pp("attentions.0"),
            )?),
            Some("UNetMidBlock2D") => None,
            Some(other) => {
                return Err(DiffusionError::config(
                    "mid_block_type",
                    format!("{other:?} is not supported"),
                    path,
                ));
            }
        };
        Ok(Some(MidBlock {
            resnet_in: self.resnet(config, top, top, block.pp("resnets.0"))?,
            attention,
            resnet_out: self.resnet(config, top, top, block.pp("resnets.1"))?,
        }))
    }

    /// Up level `index` (bottom first): one more resnet than the down level, each taking a skip
    /// connection, then an upsampler except at the top.
    fn up_level(
        &self,
        index: usize,
        config: &UNetConfig,
        block: &VarBuilder,
        path: &Path,
    ) -> Result<Level> {
        let levels = self.levels;
        let down_index = levels - 1 - index;
        let with_attention =
            block_has_attention(&config.up_block_types[index], "up_block_types", path)?;
        let previous_output = self.channels[(down_index + 1).min(levels - 1)];
        let output_channels = self.channels[down_index];
        let input_channels = self.channels[down_index.saturating_sub(1)];
        let layers = self.layers_per_block[down_index] + 1;
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for layer in 0..layers {
            let skip = if layer + 1 == layers { input_channels } else { output_channels };
            let input = if layer == 0 { previous_output } else { output_channels };
            resnets.push(self.resnet(
                config,
                input + skip,
                output_channels,
                block.pp(format!("resnets.{layer}")),
            )?);
            if with_attention {
                attentions.push(SpatialTransformer::new(
                    output_channels,
                    self.heads[down_index],
                    self.reverse_transformer_layers[index],
                    self.cross[down_index],
                    config,
                    block.pp(format!("attentions.{layer}")),
                )?);
            }
        }
        let upsample = if index + 1 < levels {
            Some(Upsample::new(output_channels, block.pp("upsamplers.0"))?)
        } else {
            None
        };
        Ok(Level { resnets, attentions, downsample: None, upsample })
    }
}

/// Whether a block type has cross-attention (`CrossAttn…`) or not; other types are refused.
fn block_has_attention(name: &str, field: &str, path: &Path) -> Result<bool> {
    match name {
        "DownBlock2D" | "UpBlock2D" => Ok(false),
        "CrossAttnDownBlock2D" | "CrossAttnUpBlock2D" => Ok(true),
        other => Err(DiffusionError::config(
            field,
            format!("block type {other:?} is not supported"),
            path,
        )),
    }
}

/// SDXL's `text_time` embedding: pooled text + six size ids through two linears.
fn add_embedding(
    config: &UNetConfig,
    time_dim: usize,
    embedding: &VarBuilder,
    path: &Path,
) -> Result<Option<(Linear, Linear, usize)>> {
    match config.addition_embed_type.as_deref() {
        None => Ok(None),
        Some("text_time") => {
            let (Some(time_embed_dim), Some(input_dim)) =
                (config.addition_time_embed_dim, config.projection_class_embeddings_input_dim)
            else {
                return Err(DiffusionError::config(
                    "addition_time_embed_dim/projection_class_embeddings_input_dim",
                    "text_time needs both",
                    path,
                ));
            };
            Ok(Some((
                candle_nn::linear(input_dim, time_dim, embedding.pp("linear_1"))?,
                candle_nn::linear(time_dim, time_dim, embedding.pp("linear_2"))?,
                time_embed_dim,
            )))
        }
        Some(other) => Err(DiffusionError::config(
            "addition_embed_type",
            format!("{other:?} is not supported"),
            path,
        )),
    }
}

/// The conditioning of one UNet call.
#[derive(Debug, Clone, Copy)]
pub struct UNetConditioning<'a> {
    /// Text hidden states (B, S, `cross_attention_dim`).
    pub encoder_hidden_states: &'a Tensor,
    /// SDXL: pooled text embedding (B, projection).
    pub text_embeds: Option<&'a Tensor>,
    /// SDXL: time ids (B, 6) — original size, crop top-left, target size.
    pub time_ids: Option<&'a Tensor>,
}

/// A `UNet2DConditionModel`.
#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    conv_in: Conv,
    time_linear_1: Linear,
    time_linear_2: Linear,
    add_embedding: Option<(Linear, Linear, usize)>,
    down: Vec<Level>,
    mid: Option<MidBlock>,
    up: Vec<Level>,
    conv_norm_out: GroupNorm,
    conv_out: Conv,
    config: UNetConfig,
    dtype: DType,
}

impl UNet2DConditionModel {
    /// Loads a `unet` folder (`config.json` + `diffusion_pytorch_model[.fp16].safetensors`).
    ///
    /// # Errors
    /// Missing files or weights, unsupported options.
    pub fn load(folder: &Path, dtype: DType, device: &Device, prefer_fp16: bool) -> Result<Self> {
        let config_path = folder.join("config.json");
        let config: UNetConfig = read_json("UNet config", &config_path)?;
        let weights = component_weights(folder, "diffusion_pytorch_model", prefer_fp16)?;
        let vb = mmap_var_builder(&weights, dtype, device)?;
        Self::new(config, vb, dtype, &config_path)
    }

    /// Builds the UNet from its config and weights: the time embedding, each down level, the
    /// mid block, each up level, the SDXL `text_time` embedding, in diffusers' order.
    ///
    /// # Errors
    /// Inconsistent or unsupported config, missing weights.
    pub fn new(config: UNetConfig, vb: VarBuilder, dtype: DType, path: &Path) -> Result<Self> {
        let shape = LevelShape::of(&config, path)?;
        let channels = &config.block_out_channels;
        let down = (0..shape.levels)
            .map(|index| {
                shape.down_level(index, &config, &vb.pp(format!("down_blocks.{index}")), path)
            })
            .collect::<Result<Vec<_>>>()?;
        let mid = shape.mid_block(&config, &vb.pp("mid_block"), path)?;
        let up = (0..shape.levels)
            .map(|index| shape.up_level(index, &config, &vb.pp(format!("up_blocks.{index}")), path))
            .collect::<Result<Vec<_>>>()?;
        let add_embedding = add_embedding(&config, shape.time_dim, &vb.pp("add_embedding"), path)?;
        let time_dim = shape.time_dim;
        Ok(Self {
            conv_in: conv_same(
                config.in_channels,
                channels[0],
                config.conv_in_kernel,
                vb.pp("conv_in"),
            )?,
            time_linear_1: candle_nn::linear(
                channels[0],
                time_dim,
                vb.pp("time_embedding.linear_1"),
            )?,
            time_linear_2: candle_nn::linear(time_dim, time_dim, vb.pp("time_embedding.linear_2"))?,
            add_embedding,
            down,
            mid,
            up,
            conv_norm_out: group_norm(
                config.norm_num_groups,
                channels[0],
                config.norm_eps,
                vb.pp("conv_norm_out"),
            )?,
            conv_out: conv_same(
                channels[0],
                config.out_channels,
                config.conv_out_kernel,
                vb.pp("conv_out"),
            )?,
            config,
            dtype,
        })
    }

    /// The config the UNet was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Whether the UNet needs `text_embeds` and `time_ids` (SDXL).
    pub fn needs_text_time(&self) -> bool {
        self.add_embedding.is_some()
    }

    /// Width `add_embedding` expects from the pooled text embedding.
    pub fn pooled_width(&self) -> Option<usize> {
        let (_, _, time_embed_dim) = self.add_embedding.as_ref()?;
        self.config
            .projection_class_embeddings_input_dim
            .map(|dim| dim.saturating_sub(6 * time_embed_dim))
    }

    /// Predicts the noise for `sample` (B, C, h, w) at `timestep`.
    ///
    /// # Errors
    /// Shape mismatches; missing SDXL conditioning.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        conditioning: UNetConditioning<'_>,
    ) -> Result<Tensor> {
        let device = sample.device().clone();
        let batch = sample.dim(0)?;
        let dtype = self.dtype;
        let sample = sample.to_dtype(dtype)?;
        let context = conditioning.encoder_hidden_states.to_dtype(dtype)?;
        #[allow(clippy::cast_possible_truncation, reason = "diffusers embeds timesteps in f32")]
        let timesteps = vec![timestep as f32; batch];
        let time_features = timestep_embedding(
            &timesteps,
            self.config.block_out_channels[0],
            self.config.flip_sin_to_cos,
            self.config.freq_shift,
            &device,
        )?
        .to_dtype(dtype)?;
        let mut emb = self
            .time_linear_2
            .forward(&candle_nn::ops::silu(&self.time_linear_1.forward(&time_features)?)?)?;
        if let Some((linear_1, linear_2, time_embed_dim)) = &self.add_embedding {
            let (Some(text_embeds), Some(time_ids)) =
                (conditioning.text_embeds, conditioning.time_ids)
            else {
                return Err(DiffusionError::InvalidRequest(
                    "this UNet (addition_embed_type text_time) needs text_embeds and time_ids"
                        .to_owned(),
                ));
            };
            let ids: Vec<f32> = time_ids.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            let id_features = timestep_embedding(
                &ids,
                *time_embed_dim,
                self.config.flip_sin_to_cos,
                self.config.freq_shift,
                &device,
            )?
            .reshape((batch, ()))?;
            let add_embeds = Tensor::cat(&[&text_embeds.to_dtype(DType::F32)?, &id_features], 1)?
                .to_dtype(dtype)?;
            let augment =
                linear_2.forward(&candle_nn::ops::silu(&linear_1.forward(&add_embeds)?)?)?;
            emb = (emb + augment)?;
        }

        let mut hidden = self.conv_in.forward(&sample)?;
        let mut skips = vec![hidden.clone()];
        for level in &self.down {
            for (index, resnet) in level.resnets.iter().enumerate() {
                hidden = resnet.forward(&hidden, Some(&emb))?;
                if let Some(attention) = level.attentions.get(index) {
                    hidden = attention.forward(&hidden, &context)?;
                }
                skips.push(hidden.clone());
            }
            if let Some(downsample) = &level.downsample {
                hidden = downsample.forward(&hidden)?;
                skips.push(hidden.clone());
            }
        }
        if let Some(mid) = &self.mid {
            hidden = mid.resnet_in.forward(&hidden, Some(&emb))?;
            if let Some(attention) = &mid.attention {
                hidden = attention.forward(&hidden, &context)?;
            }
            hidden = mid.resnet_out.forward(&hidden, Some(&emb))?;
        }
        for level in &self.up {
            for (index, resnet) in level.resnets.iter().enumerate() {
                let skip = skips.pop().ok_or_else(|| {
                    DiffusionError::Unsupported("UNet skip connections do not match".to_owned())
                })?;
                hidden = resnet.forward(&Tensor::cat(&[&hidden, &skip], 1)?, Some(&emb))?;
                if let Some(attention) = level.attentions.get(index) {
                    hidden = attention.forward(&hidden, &context)?;
                }
            }
            if let Some(upsample) = &level.upsample {
                // Odd latent sizes: upsample to the size of the skip waiting below.
                let size = match skips.last() {
                    Some(skip) => {
                        let (_, _, height, width) = skip.dims4()?;
                        Some((height, width))
                    }
                    None => None,
                };
                hidden = upsample.forward(&hidden, size)?;
            }
        }
        let hidden = self.conv_norm_out.forward_silu(&hidden)?;
        Ok(self.conv_out.forward(&hidden)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_config() -> (std::path::PathBuf, serde_json::Map<String, Value>) {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/diffusion/sdxl_tiny/unet/config.json");
        let text = fs_err::read_to_string(&path).expect("config");
        (path, serde_json::from_str(&text).expect("json"))
    }

    fn build(config: serde_json::Map<String, Value>, path: &Path) -> Result<UNet2DConditionModel> {
        let config: UNetConfig = serde_json::from_value(Value::Object(config)).expect("parses");
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        UNet2DConditionModel::new(config, vb, DType::F32, path)
    }

    #[test]
    fn unsupported_options_are_refused_naming_the_field() {
        let (path, mut config) = fixture_config();
        config.insert("class_embed_type".to_owned(), Value::String("timestep".to_owned()));
        let err = build(config, &path).expect_err("refused");
        assert!(err.to_string().contains("class_embed_type"), "{err}");

        let (path, mut config) = fixture_config();
        config.insert(
            "down_block_types".to_owned(),
            serde_json::json!(["DownBlock2D", "SimpleCrossAttnDownBlock2D"]),
        );
        let err = build(config, &path).expect_err("refused");
        assert!(err.to_string().contains("SimpleCrossAttnDownBlock2D"), "{err}");
    }

    #[test]
    fn sdxl_config_builds_with_text_time_and_its_pooled_width() {
        let (path, config) = fixture_config();
        let unet = build(config, &path).expect("builds");
        assert!(unet.needs_text_time());
        // projection_class_embeddings_input_dim 64 = 6 time ids × 8 + pooled 16.
        assert_eq!(unet.pooled_width(), Some(16));
    }
}
