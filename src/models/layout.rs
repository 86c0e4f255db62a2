//! What a local folder or file holds: diffusers folders, a single-file checkpoint with the
//! original Stability key names, or a LoRA adapter. Decided from `model_index.json` and the
//! safetensors header's tensor names (no tensor data is read), never assumed from the name.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checkpoint::{VaeNaming, is_lora_name, vae_naming};
use super::error::ModelError;
use super::safetensors_header::read_header;

/// Extensions of pickle-based weight files, never loaded.
pub const PICKLE_EXTENSIONS: [&str; 5] = ["bin", "ckpt", "pt", "pth", "pkl"];

/// True when `name` is a pickle-based weight file (by extension).
pub fn is_pickle_file(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| PICKLE_EXTENSIONS.iter().any(|p| p.eq_ignore_ascii_case(ext)))
}

/// True when `name` is a `.safetensors` file.
pub fn is_safetensors_file(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| ext.eq_ignore_ascii_case("safetensors"))
}

/// The model family a single-file checkpoint's keys point to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointFamily {
    /// SDXL (`conditioner.embedders.*`).
    Sdxl,
    /// SD 1.x / 2.x (`cond_stage_model.*`).
    Sd1Or2,
    /// UNet keys but no recognisable text encoder.
    Unknown,
}

/// What a single `.safetensors` file holds, from its tensor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "family")]
pub enum SafetensorsKind {
    /// A whole pipeline in one file with the original Stability key names.
    Checkpoint(CheckpointFamily),
    /// A LoRA adapter (kohya `lora_unet_*`, `*.lora_down.weight`, PEFT `*.lora_A.weight`).
    Lora,
    /// A lone VAE (original or diffusers names), for `--vae`.
    Vae(VaeNaming),
    /// Neither (a lone diffusers component, an embedding, something else).
    Other,
}

/// The detected layout of a local model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "layout", content = "path")]
pub enum Layout {
    /// A diffusers folder (`model_index.json` at its root).
    Diffusers(PathBuf),
    /// A single-file checkpoint.
    SingleFile(PathBuf, CheckpointFamily),
    /// A LoRA adapter file.
    Lora(PathBuf),
}

impl Layout {
    /// Errors for layouts that cannot be run yet; a diffusers folder passes through.
    ///
    /// # Errors
    /// [`ModelError::NotSupportedYet`] naming the file.
    pub fn require_diffusers(self) -> Result<PathBuf, ModelError> {
        match self {
            Self::Diffusers(root) => Ok(root),
            Self::SingleFile(path, family) => Err(ModelError::NotSupportedYet {
                what: format!(
                    "single-file {} checkpoint (original Stability key names)",
                    family_label(family)
                ),
                path,
            }),
            Self::Lora(path) => Err(ModelError::LoraNotModel { path }),
        }
    }
}

/// The error for a single-file checkpoint until that support lands.
pub fn single_file_not_supported(path: PathBuf, family: CheckpointFamily) -> ModelError {
    ModelError::NotSupportedYet {
        what: format!(
            "single-file {} checkpoint (original Stability key names)",
            family_label(family)
        ),
        path,
    }
}

fn family_label(family: CheckpointFamily) -> &'static str {
    match family {
        CheckpointFamily::Sdxl => "SDXL",
        CheckpointFamily::Sd1Or2 => "SD 1.x/2.x",
        CheckpointFamily::Unknown => "Stable Diffusion",
    }
}

/// Classifies tensor names the way the loaders of A1111/ComfyUI/diffusers tell them apart.
pub fn classify_tensor_names<'a>(
    names: impl IntoIterator<Item = &'a str> + Clone,
) -> SafetensorsKind {
    let mut unet = false;
    let mut sdxl_text = false;
    let mut sd_text = false;
    for name in names.clone() {
        if is_lora_name(name) {
            return SafetensorsKind::Lora;
        }
        unet |= name.starts_with("model.diffusion_model.");
        sdxl_text |= name.starts_with("conditioner.embedders.");
        sd_text |= name.starts_with("cond_stage_model.");
    }
    match (unet, sdxl_text, sd_text) {
        (_, true, _) => SafetensorsKind::Checkpoint(CheckpointFamily::Sdxl),
        (_, false, true) => SafetensorsKind::Checkpoint(CheckpointFamily::Sd1Or2),
        (true, false, false) => SafetensorsKind::Checkpoint(CheckpointFamily::Unknown),
        _ => vae_naming(names).map_or(SafetensorsKind::Other, SafetensorsKind::Vae),
    }
}

/// Validates a `.safetensors` header and classifies the file by its tensor names.
///
/// # Errors
/// A corrupt header ([`ModelError::InvalidSafetensors`]); I/O errors.
pub fn classify_safetensors(path: &Path) -> Result<SafetensorsKind, ModelError> {
    let header = read_header(path)?;
    Ok(classify_tensor_names(header.tensors.keys().map(String::as_str)))
}

/// Detects what a local folder or file holds.
///
/// # Errors
/// Pickle-only folders or pickle files ([`ModelError::UnsafeWeights`]), corrupt headers,
/// folders with nothing recognisable, safetensors files that are neither a checkpoint nor a LoRA.
pub fn detect_layout(path: &Path) -> Result<Layout, ModelError> {
    if path.is_dir() {
        if path.join("model_index.json").is_file() {
            return Ok(Layout::Diffusers(path.to_path_buf()));
        }
        let mut safetensors = Vec::new();
        let mut pickles = Vec::new();
        for entry in fs_err::read_dir(path)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_safetensors_file(&name) {
                safetensors.push(entry.path());
            } else if is_pickle_file(&name) {
                pickles.push(name);
            }
        }
        safetensors.sort();
        return match (safetensors.as_slice(), pickles.is_empty()) {
            ([single], _) => detect_file(single),
            ([], false) => Err(unsafe_weights(&path.display().to_string(), &pickles)),
            ([], true) => Err(ModelError::UnknownLayout {
                reason: "no model_index.json (diffusers) and no .safetensors file in the folder"
                    .to_owned(),
                path: path.to_path_buf(),
            }),
            (several, _) => Err(ModelError::UnknownLayout {
                reason: format!(
                    "no model_index.json and {} .safetensors files; pass the one to use",
                    several.len()
                ),
                path: path.to_path_buf(),
            }),
        };
    }
    detect_file(path)
}

fn detect_file(path: &Path) -> Result<Layout, ModelError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if is_pickle_file(&name) {
        return Err(unsafe_weights(&path.display().to_string(), &[name]));
    }
    if !is_safetensors_file(&name) {
        return Err(ModelError::UnknownLayout {
            reason: "not a .safetensors file or a diffusers folder".to_owned(),
            path: path.to_path_buf(),
        });
    }
    match classify_safetensors(path)? {
        SafetensorsKind::Checkpoint(family) => Ok(Layout::SingleFile(path.to_path_buf(), family)),
        SafetensorsKind::Lora => Ok(Layout::Lora(path.to_path_buf())),
        SafetensorsKind::Vae(_) => Err(ModelError::UnknownLayout {
            reason: "a lone VAE, not a model (use it with --vae)".to_owned(),
            path: path.to_path_buf(),
        }),
        // Say what it looks like (Flux, SD3, a lone UNet…) when the header tells.
        SafetensorsKind::Other => {
            Err(match super::checkpoint::inspect_checkpoint(&read_header(path)?) {
                Err(refused @ ModelError::UnsupportedCheckpoint { .. }) => refused,
                _ => ModelError::UnknownLayout {
                    reason: "tensor names are neither a Stable Diffusion checkpoint nor a LoRA"
                        .to_owned(),
                    path: path.to_path_buf(),
                },
            })
        }
    }
}

/// The error for pickle-only weights, listing up to five files.
pub(crate) fn unsafe_weights(what: &str, files: &[String]) -> ModelError {
    let mut listed: Vec<&str> = files.iter().map(String::as_str).take(5).collect();
    let more = files.len().saturating_sub(listed.len());
    let extra = format!("… {more} more");
    if more > 0 {
        listed.push(&extra);
    }
    ModelError::UnsafeWeights { what: what.to_owned(), files: listed.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_real_key_names() {
        let sdxl = [
            "model.diffusion_model.input_blocks.0.0.weight",
            "conditioner.embedders.1.model.ln_final.weight",
            "first_stage_model.decoder.conv_in.weight",
        ];
        assert_eq!(
            classify_tensor_names(sdxl),
            SafetensorsKind::Checkpoint(CheckpointFamily::Sdxl)
        );
        let sd15 = [
            "model.diffusion_model.out.2.bias",
            "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        ];
        assert_eq!(
            classify_tensor_names(sd15),
            SafetensorsKind::Checkpoint(CheckpointFamily::Sd1Or2)
        );
        let kohya = [
            "lora_unet_down_blocks_1_attentions_0_proj_in.alpha",
            "lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight",
        ];
        assert_eq!(classify_tensor_names(kohya), SafetensorsKind::Lora);
        let peft =
            ["unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"];
        assert_eq!(classify_tensor_names(peft), SafetensorsKind::Lora);
        assert_eq!(
            classify_tensor_names(["conv_in.weight", "down_blocks.0.resnets.0.conv1.weight"]),
            SafetensorsKind::Other
        );
    }

    #[test]
    fn pickle_extensions_are_recognised() {
        for name in ["unet/diffusion_pytorch_model.bin", "model.ckpt", "x.PT", "a.pth"] {
            assert!(is_pickle_file(name), "{name}");
        }
        assert!(!is_pickle_file("model.safetensors"));
    }
}
