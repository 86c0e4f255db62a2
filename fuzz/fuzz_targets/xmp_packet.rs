//! XMP packets: malformed XML, deep nesting, entities, UTF-16.
#![no_main]

#[path = "../checks/xmp_packet.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
