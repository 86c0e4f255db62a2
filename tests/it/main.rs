//! Integration tests: one binary, one module per area.

mod cli;
mod engine;
mod models;
mod ui;
mod util;
