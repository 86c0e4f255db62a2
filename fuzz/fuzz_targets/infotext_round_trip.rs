//! Writer against reader: whatever the prompt, profile or model text, A1111's reading of our
//! infotext gives back every setting, and the prompts as A1111 normalises them (lines stripped).
#![no_main]

#[path = "../checks/infotext_round_trip.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|text: &str| check::check(text));
