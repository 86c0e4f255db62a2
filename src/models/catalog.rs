//! The catalog of known checkpoints (REFERENCE §2) and how a user's model key resolves.
//!
//! A key is a display name, a hub repo id, a local diffusers folder or a single `.safetensors`
//! file. The catalog only names things; finding the files is `models::hub`'s job.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
}

/// The known models, in menu order.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
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
        Self { entries }
    }

    /// A catalog with exactly these entries (tests, custom catalogs).
    pub fn from_entries(entries: Vec<CatalogEntry>) -> Self {
        Self { entries }
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

    /// The models an "all models" sweep runs: every catalog entry.
    pub fn sweep_models(&self) -> Vec<ModelRef> {
        self.entries.iter().map(Self::entry_ref).collect()
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

    /// Display names, for menus and error messages.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.display_name.as_str()).collect()
    }
}

fn local_display_name(path: &Path) -> String {
    let stem = if path.is_file() { path.file_stem() } else { path.file_name() };
    stem.map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned())
}

/// `org/name` with the characters the hub allows.
fn looks_like_hub_id(key: &str) -> bool {
    let mut parts = key.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let valid = |s: &str| {
        !s.is_empty()
            && !s.starts_with(['.', '-'])
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    valid(org) && valid(name) && !key.contains("..")
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
