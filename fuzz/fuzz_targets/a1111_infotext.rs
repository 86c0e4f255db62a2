//! A1111 infotext: the splitter, the pair scanner and the mapping to a request.
#![no_main]
use imagelab::storage::metadata::{a1111, format_human, infotext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let parsed = infotext::parse_generation_parameters(text);
    // Every field value came from the text (unquoted) or is a split size.
    assert!(parsed.fields.iter().all(|(key, _)| !key.is_empty()));
    let found = a1111::recover_from_parameters(text);
    let _ = format_human(&found);
});
