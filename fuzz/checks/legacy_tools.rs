//! InvokeAI 2.x (`Dream` command lines, `sd-metadata` JSON) and NovelAI (`Comment` JSON) text.

use imagelab::storage::metadata::{format_human, invokeai_legacy, novelai};

/// The target's check of one input: panics on what the target reports.
pub fn check(text: &str) {
    if let Ok(found) = invokeai_legacy::recover_from_dream(text) {
        let _ = format_human(&found);
    }
    if let Ok(found) = invokeai_legacy::recover_from_sd_metadata(text) {
        let _ = format_human(&found);
    }
    if let Ok(found) = novelai::recover(text, Some(text), Some(text), Some((64, 64))) {
        let _ = format_human(&found);
    }
    let _ = invokeai_legacy::split_negative(text);
}
