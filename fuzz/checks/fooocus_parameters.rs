//! Fooocus `parameters` JSON scheme.

use imagelab::storage::metadata::{fooocus, format_human};

/// The target's check of one input: panics on what the target reports.
pub fn check(text: &str) {
    if let Ok(found) = fooocus::recover_from_json(text) {
        let _ = format_human(&found);
    }
}
