//! Integration tests: one binary, one module per area.

mod rng;
mod schedulers;
mod util;
