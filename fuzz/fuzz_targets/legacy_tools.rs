//! InvokeAI 2.x (`Dream` command lines, `sd-metadata` JSON) and NovelAI (`Comment` JSON) text.
#![no_main]

#[path = "../checks/legacy_tools.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|text: &str| check::check(text));
