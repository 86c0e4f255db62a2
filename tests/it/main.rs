//! Integration tests: one binary, one module per area.

mod cli;
mod engine;
mod models;
mod rng;
mod schedulers;
mod ui;
mod util;
