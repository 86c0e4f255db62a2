//! Models: the catalog of known checkpoints, hub resolution through the standard Hugging Face
//! cache, local folders, and the cache of loaded pipelines.

pub mod catalog;

pub use catalog::{Catalog, CatalogEntry, EntryKind, ModelDefaults, ModelRef, ModelSource};
