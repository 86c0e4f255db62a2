//! Integration tests: one binary, one module per area.

#![allow(clippy::float_cmp, reason = "tests check bit-exact reproduction on purpose")]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "fixture counts and sizes are small"
)]
#![allow(clippy::case_sensitive_file_extension_comparisons, reason = "fixture names are ours")]

mod bad_input;
mod bench_gpu;
mod candle_cli;
mod cli;
mod crash;
mod diffusion;
mod engine;
mod favorites;
mod fuzz_corpus;
mod lora;
mod models;
mod models_dirs;
mod queue;
mod refs;
mod rng;
mod runner;
mod sampler_pipeline;
mod schedulers;
mod server;
mod sheet;
mod single_file;
mod slurm;
mod stops;
mod ui;
mod ui_slurm;
mod util;

mod metadata;
mod metadata_formats;
