//! Styles files (A1111 CSV, Fooocus JSON), applied to a prompt and extracted back.
#![no_main]

#[path = "../checks/styles_file.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
