//! SDXL Image Lab: a native lab for Stable Diffusion XL.
//!
//! One engine serves the desktop window (`ui`, feature `gui`) and the command line (`cli`).
//! See `ARCHITECTURE.md` for the map.

pub mod analytics;
pub mod app;
pub mod cli;
pub mod diffusion;
pub mod engine;
pub mod font;
pub mod gpu;
pub mod models;
pub mod request;
pub mod runner;
pub mod server;
pub mod slurm;
pub mod storage;
#[cfg(feature = "gui")]
pub mod ui;
pub mod vocab;
