//! InvokeAI `invokeai_metadata` JSON.
#![no_main]

#[path = "../checks/invokeai_metadata.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|text: &str| check::check(text));
