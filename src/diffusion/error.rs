//! One error type for the diffusion layer, so every failure names the file or field it is about
//! (paths last), and callers can tell a cancel from a failure.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why loading a model or generating an image failed.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    /// A file could not be read.
    #[error("cannot read {what}: {source}: {path}")]
    Io {
        /// What the file is ("UNet config").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A config or tokenizer file is malformed or lacks a field.
    #[error("bad {field}: {message}: {path}")]
    Config {
        /// The field (or file part) at fault.
        field: String,
        /// What is wrong with it.
        message: String,
        /// The file.
        path: PathBuf,
    },
    /// The model uses a feature this implementation does not have.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The request itself is invalid (size not a multiple of 8, strength out of range…).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A tensor operation failed (shape mismatch, missing weight, device error).
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A model file that is not what a pipeline needs (corrupt, truncated, another
    /// architecture), as the models layer found it.
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    /// The step callback asked to stop.
    #[error("cancelled")]
    Cancelled,
}

/// Result of the diffusion layer.
pub type Result<T> = std::result::Result<T, DiffusionError>;

impl DiffusionError {
    /// A config error on `field` of the file at `path`.
    pub fn config(field: impl Into<String>, message: impl Into<String>, path: &Path) -> Self {
        Self::Config { field: field.into(), message: message.into(), path: path.to_path_buf() }
    }
}

/// Reads a file to a string, naming it on failure.
///
/// # Errors
/// [`DiffusionError::Io`].
pub fn read_text(what: &'static str, path: &Path) -> Result<String> {
    fs_err::read_to_string(path).map_err(|source| DiffusionError::Io {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and parses a JSON config, naming the file (and serde's line/column) on failure.
///
/// # Errors
/// [`DiffusionError::Io`] or [`DiffusionError::Config`].
pub fn read_json<T: DeserializeOwned>(what: &'static str, path: &Path) -> Result<T> {
    let text = read_text(what, path)?;
    serde_json::from_str(&text).map_err(|err| DiffusionError::config(what, err.to_string(), path))
}
