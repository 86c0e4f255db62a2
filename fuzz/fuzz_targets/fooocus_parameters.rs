//! Fooocus `parameters` JSON scheme.
#![no_main]
use imagelab::storage::metadata::{fooocus, format_human};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(found) = fooocus::recover_from_json(text) {
        let _ = format_human(&found);
    }
});
