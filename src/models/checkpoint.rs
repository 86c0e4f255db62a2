//! What a single-file checkpoint is, read from its safetensors header alone (tensor names and
//! shapes; no tensor data): SDXL base, SD 1.x or SD 2.x with the original Stability/CompVis key
//! names — or something we refuse before any work, named after what it looks like (Flux, SD3,
//! an SDXL refiner, a 9-channel inpainting UNet, a LoRA, a lone VAE…).
//!
//! The rules follow what diffusers' `infer_diffusers_model_type` and ComfyUI's model detection
//! look at, without their magic layer indices: which text encoders are there and under which
//! prefix (CLIP ViT-L as `…transformer.text_model.*`, OpenCLIP as `…model.*` with fused
//! `in_proj` attention), the UNet's input channels, and the added conditioning.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::ModelError;
use super::safetensors_header::SafetensorsHeader;

/// Prefix of the UNet in original checkpoints.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// Prefix of the VAE in original checkpoints.
pub const VAE_PREFIX: &str = "first_stage_model.";
/// SDXL's CLIP ViT-L (`conditioner.embedders.0`, transformers names under `transformer.`).
pub const SDXL_CLIP_L_PREFIX: &str = "conditioner.embedders.0.transformer.";
/// SDXL's OpenCLIP ViT-bigG (`conditioner.embedders.1`, `open_clip` names).
pub const SDXL_OPENCLIP_PREFIX: &str = "conditioner.embedders.1.model.";
/// SD 1.x's CLIP ViT-L.
pub const SD1_CLIP_L_PREFIX: &str = "cond_stage_model.transformer.";
/// SD 2.x's OpenCLIP ViT-H.
pub const SD2_OPENCLIP_PREFIX: &str = "cond_stage_model.model.";

/// The architectures a single file can be loaded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointArchitecture {
    /// SDXL base: CLIP ViT-L + OpenCLIP ViT-bigG, `text_time` conditioning.
    SdxlBase,
    /// SD 1.x: CLIP ViT-L.
    Sd1,
    /// SD 2.x: OpenCLIP ViT-H (the penultimate layer).
    Sd2,
}

impl CheckpointArchitecture {
    /// Name for messages and listings.
    pub fn label(self) -> &'static str {
        match self {
            Self::SdxlBase => "SDXL",
            Self::Sd1 => "SD 1.x",
            Self::Sd2 => "SD 2.x",
        }
    }
}

/// What the header says about a loadable checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::struct_excessive_bools, reason = "one flag per thing the header can show")]
pub struct CheckpointInfo {
    /// The architecture.
    pub architecture: CheckpointArchitecture,
    /// A `v_pred` tensor is present: the ComfyUI/A1111 mark of a v-prediction model.
    pub v_prediction_key: bool,
    /// A `ztsnr` tensor is present: trained with zero terminal SNR (ComfyUI's mark).
    pub zero_terminal_snr_key: bool,
    /// The file carries its VAE (`first_stage_model.*`).
    pub has_vae: bool,
    /// The file carries an EMA copy (`model_ema.*`), which is not loaded.
    pub has_ema: bool,
}

/// The names of a header, for the checks below.
struct Names<'a> {
    header: &'a SafetensorsHeader,
}

impl Names<'_> {
    fn has(&self, name: &str) -> bool {
        self.header.tensors.contains_key(name)
    }

    fn any_prefix(&self, prefix: &str) -> bool {
        self.header
            .tensors
            .range(prefix.to_owned()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(prefix))
    }

    fn any_containing(&self, part: &str) -> bool {
        self.header.tensors.keys().any(|name| name.contains(part))
    }

    fn shape(&self, name: &str) -> Option<&[u64]> {
        self.header.tensors.get(name).map(|entry| entry.shape.as_slice())
    }
}

fn refuse(path: &Path, looks_like: impl Into<String>) -> ModelError {
    ModelError::UnsupportedCheckpoint { looks_like: looks_like.into(), path: path.to_path_buf() }
}

/// True when the names are a LoRA adapter's (kohya, diffusers/peft, `LyCORIS`).
pub fn is_lora_name(name: &str) -> bool {
    name.starts_with("lora_unet_")
        || name.starts_with("lora_te")
        || name.starts_with("lycoris_")
        || [
            ".lora_down.weight",
            ".lora_up.weight",
            ".lora_A.weight",
            ".lora_B.weight",
            ".lora.down.weight",
            ".lora.up.weight",
            ".hada_w1_a",
            ".lokr_w1",
        ]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// Where a lone VAE file's tensors live and how they are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VaeNaming {
    /// Original names (`encoder.down.0.block.0…`), as A1111's `models/VAE` files, possibly
    /// under `first_stage_model.` or `vae.`.
    Original,
    /// diffusers names (`encoder.down_blocks.0.resnets.0…`), as `diffusion_pytorch_model.safetensors`.
    Diffusers,
}

/// The naming of a VAE-only tensor set, if it is one (and no UNet is there).
pub fn vae_naming<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<VaeNaming> {
    let mut original = false;
    let mut diffusers = false;
    for name in names {
        if name.starts_with(UNET_PREFIX) || name.starts_with("down_blocks.") {
            return None;
        }
        let bare =
            name.strip_prefix(VAE_PREFIX).or_else(|| name.strip_prefix("vae.")).unwrap_or(name);
        original |= bare.starts_with("encoder.down.") || bare.starts_with("decoder.up.");
        diffusers |=
            bare.starts_with("encoder.down_blocks.") || bare.starts_with("decoder.up_blocks.");
    }
    match (original, diffusers) {
        (true, false) => Some(VaeNaming::Original),
        (false, true) => Some(VaeNaming::Diffusers),
        _ => None,
    }
}

/// Reads what a single-file checkpoint is, or refuses it naming what it looks like.
///
/// # Errors
/// [`ModelError::UnsupportedCheckpoint`] for anything that is not an SDXL base, SD 1.x or
/// SD 2.x checkpoint we can map (the message says what the file looks like).
pub fn inspect_checkpoint(header: &SafetensorsHeader) -> Result<CheckpointInfo, ModelError> {
    let path = header.path.as_path();
    let names = Names { header };
    if header.tensors.is_empty() {
        return Err(refuse(path, "an empty safetensors file (no tensors)"));
    }
    if header.tensors.keys().any(|name| is_lora_name(name)) {
        return Err(refuse(path, "a LoRA adapter, not a checkpoint (use it with --lora)"));
    }
    if names.any_containing("double_blocks.") && names.any_containing("single_blocks.") {
        return Err(refuse(
            path,
            "a Flux.1 transformer (double_blocks/single_blocks), not a Stable Diffusion UNet",
        ));
    }
    if names.any_containing("joint_blocks.") {
        return Err(refuse(path, "a Stable Diffusion 3 MMDiT (joint_blocks), not a UNet"));
    }
    if names.has("edm_mean") || names.has("edm_std") {
        return Err(refuse(
            path,
            "Playground v2.5 (an EDM-trained SDXL), which needs EDM sampling",
        ));
    }
    let conv_in = format!("{UNET_PREFIX}input_blocks.0.0.weight");
    let Some(conv_in_shape) = names.shape(&conv_in) else {
        return Err(refuse(path, describe_without_unet(&names)));
    };
    let in_channels = conv_in_shape.get(1).copied().unwrap_or(0);
    let clip_l_sdxl = names.any_prefix(SDXL_CLIP_L_PREFIX);
    let openclip_sdxl = names.any_prefix(SDXL_OPENCLIP_PREFIX);
    let openclip_at_0 = names.any_prefix("conditioner.embedders.0.model.");
    let clip_l_sd1 = names.any_prefix(SD1_CLIP_L_PREFIX);
    let openclip_sd2 = names.any_prefix(SD2_OPENCLIP_PREFIX);
    let label_emb = names.has(&format!("{UNET_PREFIX}label_emb.0.0.weight"));
    if openclip_at_0 && !clip_l_sdxl {
        return Err(refuse(
            path,
            "an SDXL refiner (only OpenCLIP ViT-bigG, as conditioner.embedders.0, and a UNet \
             conditioned on an aesthetic score); refiners are not supported",
        ));
    }
    let architecture = if clip_l_sdxl && openclip_sdxl {
        if !label_emb {
            return Err(refuse(path, "an SDXL text-encoder pair over a UNet without label_emb"));
        }
        CheckpointArchitecture::SdxlBase
    } else if clip_l_sd1 && !openclip_sd2 {
        CheckpointArchitecture::Sd1
    } else if openclip_sd2 && !clip_l_sd1 {
        CheckpointArchitecture::Sd2
    } else if names.any_prefix("conditioner.") || names.any_prefix("cond_stage_model.") {
        return Err(refuse(
            path,
            "a UNet with text encoders of no known SDXL or SD 1.x/2.x pairing",
        ));
    } else {
        return Err(refuse(
            path,
            "a UNet without its text encoders (a diffusion-model-only file, as ComfyUI's \
             models/diffusion_models holds); a full checkpoint is needed",
        ));
    };
    if architecture != CheckpointArchitecture::SdxlBase && label_emb {
        return Err(refuse(
            path,
            format!(
                "a {} UNet with a class embedding (label_emb: unCLIP or an upscaler)",
                architecture.label()
            ),
        ));
    }
    if in_channels != 4 {
        let what = match in_channels {
            9 => format!(
                "a 9-channel inpainting {} UNet (latents + mask + masked image); inpainting models \
                 are not supported yet",
                architecture.label()
            ),
            8 => format!("an 8-channel {} UNet (instruct-pix2pix)", architecture.label()),
            other => {
                format!("a {} UNet taking {other} input channels, not 4", architecture.label())
            }
        };
        return Err(refuse(path, what));
    }
    Ok(CheckpointInfo {
        architecture,
        v_prediction_key: names.has("v_pred"),
        zero_terminal_snr_key: names.has("ztsnr"),
        has_vae: names.has(&format!("{VAE_PREFIX}decoder.conv_in.weight")),
        has_ema: names.any_prefix("model_ema."),
    })
}

/// What a file without an original-layout UNet looks like.
fn describe_without_unet(names: &Names<'_>) -> String {
    let keys = names.header.tensors.keys().map(String::as_str);
    if vae_naming(keys).is_some() {
        return "a lone VAE, not a checkpoint (use it with --vae)".to_owned();
    }
    if names.has("conv_in.weight") && names.any_prefix("down_blocks.") {
        return "a lone diffusers UNet (diffusers names, no text encoders or VAE)".to_owned();
    }
    if names.any_prefix("text_model.") || names.any_prefix("encoder.layers.") {
        return "a lone text encoder".to_owned();
    }
    if names.any_prefix(UNET_PREFIX) {
        return "a diffusion model of an unknown architecture (no input_blocks.0.0 convolution)"
            .to_owned();
    }
    "no Stable Diffusion UNet (no model.diffusion_model.input_blocks.0.0.weight)".to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::models::safetensors_header::TensorEntry;

    fn header(entries: &[(&str, &[u64])]) -> SafetensorsHeader {
        let tensors: BTreeMap<String, TensorEntry> = entries
            .iter()
            .map(|(name, shape)| {
                (
                    (*name).to_owned(),
                    TensorEntry {
                        dtype: "F16".to_owned(),
                        shape: shape.to_vec(),
                        data_offsets: (0, 0),
                    },
                )
            })
            .collect();
        SafetensorsHeader {
            path: PathBuf::from("x.safetensors"),
            tensors,
            metadata: BTreeMap::new(),
            data_bytes: 0,
        }
    }

    const CONV_IN: &str = "model.diffusion_model.input_blocks.0.0.weight";

    #[test]
    fn architectures_are_told_apart_by_their_text_encoders() {
        let sdxl = header(&[
            (CONV_IN, &[320, 4, 3, 3]),
            ("model.diffusion_model.label_emb.0.0.weight", &[1280, 2816]),
            ("conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", &[768]),
            ("conditioner.embedders.1.model.ln_final.weight", &[1280]),
            ("first_stage_model.decoder.conv_in.weight", &[512, 4, 3, 3]),
            ("v_pred", &[]),
        ]);
        let info = inspect_checkpoint(&sdxl).expect("sdxl");
        assert_eq!(info.architecture, CheckpointArchitecture::SdxlBase);
        assert!(info.v_prediction_key && info.has_vae && !info.has_ema);
        let sd1 = header(&[
            (CONV_IN, &[320, 4, 3, 3]),
            ("cond_stage_model.transformer.text_model.final_layer_norm.weight", &[768]),
            ("model_ema.decay", &[]),
        ]);
        let info = inspect_checkpoint(&sd1).expect("sd1");
        assert_eq!(info.architecture, CheckpointArchitecture::Sd1);
        assert!(info.has_ema && !info.has_vae);
        let sd2 = header(&[
            (CONV_IN, &[320, 4, 3, 3]),
            ("cond_stage_model.model.ln_final.weight", &[1024]),
        ]);
        assert_eq!(
            inspect_checkpoint(&sd2).expect("sd2").architecture,
            CheckpointArchitecture::Sd2
        );
    }

    #[test]
    fn what_cannot_be_mapped_is_refused_by_what_it_looks_like() {
        let refused = |entries: &[(&str, &[u64])]| match inspect_checkpoint(&header(entries)) {
            Err(ModelError::UnsupportedCheckpoint { looks_like, .. }) => looks_like,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(
            refused(&[(CONV_IN, &[320, 9, 3, 3]), ("cond_stage_model.transformer.x", &[1])])
                .contains("9-channel inpainting")
        );
        assert!(
            refused(&[
                ("double_blocks.0.img_attn.qkv.weight", &[1]),
                ("single_blocks.0.linear1.weight", &[1])
            ])
            .contains("Flux")
        );
        assert!(
            refused(&[("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", &[1])])
                .contains("Stable Diffusion 3")
        );
        assert!(
            refused(&[
                (CONV_IN, &[384, 4, 3, 3]),
                ("conditioner.embedders.0.model.ln_final.weight", &[1280])
            ])
            .contains("refiner")
        );
        assert!(refused(&[("lora_unet_x.lora_down.weight", &[1])]).contains("LoRA"));
        assert!(
            refused(&[
                ("encoder.down.0.block.0.conv1.weight", &[1]),
                ("decoder.up.0.block.0.conv1.weight", &[1])
            ])
            .contains("lone VAE")
        );
        assert!(refused(&[(CONV_IN, &[320, 4, 3, 3])]).contains("without its text encoders"));
        assert!(refused(&[]).contains("empty"));
    }

    #[test]
    fn lone_vae_files_are_named_by_their_naming() {
        assert_eq!(
            vae_naming(["first_stage_model.encoder.down.0.block.0.conv1.weight"]),
            Some(VaeNaming::Original)
        );
        assert_eq!(
            vae_naming(["decoder.up_blocks.0.resnets.0.conv1.weight"]),
            Some(VaeNaming::Diffusers)
        );
        assert_eq!(
            vae_naming([CONV_IN, "first_stage_model.encoder.down.0.block.0.conv1.weight"]),
            None
        );
    }
}
