//! Whole-file recovery: any bytes, PNG or not, must give settings or an error, never a panic.
#![no_main]

#[path = "../checks/recover_png.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
