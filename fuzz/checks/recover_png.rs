//! Whole-file recovery: any bytes, PNG or not, must give settings or an error, never a panic.

use imagelab::storage::metadata::{format_human, recover};

/// The target's check of one input: panics on what the target reports.
pub fn check(data: &[u8]) {
    if let Ok(found) = recover(data) {
        let _ = format_human(&found);
        let _ = serde_json::to_string(&found);
    }
}
