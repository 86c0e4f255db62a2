//! The overnight runner and its prompt generator: template files → generated jobs → one
//! worker per GPU, each with its own engine, until a job count, a time or a stop.

pub mod generator;
pub mod limits;
pub mod pool;
pub mod prng;
pub mod source_map;
pub mod templates;

pub use generator::{GeneratedJob, Generator, RunChoices};
pub use pool::{
    BackendFactory, EndReason, IdleWatch, JobOutcome, JobSettings, RunSummary, RunnerEvent,
    RunnerHandle, RunnerSetup, Slot, SlotGpu, SlotSummary, StopLevel, StopToken, WorkerState,
};
pub use templates::{TemplateSet, TemplatesError};
