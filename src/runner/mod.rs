//! The overnight runner and its prompt generator: template files → generated jobs → one
//! worker per GPU, each with its own engine, until a job count, a time or a stop.

pub mod generator;
pub mod prng;
pub mod source_map;
pub mod templates;

pub use generator::{GeneratedJob, Generator, RunChoices};
pub use templates::{TemplateSet, TemplatesError};
