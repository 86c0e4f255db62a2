//! The diffusers configs of a single file's components, read off its tensors (names and shapes)
//! and the architecture's conventions — what `from_single_file` gets from the architecture's hub
//! repo, with every size taken from the file instead, so fine-tunes with other depths load too.
//!
//! From the shapes: levels, channels, resnets per level, transformer depths, cross-attention and
//! added-conditioning widths, projections (linear or 1×1 conv), text-encoder widths, layers and
//! vocabulary, VAE levels and latent channels. From the architecture (the original LDM/SGM
//! configs and the hub repos, as diffusers uses them): 32 normalisation groups; attention heads
//! of 64 channels for SDXL and SD 2.x (`num_head_channels: 64`) and 8 heads for SD 1.x
//! (`num_heads: 8`); CLIP heads of 64 channels; `quick_gelu` for CLIP ViT-L and `gelu` for
//! OpenCLIP; the VAE scaling factor (0.13025 SDXL, 0.18215 SD 1.x/2.x); the scheduler config
//! of the repo `from_single_file` reads for that architecture.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::names::{NameMap, Transform};
use crate::models::checkpoint::{CheckpointArchitecture, CheckpointInfo};
use crate::models::safetensors_header::SafetensorsHeader;

/// SD 2.x conditions on the penultimate layer of OpenCLIP ViT-H/14's 24: 23 layers (files
/// written back from diffusers hold only those).
pub const SD2_TEXT_LAYERS: usize = 23;
/// Channels per attention head of SDXL's and SD 2.x's `UNets` and of every CLIP text encoder.
pub const HEAD_CHANNELS: usize = 64;
/// Attention heads of SD 1.x's UNet.
pub const SD1_HEADS: usize = 8;
/// Normalisation groups of the LDM UNet and VAE (hard-coded there).
pub const NORM_GROUPS: usize = 32;

/// Shapes of mapped tensors, as the model will see them.
pub struct Shapes<'a> {
    /// The checkpoint's header.
    pub header: &'a SafetensorsHeader,
    /// One component's map.
    pub map: &'a NameMap,
}

impl Shapes<'_> {
    /// The shape of the model's tensor `name`, after its transform.
    pub fn get(&self, name: &str) -> Option<Vec<usize>> {
        let source = self.map.get(name)?;
        let stored: Vec<usize> = self
            .header
            .tensors
            .get(&source.name)?
            .shape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect();
        Some(match source.transform {
            Transform::Identity => stored,
            Transform::Rows { len, .. } => {
                let mut shape = stored;
                if let Some(first) = shape.first_mut() {
                    *first = len;
                }
                shape
            }
            Transform::Transpose => stored.into_iter().rev().collect(),
            Transform::DropUnitDims => stored.into_iter().take(2).collect(),
        })
    }

    fn dim(&self, name: &str, axis: usize) -> Result<usize, String> {
        self.get(name)
            .and_then(|shape| shape.get(axis).copied())
            .ok_or_else(|| format!("no tensor {name} (or it has no dimension {axis})"))
    }

    fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// How many consecutive `<prefix>{i}<suffix>` exist from 0.
    fn count(&self, prefix: &str, suffix: &str) -> usize {
        (0..self.map.len()).take_while(|i| self.has(&format!("{prefix}{i}{suffix}"))).count()
    }

    /// Indices `i` of names starting `<prefix>{i}.`.
    fn indices(&self, prefix: &str) -> BTreeSet<usize> {
        self.map
            .keys()
            .filter_map(|name| name.strip_prefix(prefix)?.split('.').next()?.parse().ok())
            .collect()
    }
}

/// The scheduler config of the repo `from_single_file` reads for `architecture`
/// (`scheduler/scheduler_config.json` of stable-diffusion-xl-base-1.0, stable-diffusion-v1-5,
/// stable-diffusion-2-1), with a `v_pred` key making it v-prediction and a `ztsnr` key
/// rescaling the betas to zero terminal SNR (ComfyUI's reading of those marks).
pub fn scheduler_config(info: &CheckpointInfo) -> Value {
    let mut config = match info.architecture {
        CheckpointArchitecture::SdxlBase => json!({
            "_class_name": "EulerDiscreteScheduler",
            "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000, "steps_offset": 1, "timestep_spacing": "leading",
            "prediction_type": "epsilon", "interpolation_type": "linear",
            "use_karras_sigmas": false, "sample_max_value": 1.0, "set_alpha_to_one": false,
            "skip_prk_steps": true, "clip_sample": false, "trained_betas": null
        }),
        CheckpointArchitecture::Sd1 => json!({
            "_class_name": "PNDMScheduler",
            "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
            "steps_offset": 1, "trained_betas": null, "clip_sample": false
        }),
        CheckpointArchitecture::Sd2 => json!({
            "_class_name": "DDIMScheduler",
            "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "clip_sample": false, "num_train_timesteps": 1000,
            "prediction_type": "v_prediction", "set_alpha_to_one": false, "steps_offset": 1,
            "trained_betas": null
        }),
    };
    if info.v_prediction_key {
        config["prediction_type"] = json!("v_prediction");
    }
    if info.zero_terminal_snr_key {
        config["rescale_betas_zero_snr"] = json!(true);
    }
    config
}

/// `vae/config.json` from the VAE's tensors; `scaling_factor` is the architecture's.
///
/// # Errors
/// A message naming the tensor that is missing or inconsistent.
pub fn vae_config(shapes: &Shapes<'_>, scaling_factor: f64) -> Result<Value, String> {
    let mut config = vae_shape_config(shapes)?;
    config["norm_num_groups"] = json!(NORM_GROUPS);
    config["scaling_factor"] = json!(scaling_factor);
    config["force_upcast"] = json!(true);
    Ok(config)
}

/// The part of `vae/config.json` the tensors' shapes determine.
///
/// # Errors
/// A message naming the tensor that is missing or inconsistent.
pub fn vae_shape_config(shapes: &Shapes<'_>) -> Result<Value, String> {
    let levels = shapes.indices("encoder.down_blocks.").len();
    if levels == 0 {
        return Err("no encoder.down.N tensors: the VAE is missing".to_owned());
    }
    let channels: Vec<usize> = (0..levels)
        .map(|level| shapes.dim(&format!("encoder.down_blocks.{level}.resnets.0.conv1.weight"), 0))
        .collect::<Result<_, _>>()?;
    let layers = shapes.count("encoder.down_blocks.0.resnets.", ".conv1.weight");
    let latent = shapes.dim("decoder.conv_in.weight", 1)?;
    let encoder_out = shapes.dim("encoder.conv_out.weight", 0)?;
    if encoder_out != 2 * latent {
        return Err(format!(
            "encoder.conv_out has {encoder_out} channels, not twice the {latent} latent channels"
        ));
    }
    Ok(json!({
        "_class_name": "AutoencoderKL",
        "in_channels": shapes.dim("encoder.conv_in.weight", 1)?,
        "out_channels": shapes.dim("decoder.conv_out.weight", 0)?,
        "block_out_channels": channels,
        "down_block_types": vec!["DownEncoderBlock2D"; levels],
        "up_block_types": vec!["UpDecoderBlock2D"; levels],
        "layers_per_block": layers,
        "latent_channels": latent,
        "mid_block_add_attention": shapes.has("decoder.mid_block.attentions.0.to_q.weight"),
        "use_quant_conv": shapes.has("quant_conv.weight"),
        "use_post_quant_conv": shapes.has("post_quant_conv.weight"),
    }))
}

/// A CLIP text encoder's `config.json` (transformers' `CLIPTextConfig`) from its tensors.
/// `projection` is `text_projection`'s output width for `CLIPTextModelWithProjection`.
///
/// # Errors
/// A message naming the tensor that is missing or a width that is not whole heads.
pub fn clip_config(
    shapes: &Shapes<'_>,
    act: &str,
    projection: Option<usize>,
) -> Result<Value, String> {
    let mut config = clip_shape_config(shapes, projection)?;
    let hidden = config["hidden_size"].as_u64().and_then(|h| usize::try_from(h).ok()).unwrap_or(0);
    if hidden % HEAD_CHANNELS != 0 {
        return Err(format!(
            "a text encoder {hidden} wide is not whole {HEAD_CHANNELS}-channel heads (CLIP's)"
        ));
    }
    config["num_attention_heads"] = json!(hidden / HEAD_CHANNELS);
    config["hidden_act"] = json!(act);
    config["layer_norm_eps"] = json!(1e-5);
    Ok(config)
}

/// The part of a CLIP text encoder's `config.json` the tensors' shapes determine.
///
/// # Errors
/// A message naming the tensor that is missing.
pub fn clip_shape_config(shapes: &Shapes<'_>, projection: Option<usize>) -> Result<Value, String> {
    let text =
        if shapes.has("text_model.embeddings.token_embedding.weight") { "text_model." } else { "" };
    let embedding = format!("{text}embeddings.token_embedding.weight");
    let vocab = shapes.dim(&embedding, 0)?;
    let hidden = shapes.dim(&embedding, 1)?;
    let layers = shapes.count(&format!("{text}encoder.layers."), ".self_attn.q_proj.weight");
    if layers < 2 {
        return Err(format!("a text encoder with {layers} layers"));
    }
    let mut config = json!({
        "architectures": [if projection.is_some() { "CLIPTextModelWithProjection" } else { "CLIPTextModel" }],
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": shapes.dim(&format!("{text}encoder.layers.0.mlp.fc1.weight"), 0)?,
        "num_hidden_layers": layers,
        "max_position_embeddings": shapes.dim(&format!("{text}embeddings.position_embedding.weight"), 0)?,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    });
    if let Some(projection) = projection {
        config["projection_dim"] = json!(projection);
    }
    Ok(config)
}

/// `unet/config.json` from the UNet's tensors. `pooled` is the width of SDXL's pooled text
/// embedding (`text_encoder_2`'s projection), which with 6 time ids makes `add_embedding`'s input.
///
/// # Errors
/// A message naming what is missing or inconsistent.
pub fn unet_config(
    shapes: &Shapes<'_>,
    architecture: CheckpointArchitecture,
    pooled: Option<usize>,
) -> Result<Value, String> {
    let sdxl = architecture == CheckpointArchitecture::SdxlBase;
    let mut config = unet_shape_config(shapes, if sdxl { pooled } else { None })?;
    if sdxl && config.get("addition_embed_type").is_none() {
        return Err("an SDXL UNet without label_emb".to_owned());
    }
    let channels: Vec<usize> = serde_json::from_value(config["block_out_channels"].clone())
        .map_err(|err| err.to_string())?;
    config["attention_head_dim"] = if architecture == CheckpointArchitecture::Sd1 {
        json!(SD1_HEADS)
    } else {
        if let Some(bad) = channels.iter().find(|&&c| c % HEAD_CHANNELS != 0) {
            return Err(format!(
                "a level {bad} channels wide is not whole {HEAD_CHANNELS}-channel heads"
            ));
        }
        json!(channels.iter().map(|c| c / HEAD_CHANNELS).collect::<Vec<_>>())
    };
    config["norm_num_groups"] = json!(NORM_GROUPS);
    config["norm_eps"] = json!(1e-5);
    config["sample_size"] = json!(match architecture {
        CheckpointArchitecture::SdxlBase => 128,
        CheckpointArchitecture::Sd1 => 64,
        CheckpointArchitecture::Sd2 => 96,
    });
    Ok(config)
}

/// The part of `unet/config.json` the tensors' shapes determine; with `pooled` (SDXL's pooled
/// text width) the `text_time` added conditioning too.
///
/// # Errors
/// A message naming what is missing or inconsistent.
pub fn unet_shape_config(shapes: &Shapes<'_>, pooled: Option<usize>) -> Result<Value, String> {
    let levels = shapes.indices("down_blocks.").len();
    if levels == 0 {
        return Err("no input_blocks: the UNet is missing".to_owned());
    }
    let conv_in = shapes.get("conv_in.weight").ok_or("no input_blocks.0.0 convolution")?;
    let first = conv_in[0];
    let channels: Vec<usize> = (0..levels)
        .map(|level| shapes.dim(&format!("down_blocks.{level}.resnets.0.conv1.weight"), 0))
        .collect::<Result<_, _>>()?;
    let layers = shapes.count("down_blocks.0.resnets.", ".conv1.weight");
    let depth = |prefix: String| {
        shapes.count(&format!("{prefix}.transformer_blocks."), ".attn1.to_q.weight")
    };
    let down_attention: Vec<bool> = (0..levels)
        .map(|level| shapes.has(&format!("down_blocks.{level}.attentions.0.proj_in.weight")))
        .collect();
    let up_attention: Vec<bool> = (0..levels)
        .map(|level| shapes.has(&format!("up_blocks.{level}.attentions.0.proj_in.weight")))
        .collect();
    let reversed: Vec<bool> = down_attention.iter().rev().copied().collect();
    if up_attention != reversed {
        return Err(format!(
            "cross-attention in down levels {down_attention:?} but in up levels {up_attention:?}"
        ));
    }
    let down_depth: Vec<usize> = (0..levels)
        .map(|level| {
            if down_attention[level] {
                depth(format!("down_blocks.{level}.attentions.0"))
            } else {
                1
            }
        })
        .collect();
    let up_depth: Vec<usize> =
        (0..levels)
            .map(|level| {
                if up_attention[level] {
                    depth(format!("up_blocks.{level}.attentions.0"))
                } else {
                    1
                }
            })
            .collect();
    let mid_attention = shapes.has("mid_block.attentions.0.proj_in.weight");
    if mid_attention {
        let mid_depth = depth("mid_block.attentions.0".to_owned());
        let bottom = down_depth[levels - 1];
        if down_attention[levels - 1] && mid_depth != bottom {
            return Err(format!(
                "the mid block has {mid_depth} transformer layers, the bottom level {bottom}"
            ));
        }
    }
    let attention_name = (0..levels)
        .filter(|&level| down_attention[level])
        .map(|level| format!("down_blocks.{level}.attentions.0"))
        .chain(mid_attention.then(|| "mid_block.attentions.0".to_owned()))
        .next()
        .ok_or("no cross-attention anywhere in the UNet")?;
    let cross =
        shapes.dim(&format!("{attention_name}.transformer_blocks.0.attn2.to_k.weight"), 1)?;
    let linear =
        shapes.get(&format!("{attention_name}.proj_in.weight")).is_some_and(|s| s.len() == 2);
    let time_dim = shapes.dim("time_embedding.linear_1.weight", 0)?;
    let mut config = json!({
        "_class_name": "UNet2DConditionModel",
        "in_channels": conv_in[1],
        "out_channels": shapes.dim("conv_out.weight", 0)?,
        "block_out_channels": channels,
        "down_block_types": down_attention.iter()
            .map(|&a| if a { "CrossAttnDownBlock2D" } else { "DownBlock2D" }).collect::<Vec<_>>(),
        "up_block_types": up_attention.iter()
            .map(|&a| if a { "CrossAttnUpBlock2D" } else { "UpBlock2D" }).collect::<Vec<_>>(),
        "mid_block_type": if mid_attention { json!("UNetMidBlock2DCrossAttn") } else { json!("UNetMidBlock2D") },
        "layers_per_block": layers,
        "transformer_layers_per_block": down_depth,
        "cross_attention_dim": cross,
        "use_linear_projection": linear,
        "conv_in_kernel": conv_in.get(2).copied().unwrap_or(3),
        "conv_out_kernel": shapes.dim("conv_out.weight", 2)?,
    });
    let reversed_down: Vec<usize> = down_depth.iter().rev().copied().collect();
    if up_depth != reversed_down {
        config["reverse_transformer_layers_per_block"] = json!(up_depth);
    }
    if time_dim != 4 * first {
        config["time_embedding_dim"] = json!(time_dim);
    }
    if let Some(pooled) = pooled {
        let input = shapes.dim("add_embedding.linear_1.weight", 1)?;
        let ids = input.checked_sub(pooled).filter(|rest| rest % 6 == 0).ok_or_else(|| {
            format!("label_emb takes {input}, which is not the {pooled}-wide pooled embedding + 6 time ids")
        })?;
        config["addition_embed_type"] = json!("text_time");
        config["addition_time_embed_dim"] = json!(ids / 6);
        config["projection_class_embeddings_input_dim"] = json!(input);
    }
    Ok(config)
}
