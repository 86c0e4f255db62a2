//! XMP packets: malformed XML, deep nesting, entities, UTF-16.
#![no_main]
use imagelab::storage::metadata::xmp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let found = xmp::read_xmp(data);
    // Property values are built from the packet's text: never larger than the packet, decoded.
    let total: usize = found.properties.iter().map(|p| p.value.len()).sum();
    assert!(total <= data.len() * 4 + 16);
});
