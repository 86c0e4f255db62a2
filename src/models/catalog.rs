//! The catalog of known checkpoints (REFERENCE §2) and how a user's model key resolves.
//!
//! A key is a display name, a hub repo id, a local diffusers folder or a single `.safetensors`
//! file — or the name of a checkpoint, LoRA or VAE found in the user's models folders
//! ([`ModelLibrary`]). The catalog only names things; finding the files is `models::hub`'s job.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::checkpoint::CheckpointArchitecture;
use super::library::{LocalKind, LocalModel, ModelLibrary};
use crate::vocab::SamplerKind;

/// The model the window and the CLI start with.
pub const DEFAULT_MODEL: &str = "SDXL Base 1.0";

/// Settings a model is made for, used when neither the user nor the profile chose.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelDefaults {
    /// Native width in pixels.
    pub width: u32,
    /// Native height in pixels.
    pub height: u32,
    /// Recommended steps.
    pub steps: u32,
    /// Recommended CFG scale (0 = no guidance).
    pub cfg: f32,
    /// Recommended sampler.
    pub scheduler: SamplerKind,
}

impl ModelDefaults {
    /// SDXL-class defaults: 1024², 30 steps, CFG 7, the config's own scheduler.
    pub const SDXL: Self =
        Self { width: 1024, height: 1024, steps: 30, cfg: 7.0, scheduler: SamplerKind::Default };
    /// SDXL Turbo: 512², 1 step, no guidance, Euler a (trailing spacing from its config).
    pub const TURBO: Self =
        Self { width: 512, height: 512, steps: 1, cfg: 0.0, scheduler: SamplerKind::EulerA };
    /// SD 1.x/2.x-class defaults: 512², 30 steps, CFG 7.5.
    pub const SD15: Self =
        Self { width: 512, height: 512, steps: 30, cfg: 7.5, scheduler: SamplerKind::Default };
}

/// What kind of weights a catalog entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum EntryKind {
    /// A complete pipeline (diffusers folders, or a single checkpoint file).
    Pipeline,
    /// A LoRA adapter applied on top of `base` (a catalog display name).
    Lora {
        /// Display name of the base model.
        base: String,
        /// The adapter's file inside the repo.
        file: String,
    },
    /// A VAE to swap into a pipeline (`--vae`): a diffusers VAE folder or repo
    /// (`config.json` + weights, as madebyollin/sdxl-vae-fp16-fix) or a lone VAE file.
    Vae,
}

impl EntryKind {
    /// Whether this is a LoRA adapter rather than a whole pipeline.
    pub fn is_lora(&self) -> bool {
        matches!(self, Self::Lora { .. })
    }
}

/// One known model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Name shown in menus and written in metadata.
    pub display_name: String,
    /// Hugging Face repo id.
    pub hub_id: String,
    /// Pipeline or adapter.
    pub kind: EntryKind,
    /// Native settings.
    pub defaults: ModelDefaults,
}

/// Where a resolved model's files come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "location")]
pub enum ModelSource {
    /// A Hugging Face repo (through the standard cache).
    Hub(String),
    /// A local folder (diffusers layout expected; detected on load).
    LocalDir(PathBuf),
    /// A local single file (`.safetensors`).
    LocalFile(PathBuf),
}

/// A model key resolved against the catalog: what the engine loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    /// The name written in file metadata and logs.
    pub display_name: String,
    /// Where the files are.
    pub source: ModelSource,
    /// Pipeline or adapter (local and unlisted models are assumed pipelines until detected).
    pub kind: EntryKind,
    /// Defaults until the loaded config says otherwise.
    pub defaults: ModelDefaults,
}

impl ModelRef {
    /// The id recorded as `model_id`: the hub id or the path.
    pub fn model_id(&self) -> String {
        match &self.source {
            ModelSource::Hub(id) => id.clone(),
            ModelSource::LocalDir(path) | ModelSource::LocalFile(path) => {
                path.display().to_string()
            }
        }
    }
}

/// A LoRA resolved against the catalog and the models folders, with its weight (negative
/// allowed): what the engine merges into the model it loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraChoice {
    /// The LoRA (kind [`EntryKind::Lora`]).
    pub lora: ModelRef,
    /// The multiplier (`<lora:name:w>`, diffusers' `lora_scale`).
    pub weight: f32,
}

/// A model key that names no model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownModel {
    /// No key at all.
    #[error("no model given; valid: {valid}")]
    Empty {
        /// The catalog names, comma-separated.
        valid: String,
    },
    /// Not a catalog name, a hub id or an existing path.
    #[error(
        "unknown model {key:?} (not a catalog name, hub id `org/name`, or existing path); valid: {valid}"
    )]
    Unknown {
        /// The key as given (trimmed).
        key: String,
        /// The catalog names, comma-separated.
        valid: String,
    },
    /// Not a LoRA of the catalog or the models folders, a `.safetensors` file or a hub id.
    #[error(
        "unknown LoRA {key:?} (not a LoRA of the catalog or the models folders, an existing \
         .safetensors file, or a hub id `org/name`); LoRAs found: {valid}"
    )]
    UnknownLora {
        /// The key as given (trimmed).
        key: String,
        /// The LoRA names, comma-separated.
        valid: String,
    },
}

/// The known models, in menu order, and the files found in the user's models folders.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
    library: ModelLibrary,
}

fn entry(display_name: &str, hub_id: &str, defaults: ModelDefaults) -> CatalogEntry {
    CatalogEntry {
        display_name: display_name.to_owned(),
        hub_id: hub_id.to_owned(),
        kind: EntryKind::Pipeline,
        defaults,
    }
}

impl Catalog {
    /// The models of REFERENCE §2 (plus SD 1.5 and 2.1).
    pub fn builtin() -> Self {
        let sdxl = ModelDefaults::SDXL;
        let entries = vec![
            entry("SDXL Base 1.0", "stabilityai/stable-diffusion-xl-base-1.0", sdxl),
            entry("SDXL Turbo", "stabilityai/sdxl-turbo", ModelDefaults::TURBO),
            entry("RealVis XL V5.0", "SG161222/RealVisXL_V5.0", sdxl),
            entry("CyberRealistic XL v5.8", "John6666/cyberrealistic-xl-v58-sdxl", sdxl),
            entry(
                "Animagine XL 4.0",
                "cagliostrolab/animagine-xl-4.0",
                ModelDefaults { cfg: 5.0, steps: 28, scheduler: SamplerKind::EulerA, ..sdxl },
            ),
            entry("Juggernaut XL", "stablediffusionapi/juggernautxl", sdxl),
            entry("DreamShaper XL", "Lykon/dreamshaper-xl-1-0", sdxl),
            entry("EpicRealism XL", "AiAF/epicrealismXL-vx1Finalkiss_Checkpoint_SDXL", sdxl),
            CatalogEntry {
                display_name: "Pixel Art XL".to_owned(),
                hub_id: "nerijs/pixel-art-xl".to_owned(),
                kind: EntryKind::Lora {
                    base: "SDXL Base 1.0".to_owned(),
                    file: "pixel-art-xl.safetensors".to_owned(),
                },
                defaults: sdxl,
            },
            entry("Anime Illust Diffusion XL", "Eugeoter/anime_illust_diffusion_xl", sdxl),
            entry("SD 1.5", "stable-diffusion-v1-5/stable-diffusion-v1-5", ModelDefaults::SD15),
            entry(
                "SD 2.1",
                "stabilityai/stable-diffusion-2-1",
                ModelDefaults { width: 768, height: 768, ..ModelDefaults::SD15 },
            ),
        ];
        Self { entries, library: ModelLibrary::default() }
    }

    /// A catalog with exactly these entries (tests, custom catalogs).
    pub fn from_entries(entries: Vec<CatalogEntry>) -> Self {
        Self { entries, library: ModelLibrary::default() }
    }

    /// The same catalog with the checkpoints, LoRAs and VAEs of the user's models folders
    /// (`--models-dir`): resolvable by name, in the menus, and in the all-models sweep.
    #[must_use]
    pub fn with_library(mut self, library: ModelLibrary) -> Self {
        self.library = library;
        self
    }

    /// What the models folders hold.
    pub fn library(&self) -> &ModelLibrary {
        &self.library
    }

    fn local_ref(model: &LocalModel) -> ModelRef {
        let defaults = match model.kind {
            LocalKind::Checkpoint(CheckpointArchitecture::Sd1) => ModelDefaults::SD15,
            LocalKind::Checkpoint(CheckpointArchitecture::Sd2) => {
                ModelDefaults { width: 768, height: 768, ..ModelDefaults::SD15 }
            }
            _ => ModelDefaults::SDXL,
        };
        ModelRef {
            display_name: model.name.clone(),
            source: ModelSource::LocalFile(model.path.clone()),
            kind: if model.kind == LocalKind::Vae { EntryKind::Vae } else { EntryKind::Pipeline },
            defaults,
        }
    }

    /// The native settings of a catalog entry or a models-folder checkpoint named `name`.
    pub fn defaults_for(&self, name: &str) -> Option<ModelDefaults> {
        self.find(name).map(|entry| entry.defaults).or_else(|| {
            self.library
                .find(name, |kind| matches!(kind, LocalKind::Checkpoint(_)))
                .map(|local| Self::local_ref(local).defaults)
        })
    }

    /// The checkpoints of the models folders, as models to load.
    pub fn local_models(&self) -> Vec<ModelRef> {
        self.library.checkpoints.iter().map(Self::local_ref).collect()
    }

    /// Every entry in menu order.
    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// The entry with this display name or hub id (case-insensitive).
    pub fn find(&self, key: &str) -> Option<&CatalogEntry> {
        let key = key.trim();
        self.entries.iter().find(|e| {
            e.display_name.eq_ignore_ascii_case(key) || e.hub_id.eq_ignore_ascii_case(key)
        })
    }

    /// The models an "all models" sweep runs: every catalog entry but VAEs, then every
    /// checkpoint of the models folders.
    pub fn sweep_models(&self) -> Vec<ModelRef> {
        self.entries
            .iter()
            .filter(|e| e.kind != EntryKind::Vae)
            .map(Self::entry_ref)
            .chain(self.local_models())
            .collect()
    }

    /// Resolves a `--vae` key: a VAE entry's name, an existing folder or `.safetensors` file, or
    /// a hub repo id (`org/name`, or `org/name/file.safetensors`).
    ///
    /// # Errors
    /// [`UnknownModel`] when the key is none of these.
    pub fn resolve_vae(&self, key: &str) -> Result<ModelRef, UnknownModel> {
        let key = key.trim();
        let vae_names = || {
            self.entries
                .iter()
                .filter(|e| e.kind == EntryKind::Vae)
                .map(|e| e.display_name.clone())
                .chain(self.library.vaes.iter().map(|vae| vae.name.clone()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if key.is_empty() {
            return Err(UnknownModel::Empty { valid: vae_names() });
        }
        if let Some(entry) = self.find(key).filter(|e| e.kind == EntryKind::Vae) {
            return Ok(Self::entry_ref(entry));
        }
        if let Some(local) = self.library.find(key, |kind| kind == LocalKind::Vae) {
            return Ok(Self::local_ref(local));
        }
        let path = Path::new(key);
        let source = if path.is_dir() {
            ModelSource::LocalDir(path.to_path_buf())
        } else if path.is_file() {
            ModelSource::LocalFile(path.to_path_buf())
        } else if looks_like_hub_id(key) {
            ModelSource::Hub(key.to_owned())
        } else {
            return Err(UnknownModel::Unknown { key: key.to_owned(), valid: vae_names() });
        };
        let display_name = match &source {
            ModelSource::Hub(id) => id.clone(),
            _ => local_display_name(path),
        };
        Ok(ModelRef { display_name, source, kind: EntryKind::Vae, defaults: ModelDefaults::SDXL })
    }

    /// Resolves a LoRA key (`--lora`, a `<lora:name:w>` prompt tag, a restored image's LoRA):
    /// a LoRA entry of the catalog, a LoRA of the models folders by name (A1111's: the file
    /// stem), an existing `.safetensors` file, or a hub repo id (`org/name`, or
    /// `org/name/file.safetensors`). The result has kind [`EntryKind::Lora`] with an empty `base`
    /// (it goes on whatever model runs) and the file in the repo, when known.
    ///
    /// # Errors
    /// [`UnknownModel`] when the key is none of these, listing the LoRAs found.
    pub fn resolve_lora(&self, key: &str) -> Result<ModelRef, UnknownModel> {
        let key = key.trim();
        let lora_names = || {
            self.entries
                .iter()
                .filter(|e| matches!(e.kind, EntryKind::Lora { .. }))
                .map(|e| e.display_name.clone())
                .chain(self.library.loras.iter().map(|lora| lora.name.clone()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if key.is_empty() {
            return Err(UnknownModel::Empty { valid: lora_names() });
        }
        let lora_ref = |display_name: String, source: ModelSource, file: String| ModelRef {
            display_name,
            source,
            kind: EntryKind::Lora { base: String::new(), file },
            defaults: ModelDefaults::SDXL,
        };
        if let Some(entry) = self.find(key)
            && let EntryKind::Lora { file, .. } = &entry.kind
        {
            let source = ModelSource::Hub(entry.hub_id.clone());
            return Ok(lora_ref(entry.display_name.clone(), source, file.clone()));
        }
        if let Some(local) = self.library.find(key, |kind| kind == LocalKind::Lora) {
            let source = ModelSource::LocalFile(local.path.clone());
            return Ok(lora_ref(local.name.clone(), source, String::new()));
        }
        let path = Path::new(key);
        if path.is_file() {
            let source = ModelSource::LocalFile(path.to_path_buf());
            return Ok(lora_ref(local_display_name(path), source, String::new()));
        }
        if looks_like_hub_id(key) && !path.is_dir() {
            return Ok(lora_ref(key.to_owned(), ModelSource::Hub(key.to_owned()), String::new()));
        }
        Err(UnknownModel::UnknownLora { key: key.to_owned(), valid: lora_names() })
    }

    /// A catalog LoRA entry run as a model (Pixel Art XL): its base model and the LoRA at
    /// weight 1, as diffusers' `load_lora_weights` on the base gives. `None` for other models.
    ///
    /// # Errors
    /// [`UnknownModel`] when the base is not in the catalog.
    pub fn split_lora_entry(
        &self,
        model: &ModelRef,
    ) -> Option<Result<(ModelRef, ModelRef), UnknownModel>> {
        let EntryKind::Lora { base, file } = &model.kind else { return None };
        if base.is_empty() {
            return None;
        }
        let base = match self.find(base).filter(|e| e.kind == EntryKind::Pipeline) {
            Some(entry) => Self::entry_ref(entry),
            None => {
                return Some(Err(UnknownModel::Unknown {
                    key: base.clone(),
                    valid: self.names().join(", "),
                }));
            }
        };
        let lora = ModelRef {
            kind: EntryKind::Lora { base: String::new(), file: file.clone() },
            ..model.clone()
        };
        Some(Ok((base, lora)))
    }

    fn entry_ref(entry: &CatalogEntry) -> ModelRef {
        ModelRef {
            display_name: entry.display_name.clone(),
            source: ModelSource::Hub(entry.hub_id.clone()),
            kind: entry.kind.clone(),
            defaults: entry.defaults,
        }
    }

    /// Resolves a user's model key: catalog name or hub id, an existing path, or any
    /// `org/name` hub id.
    ///
    /// # Errors
    /// [`UnknownModel`], listing the catalog names.
    pub fn resolve(&self, key: &str) -> Result<ModelRef, UnknownModel> {
        let key = key.trim();
        if key.is_empty() {
            return Err(UnknownModel::Empty { valid: self.names().join(", ") });
        }
        if let Some(entry) = self.find(key) {
            return Ok(Self::entry_ref(entry));
        }
        if let Some(local) = self.library.find(key, |kind| matches!(kind, LocalKind::Checkpoint(_)))
        {
            return Ok(Self::local_ref(local));
        }
        let path = Path::new(key);
        if path.is_dir() {
            return Ok(ModelRef {
                display_name: local_display_name(path),
                source: ModelSource::LocalDir(path.to_path_buf()),
                kind: EntryKind::Pipeline,
                defaults: ModelDefaults::SDXL,
            });
        }
        if path.is_file() {
            return Ok(ModelRef {
                display_name: local_display_name(path),
                source: ModelSource::LocalFile(path.to_path_buf()),
                kind: EntryKind::Pipeline,
                defaults: ModelDefaults::SDXL,
            });
        }
        if looks_like_hub_id(key) {
            return Ok(ModelRef {
                display_name: key.to_owned(),
                source: ModelSource::Hub(key.to_owned()),
                kind: EntryKind::Pipeline,
                defaults: ModelDefaults::SDXL,
            });
        }
        Err(UnknownModel::Unknown { key: key.to_owned(), valid: self.names().join(", ") })
    }

    /// Display names (the catalog's, then the models folders' checkpoints), for menus and
    /// error messages.
    pub fn names(&self) -> Vec<&str> {
        self.entries
            .iter()
            .map(|e| e.display_name.as_str())
            .chain(self.library.checkpoints.iter().map(|m| m.name.as_str()))
            .collect()
    }
}

fn local_display_name(path: &Path) -> String {
    let stem = if path.is_file() { path.file_stem() } else { path.file_name() };
    stem.map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned())
}

/// `org/name` with the characters the hub allows, or `org/name/path/file.safetensors` naming
/// one checkpoint inside a repo.
fn looks_like_hub_id(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    let valid = |s: &str| {
        !s.is_empty()
            && !s.starts_with(['.', '-'])
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let names_a_file = parts.len() > 2
        && parts.last().is_some_and(|file| super::layout::is_safetensors_file(file));
    (parts.len() == 2 || names_a_file)
        && parts.iter().all(|part| valid(part))
        && !key.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_ids_and_refuses_junk() {
        let catalog = Catalog::builtin();
        let turbo = catalog.resolve("sdxl turbo").expect("by name");
        assert_eq!(turbo.source, ModelSource::Hub("stabilityai/sdxl-turbo".into()));
        assert_eq!(turbo.defaults, ModelDefaults::TURBO);
        let by_id = catalog.resolve("SG161222/RealVisXL_V5.0").expect("by id");
        assert_eq!(by_id.display_name, "RealVis XL V5.0");
        let unlisted = catalog.resolve("someone/my-sdxl").expect("any hub id");
        assert_eq!(unlisted.source, ModelSource::Hub("someone/my-sdxl".into()));
        let err = catalog.resolve("no such thing").expect_err("junk").to_string();
        assert!(err.contains("SDXL Base 1.0"), "{err}");
        assert!(catalog.resolve("../no/such/folder").is_err());
    }

    #[test]
    fn pixel_art_is_a_lora_on_base() {
        let catalog = Catalog::builtin();
        let entry = catalog.find("Pixel Art XL").expect("listed");
        assert!(matches!(&entry.kind, EntryKind::Lora { base, .. } if base == "SDXL Base 1.0"));
    }
}
