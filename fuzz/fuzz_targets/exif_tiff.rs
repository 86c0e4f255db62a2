//! EXIF/TIFF blocks: IFD loops, huge entry counts, offsets and counts that overflow.
#![no_main]

#[path = "../checks/exif_tiff.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
