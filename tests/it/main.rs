//! Integration tests: one binary, one module per area.

mod util;

mod metadata;
