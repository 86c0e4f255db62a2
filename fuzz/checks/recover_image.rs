//! Any bytes as a PNG, JPEG or WebP: container walkers (JPEG segments, RIFF chunks, EXIF IFDs,
//! XMP, stealth bits), every settings parser and `format_human`; never a panic.

use imagelab::storage::metadata::{containers, format_human, recover_from_chunks};

/// The target's check of one input: panics on what the target reports.
pub fn check(data: &[u8]) {
    if let Ok(text) = containers::read_image_text(data) {
        let _ = text.to_png_text();
        if let Ok(found) = recover_from_chunks(&text.to_png_text()) {
            let _ = format_human(&found);
            let _ = serde_json::to_string(&found);
        }
    }
}
