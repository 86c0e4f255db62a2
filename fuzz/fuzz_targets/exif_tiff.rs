//! EXIF/TIFF blocks: IFD loops, huge entry counts, offsets and counts that overflow.
#![no_main]
use imagelab::storage::metadata::exif;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(found) = exif::read_exif(data) {
        // Entries come from IFD0 and the Exif IFD, 12 bytes each (the two may overlap).
        assert!(found.entries.len() <= 2 * (data.len() / 12) + 2);
    }
});
