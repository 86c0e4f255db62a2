//! A profiles file (`profiles.ron`, `IMAGELAB_PROFILES`): the RON parser and every check, then a
//! plan with each profile. Whatever parses must hold values the flags would accept, and a plan
//! is either made or refused with a named field — never a panic or an absurd allocation.
#![no_main]

#[path = "../checks/profiles_ron.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|text: &str| check::check(text));
