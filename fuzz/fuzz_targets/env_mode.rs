//! Environment-variable mode: any values (UTF-8 or not) for the variables it reads. Bad bytes
//! must be refused naming the variable; whatever parses must validate or be refused naming a
//! field — never a panic, never a value silently dropped.
#![no_main]

#[path = "../checks/env_mode.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
