//! Fooocus `parameters` JSON scheme.
#![no_main]

#[path = "../checks/fooocus_parameters.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|text: &str| check::check(text));
