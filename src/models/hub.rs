//! Finds a model's files on disk: local diffusers folders, and hub repos through the standard
//! Hugging Face cache shared with Python tools (`models--org--name/{blobs,refs,snapshots}`).
//!
//! Offline (`HF_HUB_OFFLINE`) the cache alone answers, and a missing file is named together
//! with the command that fetches it. Online, hf-hub's blocking client downloads only what a
//! pipeline needs: `model_index.json`, then each used component's config and `.safetensors`
//! weights (the `fp16` variant when preferred and present, per component), never pickles.
//!
//! Resume: hf-hub 0.4 downloads into `blobs/<etag>.part` and, on the next attempt, continues
//! from that file's length with an HTTP range request; within one call it retries from the
//! current position ([`HubConfig::retries`]). It does not hash what it downloaded: use
//! `imagelab models verify`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::catalog::{EntryKind, ModelRef, ModelSource};
use super::checkpoint::{CheckpointInfo, inspect_checkpoint};
use super::error::ModelError;
use super::layout::{
    Layout, SafetensorsKind, classify_safetensors, detect_layout, is_pickle_file,
    is_safetensors_file, unsafe_weights,
};
use super::safetensors_header::read_header;
pub use super::weight_files::WeightVariant;
use super::weight_files::{WeightChoiceError, WeightFiles, choose_weight_files};

/// Where the hub cache is and how to reach the hub, read once from the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// The hub cache root (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// `HF_HUB_OFFLINE` is true: never touch the network.
    pub offline: bool,
    /// `HF_TOKEN` (else the token file `HF_TOKEN_PATH` / `$HF_HOME/token`), for gated repos.
    pub token: Option<String>,
    /// `HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: String,
    /// In-process download retries, each resuming from the bytes already written.
    pub retries: usize,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("endpoint", &self.endpoint)
            .field("retries", &self.retries)
            .finish()
    }
}

/// True for the values `huggingface_hub` treats as true (`1`, `ON`, `YES`, `TRUE`).
fn env_flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        matches!(v.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
    })
}

impl HubConfig {
    /// Builds the config from a variable lookup (`HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`,
    /// `HF_TOKEN`, `HF_ENDPOINT`): the front end passes the process environment, tests a map.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let hf_home = var("HF_HOME").map_or_else(
            || {
                let cache = var("XDG_CACHE_HOME").map_or_else(
                    || {
                        var("HOME").or_else(|| var("USERPROFILE")).map_or_else(
                            || PathBuf::from(".cache"),
                            |home| PathBuf::from(home).join(".cache"),
                        )
                    },
                    PathBuf::from,
                );
                cache.join("huggingface")
            },
            PathBuf::from,
        );
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map_or_else(|| hf_home.join("hub"), PathBuf::from);
        let token = var("HF_TOKEN").or_else(|| {
            let path = var("HF_TOKEN_PATH").map_or_else(|| hf_home.join("token"), PathBuf::from);
            fs_err::read_to_string(path).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
        });
        Self {
            cache_dir,
            offline: env_flag(var("HF_HUB_OFFLINE").as_deref()),
            token,
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".to_owned()),
            retries: 3,
        }
    }

    /// An offline config over `cache_dir` (tests, containers).
    pub fn offline_at(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            offline: true,
            token: None,
            endpoint: "https://huggingface.co".to_owned(),
            retries: 0,
        }
    }

    /// The cache view of one repo.
    pub fn repo(&self, repo_id: &str) -> CachedRepo {
        CachedRepo {
            repo_id: repo_id.to_owned(),
            dir: self.cache_dir.join(format!("models--{}", repo_id.replace('/', "--"))),
        }
    }
}

/// One model repo's folder in the hub cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRepo {
    /// Hub repo id.
    pub repo_id: String,
    /// `<cache>/models--org--name`.
    pub dir: PathBuf,
}

impl CachedRepo {
    /// The commit `refs/main` points to, when present.
    pub fn main_revision(&self) -> Option<String> {
        fs_err::read_to_string(self.dir.join("refs").join("main"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// Every snapshot folder (commit hash, path), sorted by name.
    pub fn snapshots(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = fs_err::read_dir(self.dir.join("snapshots")) else { return Vec::new() };
        let mut snapshots: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        snapshots.sort();
        snapshots
    }

    /// The snapshot to use offline: `refs/main`'s, else the most recently modified one.
    pub fn current_snapshot(&self) -> Option<(String, PathBuf)> {
        if let Some(revision) = self.main_revision() {
            let dir = self.dir.join("snapshots").join(&revision);
            if dir.is_dir() {
                return Some((revision, dir));
            }
        }
        let newest = self.snapshots().into_iter().max_by_key(|(_, dir)| {
            fs_err::metadata(dir).and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH)
        });
        if let Some((revision, _)) = &newest {
            tracing::warn!(repo = %self.repo_id, %revision, "refs/main missing or stale; using the newest snapshot");
        }
        newest
    }
}

/// What happens while fetching, for progress bars (window and CLI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadEvent {
    /// The files the pipeline needs are known.
    Planned {
        /// Hub repo id.
        repo: String,
        /// How many repo files are needed.
        files: usize,
    },
    /// A needed file was already in the cache.
    AlreadyCached {
        /// Path inside the repo.
        repo_file: String,
    },
    /// A download started (or resumed).
    Started {
        /// Path inside the repo.
        repo_file: String,
        /// Size of the whole file.
        total_bytes: u64,
    },
    /// Bytes arrived (at most one event per MiB).
    Progress {
        /// Path inside the repo.
        repo_file: String,
        /// Bytes on disk so far (including resumed bytes).
        done_bytes: u64,
        /// Size of the whole file.
        total_bytes: u64,
    },
    /// A download finished.
    Finished {
        /// Path inside the repo.
        repo_file: String,
    },
}

/// The callback that receives [`DownloadEvent`]s.
pub type ProgressFn<'a> = dyn FnMut(&DownloadEvent) + 'a;

/// One pipeline component and its files on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedComponent {
    /// `unet`, `vae`, `text_encoder`, `text_encoder_2`, `tokenizer`, `tokenizer_2`, `scheduler`.
    pub name: String,
    /// The component's folder.
    pub folder: PathBuf,
    /// Its `.safetensors` weights (several when sharded); empty for tokenizers/schedulers.
    pub weights: Vec<PathBuf>,
    /// `Some("fp16")` when the variant files were chosen.
    pub variant: Option<String>,
    /// Every file used (configs, tokenizer files, weights).
    pub files: Vec<PathBuf>,
}

/// A diffusers pipeline whose needed files are all on disk and whose weights have valid headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedPipeline {
    /// Snapshot folder or local folder (holds `model_index.json`).
    pub root: PathBuf,
    /// Hub commit, for hub models.
    pub revision: Option<String>,
    /// The components used, sorted by name.
    pub components: Vec<ResolvedComponent>,
}

impl ResolvedComponent {
    /// The file of this component with this name (`config.json`, `vocab.json`…), if used.
    pub fn file(&self, file_name: &str) -> Option<&Path> {
        self.files
            .iter()
            .map(PathBuf::as_path)
            .find(|f| f.file_name().is_some_and(|n| n == file_name))
    }
}

impl ResolvedPipeline {
    /// The component with this name.
    pub fn component(&self, name: &str) -> Option<&ResolvedComponent> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Total bytes of weight files (for cache budgets and logs).
    pub fn weight_bytes(&self) -> u64 {
        self.components
            .iter()
            .flat_map(|c| &c.weights)
            .filter_map(|p| fs_err::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// A model resolved to files on disk: a diffusers pipeline or one single-file checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedModel {
    /// A diffusers folder.
    Pipeline(ResolvedPipeline),
    /// A single-file checkpoint whose header was read and recognised.
    SingleFile {
        /// The file (in a hub snapshot, or local).
        file: PathBuf,
        /// Hub commit, for hub models.
        revision: Option<String>,
        /// What the header says it is.
        info: CheckpointInfo,
    },
    /// A VAE: a folder with `config.json` + weights, or one `.safetensors` file.
    Vae {
        /// The folder or file.
        path: PathBuf,
        /// Hub commit, for hub VAEs.
        revision: Option<String>,
    },
    /// A LoRA file, recognised as one from its header.
    Lora {
        /// The `.safetensors` file.
        file: PathBuf,
        /// Hub commit, for hub LoRAs.
        revision: Option<String>,
    },
}

impl ResolvedModel {
    /// The folder or file a pipeline loads from.
    pub fn path(&self) -> &Path {
        match self {
            Self::Pipeline(pipeline) => &pipeline.root,
            Self::SingleFile { file, .. } | Self::Lora { file, .. } => file,
            Self::Vae { path, .. } => path,
        }
    }

    /// Hub commit, for hub models.
    pub fn revision(&self) -> Option<&str> {
        match self {
            Self::Pipeline(pipeline) => pipeline.revision.as_deref(),
            Self::SingleFile { revision, .. }
            | Self::Vae { revision, .. }
            | Self::Lora { revision, .. } => revision.as_deref(),
        }
    }
}

/// A hub key: `org/name`, or `org/name/path/in/repo.safetensors` naming one checkpoint.
pub fn split_hub_key(key: &str) -> (&str, Option<&str>) {
    let mut slashes = key.match_indices('/').map(|(at, _)| at);
    match (slashes.next(), slashes.next()) {
        (Some(_), Some(second)) => (&key[..second], Some(&key[second + 1..])),
        _ => (key, None),
    }
}

/// Reads and recognises a single-file checkpoint, refusing what cannot be loaded.
fn single_file(file: PathBuf, revision: Option<String>) -> Result<ResolvedModel, ModelError> {
    let info = inspect_checkpoint(&read_header(&file)?)?;
    Ok(ResolvedModel::SingleFile { file, revision, info })
}

/// Top-level `.safetensors` files of a repo listing: the candidates of a single-file repo.
fn top_level_safetensors(listing: &BTreeSet<String>) -> Vec<&String> {
    listing.iter().filter(|f| !f.contains('/') && is_safetensors_file(f)).collect()
}

/// The checkpoint a single-file repo stands for. Repos that publish versions side by side
/// (`..._v0.7.safetensors`, `..._v0.8.safetensors`) mean their newest one: the greatest name in
/// a version-aware order (digit runs compared as numbers), said in a warning that names the
/// others and how to pick one (`org/name/<file>`), so an all-models sweep still runs.
fn newest_checkpoint<'a>(repo: &str, candidates: &[&'a String]) -> Result<&'a String, ModelError> {
    if candidates.len() < 2 {
        return only_checkpoint(repo, candidates);
    }
    let Some(chosen) = candidates.iter().copied().max_by(|a, b| version_order(a, b)) else {
        return only_checkpoint(repo, candidates);
    };
    let others: Vec<&str> =
        candidates.iter().filter(|f| **f != chosen).map(|f| f.as_str()).collect();
    tracing::warn!(
        repo,
        chosen = chosen.as_str(),
        others = others.join(", "),
        "single-file repo holds several checkpoints; using the newest (name another as {repo}/<file>)"
    );
    Ok(chosen)
}

/// Orders file names as versions, case-insensitively: runs of digits compare by value, the
/// rest as text, so `v10` > `v9` and `v1.10` > `v1.9` (as version numbers, not decimals).
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn runs(text: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = text.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &text[start..i]));
                start = i;
            }
        }
        out
    }
    let (a_lower, b_lower) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    let (left, right) = (runs(&a_lower), runs(&b_lower));
    for ((a_digits, a_run), (b_digits, b_run)) in left.iter().zip(&right) {
        let order = if *a_digits && *b_digits {
            let (a_trim, b_trim) = (a_run.trim_start_matches('0'), b_run.trim_start_matches('0'));
            a_trim.len().cmp(&b_trim.len()).then_with(|| a_trim.cmp(b_trim))
        } else {
            a_run.cmp(b_run)
        };
        if order.is_ne() {
            return order;
        }
    }
    left.len().cmp(&right.len()).then_with(|| a.cmp(b))
}

/// The one checkpoint of a single-file repo, or an error listing the candidates.
fn only_checkpoint<'a>(repo: &str, candidates: &[&'a String]) -> Result<&'a String, ModelError> {
    match candidates {
        [one] => Ok(one),
        [] => Err(ModelError::UnknownLayout {
            reason: format!("hub repo {repo} has no model_index.json and no .safetensors file"),
            path: PathBuf::from(repo),
        }),
        several => Err(ModelError::UnknownLayout {
            reason: format!(
                "hub repo {repo} has no model_index.json and {} .safetensors files ({}); name the \
                 checkpoint as {repo}/<file>",
                several.len(),
                several.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
            ),
            path: PathBuf::from(repo),
        }),
    }
}

/// Resolves a model to files on disk — a diffusers pipeline or a single-file checkpoint —
/// downloading only what is needed when online (for a single-file repo, only its checkpoint).
///
/// The layout is detected, never assumed: a local folder with `model_index.json` or a repo
/// listing it is a pipeline; a local `.safetensors` file, a hub key naming one
/// (`org/name/file.safetensors`), or a repo whose only weights are one top-level
/// `.safetensors` is a single file, recognised from its header before anything loads.
///
/// # Errors
/// Missing files (offline: with the fetch command), pickle-only weights, corrupt headers,
/// unsupported architectures (named), LoRA files, download failures.
pub fn resolve_model(
    model: &ModelRef,
    config: &HubConfig,
    prefer: WeightVariant,
    progress: &mut ProgressFn<'_>,
) -> Result<ResolvedModel, ModelError> {
    if model.kind == EntryKind::Vae {
        return resolve_vae(model, config, prefer, progress);
    }
    if let EntryKind::Lora { file, .. } = &model.kind {
        return resolve_lora(model, file, config, progress);
    }
    match &model.source {
        ModelSource::LocalDir(path) | ModelSource::LocalFile(path) => match detect_layout(path)? {
            Layout::Diffusers(root) => {
                resolve_folder(&root, None, prefer, &Origin::Local).map(ResolvedModel::Pipeline)
            }
            Layout::SingleFile(file, _) => single_file(file, None),
            Layout::Lora(path) => Err(ModelError::LoraNotModel { path }),
        },
        ModelSource::Hub(key) => {
            let (repo_id, file) = split_hub_key(key);
            if config.offline {
                resolve_cached_model(repo_id, file, &model.display_name, config, prefer)
            } else {
                fetch_model(repo_id, file, &model.display_name, config, prefer, progress)
            }
        }
    }
}

/// The weight files of a diffusers VAE folder (`config.json` + `diffusion_pytorch_model*`).
fn vae_folder_files(
    listing: &BTreeSet<String>,
    prefer: WeightVariant,
    repo: &str,
) -> Result<Vec<String>, ModelError> {
    if !listing.contains("config.json") {
        return Err(ModelError::UnknownLayout {
            reason: format!(
                "{repo} has no config.json (not a diffusers VAE) and names no .safetensors file"
            ),
            path: PathBuf::from(repo),
        });
    }
    let top: Vec<&str> = listing.iter().map(String::as_str).filter(|f| !f.contains('/')).collect();
    let chosen =
        choose_weight_files(top, &["diffusion_pytorch_model"], prefer).map_err(
            |err| match err {
                WeightChoiceError::PickleOnly { files } => unsafe_weights(repo, &files),
                WeightChoiceError::Missing { expected } => ModelError::UnknownLayout {
                    reason: format!("the VAE {repo} has no {expected}"),
                    path: PathBuf::from(repo),
                },
            },
        )?;
    let mut files = vec!["config.json".to_owned()];
    files.extend(chosen.index);
    files.extend(chosen.files);
    Ok(files)
}

/// A VAE for `--vae`: a local folder or file as it is; a hub repo's `config.json` + weights
/// (or the one file its key names), downloaded when missing and online.
fn resolve_vae(
    model: &ModelRef,
    config: &HubConfig,
    prefer: WeightVariant,
    progress: &mut ProgressFn<'_>,
) -> Result<ResolvedModel, ModelError> {
    let local = |path: &Path| -> Result<ResolvedModel, ModelError> {
        if path.is_dir() {
            vae_folder_files(&list_files(path), prefer, &path.display().to_string())?;
        } else {
            match classify_safetensors(path)? {
                SafetensorsKind::Vae(_) => {}
                _ => {
                    return Err(ModelError::UnknownLayout {
                        reason: "not a VAE (no encoder.down/decoder.up tensors alone)".to_owned(),
                        path: path.to_path_buf(),
                    });
                }
            }
        }
        Ok(ResolvedModel::Vae { path: path.to_path_buf(), revision: None })
    };
    let key = match &model.source {
        ModelSource::LocalDir(path) | ModelSource::LocalFile(path) => return local(path),
        ModelSource::Hub(key) => key,
    };
    let (repo_id, file) = split_hub_key(key);
    let origin =
        Origin::Hub { repo: repo_id, fetch_name: &model.display_name, cache: &config.cache_dir };
    let cached = || -> Result<ResolvedModel, ModelError> {
        let repo = config.repo(repo_id);
        let Some((revision, snapshot)) = repo.current_snapshot() else {
            return Err(origin.missing(&repo.dir, file.unwrap_or("config.json").to_owned()));
        };
        let needed = match file {
            Some(file) => vec![file.to_owned()],
            None => vae_folder_files(&list_files(&snapshot), prefer, repo_id)?,
        };
        if let Some(missing) = needed.iter().find(|f| !snapshot.join(f.as_str()).is_file()) {
            return Err(origin.missing(&snapshot, missing.clone()));
        }
        let path = file.map_or_else(|| snapshot.clone(), |file| snapshot.join(file));
        let resolved = local(&path)?;
        Ok(ResolvedModel::Vae { path: resolved.path().to_path_buf(), revision: Some(revision) })
    };
    if config.offline {
        return cached();
    }
    let session = match HubSession::open(repo_id, config) {
        Ok(session) => session,
        Err(err) => return cached().map_err(|_| err),
    };
    let needed = match file {
        Some(file) => vec![file.to_owned()],
        None => vae_folder_files(&session.listing, prefer, repo_id)?,
    };
    progress(&DownloadEvent::Planned { repo: repo_id.to_owned(), files: needed.len() });
    for file in &needed {
        session.ensure(file, progress)?;
    }
    cached()
}

/// A LoRA for `--lora`, a prompt tag or a catalog entry: a local `.safetensors` file as it is;
/// in a hub repo, the file the entry or the key names (`org/name/file.safetensors`), else the
/// repo's one top-level `.safetensors` — only that file is downloaded, when missing and online.
/// The header must read as a LoRA.
fn resolve_lora(
    model: &ModelRef,
    entry_file: &str,
    config: &HubConfig,
    progress: &mut ProgressFn<'_>,
) -> Result<ResolvedModel, ModelError> {
    let checked = |file: PathBuf, revision: Option<String>| match classify_safetensors(&file)? {
        SafetensorsKind::Lora => Ok(ResolvedModel::Lora { file, revision }),
        other => Err(ModelError::UnknownLayout {
            reason: format!("not a LoRA: the file looks like {}", describe_kind(other)),
            path: file,
        }),
    };
    let key = match &model.source {
        ModelSource::LocalDir(path) => {
            return Err(ModelError::UnknownLayout {
                reason: "a LoRA is one .safetensors file, not a folder".to_owned(),
                path: path.clone(),
            });
        }
        ModelSource::LocalFile(path) => return checked(path.clone(), None),
        ModelSource::Hub(key) => key,
    };
    let (repo_id, file_in_key) = split_hub_key(key);
    let named = if entry_file.is_empty() { file_in_key } else { Some(entry_file) };
    let origin =
        Origin::Hub { repo: repo_id, fetch_name: &model.display_name, cache: &config.cache_dir };
    let only_lora = |listing: &BTreeSet<String>| -> Result<String, ModelError> {
        only_checkpoint(repo_id, &top_level_safetensors(listing)).cloned()
    };
    let cached = || -> Result<ResolvedModel, ModelError> {
        let repo = config.repo(repo_id);
        let Some((revision, snapshot)) = repo.current_snapshot() else {
            let wanted = named.unwrap_or("the LoRA .safetensors file");
            return Err(origin.missing(&repo.dir, wanted.to_owned()));
        };
        let file = match named {
            Some(file) => file.to_owned(),
            None => only_lora(&list_files(&snapshot))?,
        };
        let path = snapshot.join(&file);
        if !path.is_file() {
            return Err(origin.missing(&snapshot, file));
        }
        checked(path, Some(revision))
    };
    if config.offline {
        return cached();
    }
    let session = match HubSession::open(repo_id, config) {
        Ok(session) => session,
        Err(err) => return cached().map_err(|_| err),
    };
    let file = match named {
        Some(file) => file.to_owned(),
        None => only_lora(&session.listing)?,
    };
    progress(&DownloadEvent::Planned { repo: repo_id.to_owned(), files: 1 });
    session.ensure(&file, progress)?;
    cached()
}

/// What a `.safetensors` file looks like, for refusals.
fn describe_kind(kind: SafetensorsKind) -> String {
    match kind {
        SafetensorsKind::Lora => "a LoRA".to_owned(),
        SafetensorsKind::Checkpoint(family) => format!("a checkpoint ({family:?})"),
        SafetensorsKind::Vae(_) => "a lone VAE".to_owned(),
        SafetensorsKind::Other => "neither a checkpoint, a VAE nor a LoRA".to_owned(),
    }
}

/// Offline resolution of a hub model from the cache alone.
fn resolve_cached_model(
    repo_id: &str,
    file: Option<&str>,
    fetch_name: &str,
    config: &HubConfig,
    prefer: WeightVariant,
) -> Result<ResolvedModel, ModelError> {
    let repo = config.repo(repo_id);
    let origin = Origin::Hub { repo: repo_id, fetch_name, cache: &config.cache_dir };
    let Some((revision, snapshot)) = repo.current_snapshot() else {
        let wanted = file.unwrap_or("model_index.json");
        return Err(origin.missing(&repo.dir, wanted.to_owned()));
    };
    if let Some(file) = file {
        let path = snapshot.join(file);
        if !path.is_file() {
            return Err(origin.missing(&snapshot, file.to_owned()));
        }
        return single_file(path, Some(revision));
    }
    let listing = list_files(&snapshot);
    if listing.contains("model_index.json") {
        return resolve_folder(&snapshot, Some(revision), prefer, &origin)
            .map(ResolvedModel::Pipeline);
    }
    let candidates = top_level_safetensors(&listing);
    if candidates.is_empty() {
        return Err(no_model_index(&snapshot, &listing, &origin));
    }
    let checkpoints: Vec<&String> = candidates
        .iter()
        .copied()
        .filter(|f| {
            matches!(
                classify_safetensors(&snapshot.join(f.as_str())),
                Ok(SafetensorsKind::Checkpoint(_))
            )
        })
        .collect();
    let chosen = newest_checkpoint(
        repo_id,
        if checkpoints.is_empty() { &candidates } else { &checkpoints },
    )?;
    single_file(snapshot.join(chosen.as_str()), Some(revision))
}

/// Online resolution: the pipeline's needed files, or the single checkpoint alone.
fn fetch_model(
    repo_id: &str,
    file: Option<&str>,
    fetch_name: &str,
    config: &HubConfig,
    prefer: WeightVariant,
    progress: &mut ProgressFn<'_>,
) -> Result<ResolvedModel, ModelError> {
    let session = match HubSession::open(repo_id, config) {
        Ok(session) => session,
        Err(err) => {
            return resolve_cached_model(repo_id, file, fetch_name, config, prefer)
                .inspect(|_| tracing::warn!(repo = repo_id, error = %err, "hub unreachable; using the cached snapshot"))
                .map_err(|_| err);
        }
    };
    let chosen = match file {
        Some(file) => Some(file.to_owned()),
        None if session.listing.contains("model_index.json") => None,
        None => {
            let candidates = top_level_safetensors(&session.listing);
            if candidates.is_empty() {
                needed_repo_files(&session, prefer)?;
            }
            Some(newest_checkpoint(repo_id, &candidates)?.clone())
        }
    };
    match chosen {
        Some(file) => {
            if !session.listing.contains(&file) {
                return Err(ModelError::UnknownLayout {
                    reason: format!("hub repo {repo_id} has no file {file}"),
                    path: PathBuf::from(repo_id),
                });
            }
            progress(&DownloadEvent::Planned { repo: repo_id.to_owned(), files: 1 });
            session.ensure(&file, progress)?;
            single_file(session.snapshot.join(&file), Some(session.revision.clone()))
        }
        None => fetch_pipeline(repo_id, fetch_name, config, prefer, progress)
            .map(ResolvedModel::Pipeline),
    }
}

/// Components the SDXL/SD pipelines load; others (safety checker, feature extractor) are skipped.
const WEIGHTED_COMPONENTS: [&str; 4] = ["unet", "vae", "text_encoder", "text_encoder_2"];
const TOKENIZERS: [&str; 2] = ["tokenizer", "tokenizer_2"];

/// A component's files as repo paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedComponent {
    /// Component name (= folder).
    pub name: String,
    /// Every repo file it needs.
    pub files: Vec<String>,
    /// The weight files among them.
    pub weights: Vec<String>,
    /// `Some("fp16")` when the variant was chosen.
    pub variant: Option<String>,
}

/// Why a plan could not be made from a file listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanProblem {
    /// A required repo file is absent from the listing.
    Missing(String),
    /// A component offers only pickle weights.
    PickleOnly {
        /// Component name.
        component: String,
        /// The pickle files.
        files: Vec<String>,
    },
    /// `model_index.json` is not an object.
    BadIndex,
}

/// The components named (non-null) in a `model_index.json`, sorted by name.
pub fn index_components(model_index: &serde_json::Value) -> Option<Vec<String>> {
    let object = model_index.as_object()?;
    Some(
        object
            .iter()
            .filter(|(key, value)| {
                !key.starts_with('_')
                    && value
                        .as_array()
                        .is_some_and(|pair| pair.first().is_some_and(|v| !v.is_null()))
            })
            .map(|(key, _)| key.clone())
            .collect(),
    )
}

/// Plans the repo files a pipeline needs, given every file the repo (or folder) has.
///
/// # Errors
/// The first missing required file, or a component whose only weights are pickles.
pub fn plan_pipeline(
    model_index: &serde_json::Value,
    listing: &BTreeSet<String>,
    prefer: WeightVariant,
) -> Result<Vec<PlannedComponent>, PlanProblem> {
    let names = index_components(model_index).ok_or(PlanProblem::BadIndex)?;
    let mut planned = Vec::new();
    for name in names {
        let require = |file: String| {
            if listing.contains(&file) { Ok(file) } else { Err(PlanProblem::Missing(file)) }
        };
        let component = if WEIGHTED_COMPONENTS.contains(&name.as_str()) {
            let config = require(format!("{name}/config.json"))?;
            let WeightFiles { files: weights, index, variant } =
                plan_weights(&name, listing, prefer)?;
            let mut files = vec![config];
            files.extend(weights.iter().cloned());
            files.extend(index);
            PlannedComponent { name, files, weights, variant }
        } else if TOKENIZERS.contains(&name.as_str()) {
            let mut files = vec![
                require(format!("{name}/vocab.json"))?,
                require(format!("{name}/merges.txt"))?,
            ];
            for optional in ["tokenizer_config.json", "special_tokens_map.json"] {
                let file = format!("{name}/{optional}");
                if listing.contains(&file) {
                    files.push(file);
                }
            }
            PlannedComponent { name, files, weights: Vec::new(), variant: None }
        } else if name == "scheduler" {
            let files = vec![require(format!("{name}/scheduler_config.json"))?];
            PlannedComponent { name, files, weights: Vec::new(), variant: None }
        } else {
            continue;
        };
        planned.push(component);
    }
    Ok(planned)
}

/// The weight files of one component folder (see [`choose_weight_files`]), as repo paths.
fn plan_weights(
    component: &str,
    listing: &BTreeSet<String>,
    prefer: WeightVariant,
) -> Result<WeightFiles, PlanProblem> {
    let prefix = format!("{component}/");
    let in_folder =
        listing.iter().filter_map(|f| f.strip_prefix(&prefix)).filter(|f| !f.contains('/'));
    // Transformers' text encoders are `model.*`, diffusers' components `diffusion_pytorch_model.*`.
    let stems: &[&str] = if component.starts_with("text_encoder") {
        &["model", "diffusion_pytorch_model"]
    } else {
        &["diffusion_pytorch_model", "model"]
    };
    let in_repo = |file: String| format!("{prefix}{file}");
    match choose_weight_files(in_folder, stems, prefer) {
        Ok(chosen) => Ok(WeightFiles {
            files: chosen.files.into_iter().map(in_repo).collect(),
            index: chosen.index.map(in_repo),
            variant: chosen.variant,
        }),
        Err(WeightChoiceError::PickleOnly { files }) => Err(PlanProblem::PickleOnly {
            component: component.to_owned(),
            files: files.into_iter().map(in_repo).collect(),
        }),
        Err(WeightChoiceError::Missing { expected }) => {
            Err(PlanProblem::Missing(in_repo(expected)))
        }
    }
}

/// Every file under `root`, as `/`-separated relative paths (symlinks followed for the test
/// of existence: a dangling snapshot link counts as missing).
pub fn list_files(root: &Path) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs_err::read_dir(&dir) else { continue };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file()
                && let Ok(relative) = path.strip_prefix(root)
            {
                let parts: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                files.insert(parts.join("/"));
            }
        }
    }
    files
}

fn read_json(path: &Path, what: &'static str) -> Result<serde_json::Value, ModelError> {
    let text = fs_err::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|source| ModelError::InvalidJson {
        what,
        source,
        path: path.to_path_buf(),
    })
}

/// Where a folder being resolved came from, for error messages.
enum Origin<'a> {
    Local,
    Hub { repo: &'a str, fetch_name: &'a str, cache: &'a Path },
}

impl Origin<'_> {
    fn missing(&self, root: &Path, repo_file: String) -> ModelError {
        match self {
            Origin::Local => ModelError::MissingLocal { repo_file, folder: root.to_path_buf() },
            Origin::Hub { repo, fetch_name, cache } => ModelError::MissingOffline {
                repo: (*repo).to_owned(),
                repo_file,
                fetch_name: quote_name(fetch_name),
                cache: cache.to_path_buf(),
            },
        }
    }
}

fn quote_name(name: &str) -> String {
    if name.contains(' ') { format!("\"{name}\"") } else { name.to_owned() }
}

/// Resolves a diffusers folder already on disk (a local folder or a cache snapshot).
fn resolve_folder(
    root: &Path,
    revision: Option<String>,
    prefer: WeightVariant,
    origin: &Origin<'_>,
) -> Result<ResolvedPipeline, ModelError> {
    let listing = list_files(root);
    if !listing.contains("model_index.json") {
        return Err(no_model_index(root, &listing, origin));
    }
    let model_index = read_json(&root.join("model_index.json"), "model_index.json")?;
    let plan = plan_pipeline(&model_index, &listing, prefer).map_err(|problem| match problem {
        PlanProblem::Missing(file) => origin.missing(root, file),
        PlanProblem::PickleOnly { component, files } => {
            unsafe_weights(&format!("component {component} of {}", root.display()), &files)
        }
        PlanProblem::BadIndex => ModelError::UnknownLayout {
            reason: "model_index.json is not a JSON object".to_owned(),
            path: root.join("model_index.json"),
        },
    })?;
    let mut components = Vec::new();
    for planned in plan {
        let weights: Vec<PathBuf> = planned.weights.iter().map(|f| root.join(f)).collect();
        for weight in &weights {
            read_header(weight)?;
        }
        components.push(ResolvedComponent {
            folder: root.join(&planned.name),
            name: planned.name,
            weights,
            variant: planned.variant,
            files: planned.files.iter().map(|f| root.join(f)).collect(),
        });
    }
    Ok(ResolvedPipeline { root: root.to_path_buf(), revision, components })
}

/// The error for a folder or snapshot without `model_index.json`: single file, LoRA, pickles.
fn no_model_index(root: &Path, listing: &BTreeSet<String>, origin: &Origin<'_>) -> ModelError {
    let top_level = |f: &&String| !f.contains('/');
    let safetensors: Vec<&String> =
        listing.iter().filter(top_level).filter(|f| is_safetensors_file(f)).collect();
    if let Some(file) = safetensors.first() {
        let path = root.join(file);
        return match classify_safetensors(&path) {
            Ok(SafetensorsKind::Lora) => ModelError::LoraNotModel { path },
            Ok(SafetensorsKind::Checkpoint(family)) => super::layout::single_file_not_supported(path, family),
            Ok(SafetensorsKind::Vae(_)) => ModelError::UnknownLayout {
                reason: "no model_index.json, and the .safetensors file is a lone VAE (use it with --vae)".to_owned(),
                path,
            },
            Ok(SafetensorsKind::Other) => ModelError::UnknownLayout {
                reason: "no model_index.json, and the .safetensors file is neither a checkpoint nor a LoRA".to_owned(),
                path,
            },
            Err(err) => err,
        };
    }
    let pickles: Vec<String> = listing.iter().filter(|f| is_pickle_file(f)).cloned().collect();
    if !pickles.is_empty() {
        return unsafe_weights(&root.display().to_string(), &pickles);
    }
    origin.missing(root, "model_index.json".to_owned())
}

/// Resolves a model to a diffusers pipeline on disk, downloading what is missing when online.
///
/// Local folders and files are detected (single-file checkpoints and LoRA files get
/// [`ModelError::NotSupportedYet`]); hub repos go through the cache in `config`.
///
/// # Errors
/// Missing files (offline: with the fetch command), pickle-only weights, corrupt headers,
/// unsupported layouts, download failures.
pub fn resolve_pipeline(
    model: &ModelRef,
    config: &HubConfig,
    prefer: WeightVariant,
    progress: &mut ProgressFn<'_>,
) -> Result<ResolvedPipeline, ModelError> {
    match &model.source {
        ModelSource::LocalDir(path) | ModelSource::LocalFile(path) => {
            let root = detect_layout(path)?.require_diffusers()?;
            resolve_folder(&root, None, prefer, &Origin::Local)
        }
        ModelSource::Hub(repo_id) => {
            if let EntryKind::Lora { file, .. } = &model.kind {
                return Err(ModelError::NotSupportedYet {
                    what: format!("LoRA adapter (hub repo {repo_id})"),
                    path: PathBuf::from(file),
                });
            }
            if config.offline {
                resolve_cached(repo_id, &model.display_name, config, prefer)
            } else {
                fetch_pipeline(repo_id, &model.display_name, config, prefer, progress)
            }
        }
    }
}

/// Resolves a hub repo from the cache alone (no network).
///
/// # Errors
/// [`ModelError::MissingOffline`] naming the first missing repo file and how to fetch it;
/// pickle-only weights; corrupt headers; unsupported layouts.
pub fn resolve_cached(
    repo_id: &str,
    fetch_name: &str,
    config: &HubConfig,
    prefer: WeightVariant,
) -> Result<ResolvedPipeline, ModelError> {
    let repo = config.repo(repo_id);
    let origin = Origin::Hub { repo: repo_id, fetch_name, cache: &config.cache_dir };
    let Some((revision, snapshot)) = repo.current_snapshot() else {
        return Err(origin.missing(&repo.dir, "model_index.json".to_owned()));
    };
    resolve_folder(&snapshot, Some(revision), prefer, &origin)
}

/// Forwards hf-hub's progress calls as [`DownloadEvent`]s, at most one per MiB.
struct ProgressAdapter<'p, 'f> {
    sink: &'p mut ProgressFn<'f>,
    repo_file: String,
    total_bytes: u64,
    done_bytes: u64,
    reported_bytes: u64,
    started: bool,
}

impl hf_hub::api::Progress for ProgressAdapter<'_, '_> {
    fn init(&mut self, size: usize, _filename: &str) {
        // hf-hub calls init twice per attempt (before and after opening the range request).
        self.total_bytes = size as u64;
        self.done_bytes = 0;
        if !self.started {
            self.started = true;
            (self.sink)(&DownloadEvent::Started {
                repo_file: self.repo_file.clone(),
                total_bytes: self.total_bytes,
            });
        }
    }

    fn update(&mut self, size: usize) {
        self.done_bytes += size as u64;
        if self.done_bytes - self.reported_bytes >= 1 << 20 || self.done_bytes >= self.total_bytes {
            self.reported_bytes = self.done_bytes;
            (self.sink)(&DownloadEvent::Progress {
                repo_file: self.repo_file.clone(),
                done_bytes: self.done_bytes,
                total_bytes: self.total_bytes,
            });
        }
    }

    fn finish(&mut self) {}
}

/// An online session on one repo.
struct HubSession {
    api_repo: hf_hub::api::sync::ApiRepo,
    repo_id: String,
    revision: String,
    snapshot: PathBuf,
    listing: BTreeSet<String>,
}

impl HubSession {
    fn open(repo_id: &str, config: &HubConfig) -> Result<Self, ModelError> {
        let download_error = |message: String| ModelError::Download {
            repo: repo_id.to_owned(),
            repo_file: String::new(),
            message,
        };
        let api =
            hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(config.cache_dir.clone()))
                .with_progress(false)
                .with_endpoint(config.endpoint.clone())
                .with_token(config.token.clone())
                .with_retries(config.retries)
                .with_user_agent("imagelab", env!("CARGO_PKG_VERSION"))
                .build()
                .map_err(|err| download_error(err.to_string()))?;
        let api_repo = api.model(repo_id.to_owned());
        let info = api_repo.info().map_err(|err| download_error(describe_api_error(&err)))?;
        let listing = info.siblings.into_iter().map(|s| s.rfilename).collect();
        let snapshot = config.repo(repo_id).dir.join("snapshots").join(&info.sha);
        Ok(Self { api_repo, repo_id: repo_id.to_owned(), revision: info.sha, snapshot, listing })
    }

    /// Makes sure `repo_file` is in the snapshot; downloads it when not.
    fn ensure(&self, repo_file: &str, progress: &mut ProgressFn<'_>) -> Result<u64, ModelError> {
        if is_pickle_file(repo_file) {
            return Err(unsafe_weights(&self.repo_id, &[repo_file.to_owned()]));
        }
        if self.snapshot.join(repo_file).is_file() {
            progress(&DownloadEvent::AlreadyCached { repo_file: repo_file.to_owned() });
            return Ok(0);
        }
        let mut adapter = ProgressAdapter {
            sink: progress,
            repo_file: repo_file.to_owned(),
            total_bytes: 0,
            done_bytes: 0,
            reported_bytes: 0,
            started: false,
        };
        let started = std::time::Instant::now();
        let path =
            self.api_repo.download_with_progress(repo_file, &mut adapter).map_err(|err| {
                ModelError::Download {
                    repo: self.repo_id.clone(),
                    repo_file: repo_file.to_owned(),
                    message: describe_api_error(&err),
                }
            })?;
        let bytes = adapter.total_bytes;
        progress(&DownloadEvent::Finished { repo_file: repo_file.to_owned() });
        tracing::info!(repo = %self.repo_id, repo_file, bytes, secs = started.elapsed().as_secs_f64(), path = %path.display(), "downloaded");
        Ok(bytes)
    }
}

/// Adds the hint a gated repo needs.
fn describe_api_error(err: &hf_hub::api::sync::ApiError) -> String {
    let text = err.to_string();
    if text.contains("401") || text.contains("403") {
        format!("{text} (gated or private repo: accept its license on the hub and set HF_TOKEN)")
    } else {
        text
    }
}

impl hf_hub::api::Progress for &mut ProgressAdapter<'_, '_> {
    fn init(&mut self, size: usize, filename: &str) {
        (**self).init(size, filename);
    }
    fn update(&mut self, size: usize) {
        (**self).update(size);
    }
    fn finish(&mut self) {}
}

/// Online resolution: fetch what is missing, then resolve from the snapshot. On a network
/// failure a complete cache is used instead (with a warning), as Python tools do.
fn fetch_pipeline(
    repo_id: &str,
    fetch_name: &str,
    config: &HubConfig,
    prefer: WeightVariant,
    progress: &mut ProgressFn<'_>,
) -> Result<ResolvedPipeline, ModelError> {
    let session = match HubSession::open(repo_id, config) {
        Ok(session) => session,
        Err(err) => {
            return resolve_cached(repo_id, fetch_name, config, prefer)
                .inspect(|_| tracing::warn!(repo = repo_id, error = %err, "hub unreachable; using the cached snapshot"))
                .map_err(|_| err);
        }
    };
    let files = needed_repo_files(&session, prefer)?;
    progress(&DownloadEvent::Planned { repo: repo_id.to_owned(), files: files.len() + 1 });
    session.ensure("model_index.json", progress)?;
    for file in &files {
        session.ensure(file, progress)?;
    }
    let origin = Origin::Hub { repo: repo_id, fetch_name, cache: &config.cache_dir };
    resolve_folder(&session.snapshot, Some(session.revision.clone()), prefer, &origin)
}

/// The repo files a pipeline needs, planned from the hub's file list; layouts without
/// `model_index.json` are refused before anything large is downloaded.
fn needed_repo_files(
    session: &HubSession,
    prefer: WeightVariant,
) -> Result<Vec<String>, ModelError> {
    let listing = &session.listing;
    if !listing.contains("model_index.json") {
        let top: Vec<&String> = listing.iter().filter(|f| !f.contains('/')).collect();
        if let Some(file) = top.iter().find(|f| is_safetensors_file(f)) {
            return Err(ModelError::NotSupportedYet {
                what: format!(
                    "a repo without model_index.json (single-file checkpoint or LoRA) in {}",
                    session.repo_id
                ),
                path: PathBuf::from(file.as_str()),
            });
        }
        let pickles: Vec<String> = listing.iter().filter(|f| is_pickle_file(f)).cloned().collect();
        if !pickles.is_empty() {
            return Err(unsafe_weights(&session.repo_id, &pickles));
        }
        return Err(ModelError::UnknownLayout {
            reason: format!(
                "hub repo {} has no model_index.json and no .safetensors file",
                session.repo_id
            ),
            path: PathBuf::from(&session.repo_id),
        });
    }
    session.ensure("model_index.json", &mut |_| {})?;
    let model_index = read_json(&session.snapshot.join("model_index.json"), "model_index.json")?;
    let plan = plan_pipeline(&model_index, listing, prefer).map_err(|problem| match problem {
        PlanProblem::Missing(file) => ModelError::UnknownLayout {
            reason: format!("hub repo {} lacks {file}", session.repo_id),
            path: PathBuf::from(&session.repo_id),
        },
        PlanProblem::PickleOnly { component, files } => {
            unsafe_weights(&format!("component {component} of {}", session.repo_id), &files)
        }
        PlanProblem::BadIndex => ModelError::UnknownLayout {
            reason: "model_index.json is not a JSON object".to_owned(),
            path: session.snapshot.join("model_index.json"),
        },
    })?;
    Ok(plan.into_iter().flat_map(|c| c.files).collect())
}

/// Downloads the files of a hub repo that `prefetch` wants: a pipeline's needed files, or the
/// top-level `.safetensors` of a single-file/LoRA repo. Returns (files downloaded, bytes).
///
/// # Errors
/// Offline, network and layout errors.
pub fn download_repo(
    repo_id: &str,
    only_file: Option<&str>,
    config: &HubConfig,
    prefer: WeightVariant,
    progress: &mut ProgressFn<'_>,
) -> Result<(usize, u64), ModelError> {
    if config.offline {
        return Err(ModelError::OfflineDownload { repo: repo_id.to_owned() });
    }
    let session = HubSession::open(repo_id, config)?;
    let files: Vec<String> = if let Some(file) = only_file {
        vec![file.to_owned()]
    } else if session.listing.contains("model_index.json") {
        let mut files = vec!["model_index.json".to_owned()];
        files.extend(needed_repo_files(&session, prefer)?);
        files
    } else if session.listing.contains("config.json") {
        // A diffusers VAE repo (config.json + diffusion_pytorch_model at the root).
        vae_folder_files(&session.listing, prefer, repo_id)?
    } else {
        // A single-file repo: its checkpoint (several: the newest, see `newest_checkpoint`).
        let candidates = top_level_safetensors(&session.listing);
        if candidates.is_empty() {
            needed_repo_files(&session, prefer)?;
        }
        vec![newest_checkpoint(repo_id, &candidates)?.clone()]
    };
    progress(&DownloadEvent::Planned { repo: repo_id.to_owned(), files: files.len() });
    let mut downloaded = 0;
    let mut bytes = 0;
    for file in &files {
        let got = session.ensure(file, progress)?;
        if got > 0 {
            downloaded += 1;
            bytes += got;
        }
    }
    Ok((downloaded, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn file_names_order_as_versions() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        assert_eq!(version_order("aidxl_v10.safetensors", "aidxl_v9.safetensors"), Greater);
        assert_eq!(version_order("model-v1.10", "model-v1.9"), Greater);
        assert_ne!(version_order("v007", "v7"), Equal, "equal values fall back to the text");
        assert_eq!(version_order("V2", "v10"), Less, "case does not decide");
        assert_eq!(version_order("base.safetensors", "base.safetensors"), Equal);
        assert_eq!(version_order("", "a"), Less);
        let names = ["b_v2".to_owned(), "b_v12".to_owned(), "b_v3".to_owned()];
        let refs: Vec<&String> = names.iter().collect();
        assert_eq!(newest_checkpoint("o/n", &refs).expect("one").as_str(), "b_v12");
        assert!(newest_checkpoint("o/n", &[]).is_err());
    }

    #[test]
    fn config_follows_huggingface_hub_precedence() {
        let vars =
            HashMap::from([("HOME", "/home/u"), ("HF_HUB_OFFLINE", "yes"), ("HF_TOKEN", "hf_x")]);
        let config = HubConfig::from_vars(|k| vars.get(k).map(|v| (*v).to_owned()));
        assert_eq!(config.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert!(config.offline);
        assert_eq!(config.token.as_deref(), Some("hf_x"));
        assert!(!format!("{config:?}").contains("hf_x"), "token must not be logged");
        let vars =
            HashMap::from([("HOME", "/home/u"), ("HF_HOME", "/data/hf"), ("HF_HUB_OFFLINE", "0")]);
        let config = HubConfig::from_vars(|k| vars.get(k).map(|v| (*v).to_owned()));
        assert_eq!(config.cache_dir, PathBuf::from("/data/hf/hub"));
        assert!(!config.offline);
        let vars = HashMap::from([("HF_HOME", "/data/hf"), ("HF_HUB_CACHE", "/fast/hub")]);
        let config = HubConfig::from_vars(|k| vars.get(k).map(|v| (*v).to_owned()));
        assert_eq!(config.cache_dir, PathBuf::from("/fast/hub"));
        assert_eq!(config.repo("org/name").dir, PathBuf::from("/fast/hub/models--org--name"));
    }

    fn listing(files: &[&str]) -> BTreeSet<String> {
        files.iter().map(|f| (*f).to_owned()).collect()
    }

    #[test]
    fn plan_prefers_fp16_per_component_and_never_pickles() {
        let index = serde_json::json!({
            "_class_name": "StableDiffusionXLPipeline",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "feature_extractor": [null, null],
            "safety_checker": ["x", "y"],
        });
        let files = listing(&[
            "model_index.json",
            "scheduler/scheduler_config.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "vae/config.json",
            "vae/diffusion_pytorch_model-00001-of-00002.safetensors",
            "vae/diffusion_pytorch_model-00002-of-00002.safetensors",
            "vae/diffusion_pytorch_model.safetensors.index.json",
        ]);
        let plan = plan_pipeline(&index, &files, WeightVariant::Fp16).expect("plan");
        let names: Vec<&str> = plan.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["scheduler", "unet", "vae"]);
        assert_eq!(plan[1].weights, ["unet/diffusion_pytorch_model.fp16.safetensors"]);
        assert_eq!(plan[1].variant.as_deref(), Some("fp16"));
        assert_eq!(plan[2].weights.len(), 2, "shards, full precision fallback");
        assert!(
            plan[2]
                .files
                .contains(&"vae/diffusion_pytorch_model.safetensors.index.json".to_owned())
        );
        assert_eq!(plan[2].variant, None);
        assert!(plan.iter().flat_map(|c| &c.files).all(|f| !is_pickle_file(f)));
        let full = plan_pipeline(&index, &files, WeightVariant::Full).expect("plan");
        assert_eq!(full[1].weights, ["unet/diffusion_pytorch_model.safetensors"]);

        let pickle_only = listing(&["unet/config.json", "unet/diffusion_pytorch_model.bin"]);
        let index = serde_json::json!({"unet": ["diffusers", "UNet2DConditionModel"]});
        assert!(matches!(
            plan_pipeline(&index, &pickle_only, WeightVariant::Full),
            Err(PlanProblem::PickleOnly { .. })
        ));
    }
}
