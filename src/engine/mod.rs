//! The engine: a named background thread that owns the backend, the loaded models and the
//! output folder, fed by `Command`s and answering with `Event`s over bounded channels.

pub mod backend;

pub use backend::{
    Backend, BackendError, Capabilities, GenerateParams, Generated, LoadProgress, LoadedModel,
    Preview, StepUpdate, Timings,
};
