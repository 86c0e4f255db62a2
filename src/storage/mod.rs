//! Storage: everything the lab writes to disk and reads back — file names, PNGs with metadata,
//! the jobs log, favourites.

pub mod favorites;
pub mod inputs;
pub mod jobs_log;
pub mod metadata;
pub mod naming;
pub mod styles;
