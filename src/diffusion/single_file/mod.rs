//! Single-file checkpoints (one `.safetensors` with the original Stability/CompVis key names):
//! what the file is ([`crate::models::checkpoint`]), the diffusers configs of its components
//! ([`infer`]) and each component's tensors by diffusers name ([`names`]), ready for the same
//! model builders a diffusers folder feeds.
//!
//! Like diffusers' `from_single_file(path, config=…)`, a diffusers folder of configs (no
//! weights needed) can stand in for the inferred configs, tokenizers and scheduler: for files
//! whose hyper-parameters are not the architecture's (the tiny test models), or to pin them.
//! Without one, a single file needs nothing but itself: the tokenizers are the program's own
//! CLIP vocabulary ([`ClipTokenizer::clip`]).

pub mod infer;
pub mod names;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use self::infer::{SD2_TEXT_LAYERS, Shapes};
use self::names::NameMap;
use super::error::{DiffusionError, Result, read_json, read_text};
use super::tokenizer::ClipTokenizer;
use super::weights::ComponentWeights;
use crate::models::checkpoint::{
    CheckpointArchitecture, CheckpointInfo, SD1_CLIP_L_PREFIX, SD2_OPENCLIP_PREFIX,
    SDXL_CLIP_L_PREFIX, SDXL_OPENCLIP_PREFIX, VAE_PREFIX, VaeNaming, inspect_checkpoint,
    vae_naming,
};
use crate::models::safetensors_header::{SafetensorsHeader, read_header};

/// SDXL's VAE scaling factor (`sd_xl_base.yaml`'s `scale_factor`).
pub const SDXL_SCALING_FACTOR: f64 = 0.13025;
/// SD 1.x/2.x's VAE scaling factor.
pub const SD_SCALING_FACTOR: f64 = 0.18215;

/// One component: its diffusers config and its tensors.
#[derive(Debug, Clone)]
pub struct Component {
    /// The `config.json` the component is built from.
    pub config: Value,
    /// Its tensors by diffusers name.
    pub weights: ComponentWeights,
}

/// A text encoder and its tokenizer.
#[derive(Debug, Clone)]
pub struct TextEncoderPart {
    /// The encoder.
    pub encoder: Component,
    /// Its tokenizer.
    pub tokenizer: ClipTokenizer,
}

/// A single-file checkpoint, read and mapped; nothing is loaded yet.
#[derive(Debug, Clone)]
pub struct SingleFile {
    /// The file.
    pub path: PathBuf,
    /// What the header says it is.
    pub info: CheckpointInfo,
    /// The UNet.
    pub unet: Component,
    /// The VAE, when the file has one.
    pub vae: Option<Component>,
    /// The text encoders in pipeline order (SDXL: CLIP ViT-L, then OpenCLIP bigG).
    pub text_encoders: Vec<TextEncoderPart>,
    /// `scheduler_config.json`.
    pub scheduler: Value,
    /// SDXL's `force_zeros_for_empty_prompt` (true in its repo); false for SD.
    pub force_zeros_for_empty_prompt: bool,
}

fn mapped(path: &Path, header: &Arc<SafetensorsHeader>, map: NameMap) -> ComponentWeights {
    ComponentWeights::Mapped {
        file: path.to_path_buf(),
        header: Arc::clone(header),
        map: Arc::new(map),
    }
}

fn shape_error<'a>(path: &'a Path, component: &'a str) -> impl Fn(String) -> DiffusionError + 'a {
    move |message| DiffusionError::config(component, message, path)
}

/// A diffusers config folder given in place of the inferred configs.
struct ConfigFolder<'a> {
    folder: &'a Path,
    index: Value,
}

impl ConfigFolder<'_> {
    fn read(&self, file: &str, what: &'static str) -> Result<Value> {
        read_json(what, &self.folder.join(file))
    }
}

impl SingleFile {
    /// Reads the header of `path`, refuses what cannot be mapped (before any tensor is read),
    /// and infers every component's config from the tensors and the architecture.
    ///
    /// # Errors
    /// A corrupt or truncated file, an unsupported architecture (named), tensors that do not
    /// make a consistent model.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, None)
    }

    /// As [`Self::open`], but with configs, tokenizers and scheduler taken from `config` (a
    /// diffusers folder; no weights needed) instead of inferred, as
    /// `from_single_file(path, config=folder)` does.
    ///
    /// # Errors
    /// As [`Self::open`]; missing or malformed config files; a folder of another family.
    pub fn open_with(path: &Path, config: Option<&Path>) -> Result<Self> {
        Self::from_header(Arc::new(read_header(path)?), config)
    }

    /// As [`Self::open_with`], from a header already read (tensor data is read only when the
    /// pipeline loads, from `header.path`).
    ///
    /// # Errors
    /// As [`Self::open_with`].
    pub fn from_header(header: Arc<SafetensorsHeader>, config: Option<&Path>) -> Result<Self> {
        let path = header.path.clone();
        let path = path.as_path();
        let info = inspect_checkpoint(&header)?;
        let folder =
            config.map(|folder| ConfigFolder::open(folder, info.architecture)).transpose()?;
        let folder = folder.as_ref();
        let (text_encoders, pooled) = text_encoder_parts(path, &header, info.architecture, folder)?;
        let names = || header.tensors.keys().map(String::as_str);
        let unet_map = names::unet_names(names());
        let unet_config = match folder {
            Some(folder) => folder.read("unet/config.json", "UNet config")?,
            None => infer::unet_config(
                &Shapes { header: &header, map: &unet_map },
                info.architecture,
                pooled,
            )
            .map_err(shape_error(path, "UNet"))?,
        };
        let scaling = match info.architecture {
            CheckpointArchitecture::SdxlBase => SDXL_SCALING_FACTOR,
            _ => SD_SCALING_FACTOR,
        };
        let vae = if info.has_vae {
            let map = names::vae_names(names(), VAE_PREFIX);
            let config = match folder {
                Some(folder) => folder.read("vae/config.json", "VAE config")?,
                None => infer::vae_config(&Shapes { header: &header, map: &map }, scaling)
                    .map_err(shape_error(path, "VAE"))?,
            };
            Some(Component { config, weights: mapped(path, &header, map) })
        } else {
            None
        };
        let mut file = Self {
            path: path.to_path_buf(),
            info,
            unet: Component { config: unet_config, weights: mapped(path, &header, unet_map) },
            vae,
            text_encoders,
            scheduler: infer::scheduler_config(&info),
            force_zeros_for_empty_prompt: info.architecture == CheckpointArchitecture::SdxlBase,
        };
        if let Some(folder) = folder {
            folder.apply_tokenizers_and_scheduler(&mut file)?;
        }
        Ok(file)
    }
}

impl<'a> ConfigFolder<'a> {
    /// A diffusers config folder, checked to be of `architecture`'s family.
    fn open(folder: &'a Path, architecture: CheckpointArchitecture) -> Result<Self> {
        let index: Value = read_json("model_index.json", &folder.join("model_index.json"))?;
        let sdxl =
            index.get("_class_name").and_then(Value::as_str).is_some_and(|c| c.contains("XL"));
        if sdxl != (architecture == CheckpointArchitecture::SdxlBase) {
            return Err(DiffusionError::config(
                "_class_name",
                format!("the config folder is not a {} pipeline", architecture.label()),
                &folder.join("model_index.json"),
            ));
        }
        Ok(Self { folder, index })
    }

    /// The folder's tokenizers, scheduler and `force_zeros_for_empty_prompt` replace the
    /// program's.
    fn apply_tokenizers_and_scheduler(&self, file: &mut SingleFile) -> Result<()> {
        for (index, part) in file.text_encoders.iter_mut().enumerate() {
            part.tokenizer = ClipTokenizer::from_folder(
                &self.folder.join(format!("tokenizer{}", suffix(index))),
            )?;
        }
        let scheduler_path = self.folder.join("scheduler/scheduler_config.json");
        file.scheduler = serde_json::from_str(&read_text("scheduler config", &scheduler_path)?)
            .map_err(|err| DiffusionError::config("scheduler", err.to_string(), &scheduler_path))?;
        if let Some(zeros) = self.index.get("force_zeros_for_empty_prompt").and_then(Value::as_bool)
        {
            file.force_zeros_for_empty_prompt = zeros;
        }
        Ok(())
    }
}

/// `""`, `"_2"`: the suffix of the `index`-th text encoder's and tokenizer's folders.
fn suffix(index: usize) -> String {
    if index == 0 { String::new() } else { format!("_{}", index + 1) }
}

/// The text encoders of `architecture` (configs inferred, or from `folder`), and SDXL's pooled
/// width.
fn text_encoder_parts(
    path: &Path,
    header: &Arc<SafetensorsHeader>,
    architecture: CheckpointArchitecture,
    folder: Option<&ConfigFolder<'_>>,
) -> Result<(Vec<TextEncoderPart>, Option<usize>)> {
    let text_config = |index: usize, inferred: Result<Value>| -> Result<Value> {
        match folder {
            Some(folder) => folder
                .read(&format!("text_encoder{}/config.json", suffix(index)), "text encoder config"),
            None => inferred,
        }
    };
    Ok(match architecture {
        CheckpointArchitecture::SdxlBase => {
            let clip_l =
                clip_l_part(path, header, SDXL_CLIP_L_PREFIX, "<|endoftext|>", |inferred| {
                    text_config(0, inferred)
                })?;
            let (big_g, projection) =
                open_clip_part(path, header, SDXL_OPENCLIP_PREFIX, None, true, |inferred| {
                    text_config(1, inferred)
                })?;
            (vec![clip_l, big_g], projection)
        }
        CheckpointArchitecture::Sd1 => {
            let clip_l =
                clip_l_part(path, header, SD1_CLIP_L_PREFIX, "<|endoftext|>", |inferred| {
                    text_config(0, inferred)
                })?;
            (vec![clip_l], None)
        }
        CheckpointArchitecture::Sd2 => {
            // The layers used: 23 (the penultimate of ViT-H), or what the config folder says.
            let layers = match folder {
                Some(folder) => folder.read("text_encoder/config.json", "text encoder config")?
                    ["num_hidden_layers"]
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok()),
                None => Some(SD2_TEXT_LAYERS),
            };
            let (h, _) =
                open_clip_part(path, header, SD2_OPENCLIP_PREFIX, layers, false, |inferred| {
                    text_config(0, inferred)
                })?;
            (vec![h], None)
        }
    })
}

/// CLIP ViT-L stored under `prefix` with transformers' names; `config` receives the inferred
/// config (or its error) and returns the one to use.
fn clip_l_part(
    path: &Path,
    header: &Arc<SafetensorsHeader>,
    prefix: &str,
    pad: &str,
    config: impl FnOnce(Result<Value>) -> Result<Value>,
) -> Result<TextEncoderPart> {
    let map = names::clip_names(header.tensors.keys().map(String::as_str), prefix);
    let inferred = infer::clip_config(&Shapes { header, map: &map }, "quick_gelu", None)
        .map_err(shape_error(path, "CLIP ViT-L"));
    Ok(TextEncoderPart {
        encoder: Component { config: config(inferred)?, weights: mapped(path, header, map) },
        tokenizer: ClipTokenizer::clip(pad)?,
    })
}

/// An OpenCLIP text tower under `prefix`: `layers` of its resblocks (all when `None`), with
/// its projection when `with_projection`. Returns the part and the projection width.
fn open_clip_part(
    path: &Path,
    header: &Arc<SafetensorsHeader>,
    prefix: &str,
    layers: Option<usize>,
    with_projection: bool,
    config: impl FnOnce(Result<Value>) -> Result<Value>,
) -> Result<(TextEncoderPart, Option<usize>)> {
    let error = shape_error(path, "OpenCLIP");
    let dim = |name: &str, axis: usize| -> Result<usize> {
        header
            .tensors
            .get(&format!("{prefix}{name}"))
            .and_then(|entry| entry.shape.get(axis))
            .and_then(|&d| usize::try_from(d).ok())
            .ok_or_else(|| error(format!("no tensor {prefix}{name}")))
    };
    let hidden = dim("token_embedding.weight", 1)?;
    let stored_layers = (0..header.tensors.len())
        .take_while(|i| {
            header.tensors.contains_key(&format!("{prefix}transformer.resblocks.{i}.ln_1.weight"))
        })
        .count();
    let layers = layers.map_or(stored_layers, |wanted| wanted.min(stored_layers));
    let projection = if with_projection { Some(dim("text_projection", 1)?) } else { None };
    let map = names::open_clip_names(
        header.tensors.keys().map(String::as_str),
        prefix,
        hidden,
        layers,
        with_projection,
    );
    let inferred =
        infer::clip_config(&Shapes { header, map: &map }, "gelu", projection).map_err(&error);
    let part = TextEncoderPart {
        encoder: Component { config: config(inferred)?, weights: mapped(path, header, map) },
        tokenizer: ClipTokenizer::clip("!")?,
    };
    Ok((part, projection))
}

/// A lone VAE file: original names (A1111's `models/VAE`, with or without a prefix) or diffusers
/// names. Its config is inferred with `scaling_factor` (the model's), unless `config` (a
/// diffusers `vae` folder's `config.json`) is given.
///
/// # Errors
/// Not a VAE; inconsistent tensors; unreadable files.
pub fn vae_file(path: &Path, scaling_factor: f64, config: Option<&Path>) -> Result<Component> {
    let header = Arc::new(read_header(path)?);
    let names = || header.tensors.keys().map(String::as_str);
    let map = match vae_naming(names()) {
        Some(VaeNaming::Original) => {
            let prefix = [VAE_PREFIX, "vae."]
                .into_iter()
                .find(|prefix| names().any(|name| name.starts_with(prefix)))
                .unwrap_or("");
            names::vae_names(names(), prefix)
        }
        Some(VaeNaming::Diffusers) => names()
            .map(|name| {
                (
                    name.to_owned(),
                    names::Source { name: name.to_owned(), transform: names::Transform::Identity },
                )
            })
            .collect(),
        None => {
            return Err(DiffusionError::config(
                "VAE",
                "not a VAE (no encoder.down/decoder.up tensors, or a UNet too)",
                path,
            ));
        }
    };
    let config = match config {
        Some(config_path) => read_json("VAE config", config_path)?,
        None => infer::vae_config(&Shapes { header: &header, map: &map }, scaling_factor)
            .map_err(shape_error(path, "VAE"))?,
    };
    Ok(Component { config, weights: mapped(path, &header, map) })
}
