//! A1111 infotext: the splitter, the pair scanner and the mapping to a request.

use imagelab::storage::metadata::{a1111, format_human, infotext};

/// The target's check of one input: panics on what the target reports.
pub fn check(text: &str) {
    let parsed = infotext::parse_generation_parameters(text);
    // Every field value came from the text (unquoted) or is a split size.
    assert!(parsed.fields.iter().all(|(key, _)| !key.is_empty()));
    let found = a1111::recover_from_parameters(text);
    let _ = format_human(&found);
}
