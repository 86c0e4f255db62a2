//! XMP packets: malformed XML, deep nesting, entities, UTF-16.

use imagelab::storage::metadata::xmp;

/// The target's check of one input: panics on what the target reports.
pub fn check(data: &[u8]) {
    let found = xmp::read_xmp(data);
    // Property values are built from the packet's text: never larger than the packet, decoded.
    let total: usize = found.properties.iter().map(|p| p.value.len()).sum();
    assert!(total <= data.len() * 4 + 16);
}
