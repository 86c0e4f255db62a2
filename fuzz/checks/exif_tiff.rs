//! EXIF/TIFF blocks: IFD loops, huge entry counts, offsets and counts that overflow.

use imagelab::storage::metadata::exif;

/// The target's check of one input: panics on what the target reports.
pub fn check(data: &[u8]) {
    if let Ok(found) = exif::read_exif(data) {
        // Entries come from IFD0 and the Exif IFD, 12 bytes each (the two may overlap).
        assert!(found.entries.len() <= 2 * (data.len() / 12) + 2);
    }
}
