//! InvokeAI `invokeai_metadata` JSON.

use imagelab::storage::metadata::{format_human, invokeai};

/// The target's check of one input: panics on what the target reports.
pub fn check(text: &str) {
    if let Ok(found) = invokeai::recover_from_metadata(text) {
        let _ = format_human(&found);
    }
}
