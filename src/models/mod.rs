//! Models: the catalog of known checkpoints, hub resolution through the standard Hugging Face
//! cache, local folders, layout detection, cache management commands, the cache of loaded
//! pipelines, and the out-of-memory fallback ladder.

pub mod cache;
pub mod catalog;
pub mod error;
pub mod hub;
pub mod layout;
pub mod manage;
pub mod oom;
pub mod preflight;
pub mod safetensors_header;
pub mod weight_files;

pub use catalog::{
    Catalog, CatalogEntry, EntryKind, ModelDefaults, ModelRef, ModelSource, UnknownModel,
};
pub use error::ModelError;
