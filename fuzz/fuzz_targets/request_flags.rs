//! `imagelab generate` flags: any argument list (one per line) through clap, the options and
//! the plan. Parsing never panics; a plan is made or refused naming a field, and a plan made
//! from flags holds values inside the limits.
#![no_main]

#[path = "../checks/request_flags.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|text: &str| check::check(text));
