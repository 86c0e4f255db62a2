//! Any bytes as a PNG, JPEG or WebP: container walkers (JPEG segments, RIFF chunks, EXIF IFDs,
//! XMP, stealth bits), every settings parser and `format_human`; never a panic.
#![no_main]

#[path = "../checks/recover_image.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
