//! One error type for everything `models` does, so the engine and the CLI can show a message
//! that names the file or repo involved (paths last) and says what to do about it.

use std::path::PathBuf;

/// Why a model could not be found, fetched, checked or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Offline and a file the pipeline needs is not in the local cache.
    #[error(
        "{repo_file} of {repo} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; \
         fetch it with `imagelab models prefetch {fetch_name}` or \
         `huggingface-cli download {repo} {repo_file}` (cache: {})",
        cache.display()
    )]
    MissingOffline {
        /// Hub repo id.
        repo: String,
        /// Path of the missing file inside the repo.
        repo_file: String,
        /// The name to give `imagelab models prefetch` (catalog name or hub id).
        fetch_name: String,
        /// The hub cache root searched.
        cache: PathBuf,
    },
    /// A local diffusers folder lacks a file the pipeline needs.
    #[error("{repo_file} is missing from the model folder {}", folder.display())]
    MissingLocal {
        /// Path of the missing file inside the folder.
        repo_file: String,
        /// The model folder.
        folder: PathBuf,
    },
    /// Only pickle weights are on offer; they can run code when loaded.
    #[error(
        "{what} offers only pickle weights ({files}); imagelab refuses them because unpickling \
         can run arbitrary code: use a repo or folder with .safetensors weights (or convert these)"
    )]
    UnsafeWeights {
        /// The repo, folder, file or component refused.
        what: String,
        /// The pickle files found (comma separated, possibly shortened).
        files: String,
    },
    /// A `.safetensors` file whose header does not describe its contents.
    #[error("invalid safetensors file: {reason}: {}", path.display())]
    InvalidSafetensors {
        /// What is wrong.
        reason: String,
        /// The file.
        path: PathBuf,
    },
    /// A LoRA file given where a model is expected.
    #[error(
        "{} is a LoRA adapter, not a model: apply it to a base model with --lora FILE[:WEIGHT] \
         or a <lora:name:weight> prompt tag",
        path.display()
    )]
    LoraNotModel {
        /// The file (local path or in a hub snapshot).
        path: PathBuf,
    },
    /// A layout this version detects but cannot run yet.
    #[error("{what} is not supported yet: {}", path.display())]
    NotSupportedYet {
        /// What was found ("single-file SDXL checkpoint", "LoRA adapter").
        what: String,
        /// The file (local path or `repo/file`).
        path: PathBuf,
    },
    /// A single file that is not a checkpoint we can map (Flux, SD3, a refiner, an inpainting
    /// UNet, a LoRA given as a model…), refused before any work.
    #[error("this file looks like {looks_like}, which cannot be loaded as a checkpoint: {}", path.display())]
    UnsupportedCheckpoint {
        /// What the tensors look like.
        looks_like: String,
        /// The file.
        path: PathBuf,
    },
    /// A LoRA file that cannot be merged: another adapter type (named), another architecture,
    /// modules that do not fit the model. Refused before any work.
    #[error("LoRA {}: {what}", path.display())]
    UnsupportedLora {
        /// What is wrong, naming the adapter type or the module.
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// Nothing recognisable as a model.
    #[error("{reason}: {}", path.display())]
    UnknownLayout {
        /// What was expected and not found.
        reason: String,
        /// The folder or file examined.
        path: PathBuf,
    },
    /// A JSON file (`model_index.json`, a config, a shard index) that does not parse.
    #[error("cannot read {what}: {source}: {}", path.display())]
    InvalidJson {
        /// Which file this is for the pipeline.
        what: &'static str,
        /// The parse error.
        source: serde_json::Error,
        /// The file.
        path: PathBuf,
    },
    /// The hub refused or the network failed.
    #[error("download of {repo_file} from {repo} failed: {message}")]
    Download {
        /// Hub repo id.
        repo: String,
        /// Path inside the repo (empty for repo-level requests).
        repo_file: String,
        /// The client's error, including HTTP status (401/403: gated repo, set `HF_TOKEN`).
        message: String,
    },
    /// A network operation was asked for while `HF_HUB_OFFLINE` is set.
    #[error("HF_HUB_OFFLINE is set, so {repo} cannot be downloaded; unset it to prefetch")]
    OfflineDownload {
        /// Hub repo id.
        repo: String,
    },
    /// File system error (fs-err messages name the path).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
