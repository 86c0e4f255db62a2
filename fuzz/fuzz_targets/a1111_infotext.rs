//! A1111 infotext: the splitter, the pair scanner and the mapping to a request.
#![no_main]

#[path = "../checks/a1111_infotext.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|text: &str| check::check(text));
