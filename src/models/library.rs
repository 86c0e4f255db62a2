//! Checkpoint folders as users keep them (`--models-dir` / `IMAGELAB_MODELS_DIR`): AUTOMATIC1111's
//! `models/Stable-diffusion`, `models/Lora` (and `models/LyCORIS`), `models/VAE`; ComfyUI's
//! `models/checkpoints`, `models/loras`, `models/vae` (and `models/diffusion_models` / `unet`,
//! whose UNet-only files are listed as refused). A folder with none of these is scanned as it is.
//!
//! Every file is judged by its safetensors header — tensor names and shapes, not its folder or
//! file name: a checkpoint (with its architecture), a LoRA, a VAE, or refused with the reason
//! (pickles are never opened, let alone loaded; Flux/SD3/refiners/inpainting are named). Names
//! are the file's path below its category folder without the extension, as A1111 titles them
//! (`XL/juggernautXL_v9`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checkpoint::{CheckpointArchitecture, inspect_checkpoint, is_lora_name, vae_naming};
use super::layout::{is_pickle_file, is_safetensors_file};
use super::safetensors_header::read_header;

/// What a local file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "architecture")]
pub enum LocalKind {
    /// A single-file checkpoint of this architecture.
    Checkpoint(CheckpointArchitecture),
    /// A LoRA adapter.
    Lora,
    /// A VAE.
    Vae,
}

impl LocalKind {
    /// `checkpoint (SDXL)`, `lora`, `vae`.
    pub fn label(self) -> String {
        match self {
            Self::Checkpoint(architecture) => format!("checkpoint ({})", architecture.label()),
            Self::Lora => "lora".to_owned(),
            Self::Vae => "vae".to_owned(),
        }
    }
}

/// A usable file found in a models folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalModel {
    /// Its name: the path below its category folder, without the extension.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// What it is.
    pub kind: LocalKind,
    /// File size.
    pub bytes: u64,
}

/// A file found and refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedFile {
    /// The file.
    pub path: PathBuf,
    /// Why it cannot be used.
    pub reason: String,
}

/// Everything found in the models folders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelLibrary {
    /// The folders scanned.
    pub roots: Vec<PathBuf>,
    /// Checkpoints, by name.
    pub checkpoints: Vec<LocalModel>,
    /// LoRAs, by name.
    pub loras: Vec<LocalModel>,
    /// VAEs, by name.
    pub vaes: Vec<LocalModel>,
    /// Files that cannot be used, with the reason.
    pub refused: Vec<RefusedFile>,
}

/// Category folders of A1111 and ComfyUI, looked for in a root and in its `models/`.
const CATEGORY_FOLDERS: [&str; 9] = [
    "Stable-diffusion",
    "checkpoints",
    "diffusion_models",
    "unet",
    "Lora",
    "LyCORIS",
    "loras",
    "VAE",
    "vae",
];

/// How deep sub-folders are followed below a category folder.
const MAX_DEPTH: usize = 8;

impl ModelLibrary {
    /// Scans `roots` (A1111 or ComfyUI installs, their `models/` folders, or any folder of
    /// files). Unreadable folders are skipped; nothing is loaded.
    pub fn scan(roots: &[PathBuf]) -> Self {
        let mut library = Self { roots: roots.to_vec(), ..Self::default() };
        for root in roots {
            let mut categories: Vec<PathBuf> = Vec::new();
            for base in [root.clone(), root.join("models")] {
                for name in CATEGORY_FOLDERS {
                    let folder = base.join(name);
                    // Case-insensitive file systems list `VAE` and `vae` once.
                    if folder.is_dir() && !categories.iter().any(|known| same_dir(known, &folder)) {
                        categories.push(folder);
                    }
                }
            }
            if categories.is_empty() {
                categories.push(root.clone());
            }
            for category in categories {
                library.scan_folder(&category, &category, 0);
            }
        }
        for list in [&mut library.checkpoints, &mut library.loras, &mut library.vaes] {
            list.sort_by_key(|model| model.name.to_lowercase());
            disambiguate(list);
        }
        library.refused.sort_by(|a, b| a.path.cmp(&b.path));
        library
    }

    fn scan_folder(&mut self, category: &Path, folder: &Path, depth: usize) {
        let Ok(entries) = fs_err::read_dir(folder) else { return };
        let mut paths: Vec<PathBuf> =
            entries.filter_map(Result::ok).map(|entry| entry.path()).collect();
        paths.sort();
        for path in paths {
            let file_name =
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if file_name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                if depth < MAX_DEPTH {
                    self.scan_folder(category, &path, depth + 1);
                }
                continue;
            }
            if is_pickle_file(&file_name) {
                self.refused.push(RefusedFile {
                    path,
                    reason: "a pickle file: never loaded (unpickling can run code); use a .safetensors file"
                        .to_owned(),
                });
                continue;
            }
            if !is_safetensors_file(&file_name) {
                continue; // previews, yaml configs, notes
            }
            match judge(&path) {
                Ok(kind) => {
                    let name = path
                        .strip_prefix(category)
                        .unwrap_or(&path)
                        .with_extension("")
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    let bytes = fs_err::metadata(&path).map_or(0, |m| m.len());
                    let model = LocalModel { name, path, kind, bytes };
                    match kind {
                        LocalKind::Checkpoint(_) => self.checkpoints.push(model),
                        LocalKind::Lora => self.loras.push(model),
                        LocalKind::Vae => self.vaes.push(model),
                    }
                }
                Err(reason) => self.refused.push(RefusedFile { path, reason }),
            }
        }
    }

    /// Every usable file, checkpoints first.
    pub fn all(&self) -> impl Iterator<Item = &LocalModel> {
        self.checkpoints.iter().chain(&self.loras).chain(&self.vaes)
    }

    /// The checkpoint, LoRA or VAE of this `kind` named `name` (case-insensitive; the file stem
    /// alone also matches when it is unique).
    pub fn find(&self, name: &str, kind: fn(LocalKind) -> bool) -> Option<&LocalModel> {
        let name = name.trim();
        let candidates = || self.all().filter(|model| kind(model.kind));
        if let Some(found) = candidates().find(|model| model.name.eq_ignore_ascii_case(name)) {
            return Some(found);
        }
        let mut by_stem = candidates().filter(|model| {
            model
                .path
                .file_stem()
                .is_some_and(|stem| stem.to_string_lossy().eq_ignore_ascii_case(name))
        });
        match (by_stem.next(), by_stem.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs_err::canonicalize(a), fs_err::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Names that two roots share get the root's position: `name (2)`.
fn disambiguate(list: &mut [LocalModel]) {
    for index in 1..list.len() {
        let (before, rest) = list.split_at_mut(index);
        let current = &mut rest[0];
        let taken = before.iter().filter(|m| m.name.eq_ignore_ascii_case(&current.name)).count();
        if taken > 0 {
            current.name = format!("{} ({})", current.name, taken + 1);
        }
    }
}

/// What a `.safetensors` file is, from its header; the reason when it is refused.
fn judge(path: &Path) -> Result<LocalKind, String> {
    let header = read_header(path).map_err(|err| err.to_string())?;
    let names = || header.tensors.keys().map(String::as_str);
    if names().any(is_lora_name) {
        return Ok(LocalKind::Lora);
    }
    if vae_naming(names()).is_some() {
        return Ok(LocalKind::Vae);
    }
    match inspect_checkpoint(&header) {
        Ok(info) => Ok(LocalKind::Checkpoint(info.architecture)),
        Err(super::ModelError::UnsupportedCheckpoint { looks_like, .. }) => {
            Err(format!("looks like {looks_like}"))
        }
        Err(other) => Err(other.to_string()),
    }
}
