//! Integration tests: one binary, one module per area.

mod bench_gpu;
mod candle_cli;
mod cli;
mod diffusion;
mod engine;
mod models;
mod rng;
mod sampler_pipeline;
mod schedulers;
mod ui;
mod util;

mod metadata;
