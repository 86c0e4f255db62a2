//! InvokeAI `invokeai_metadata` JSON.
#![no_main]
use imagelab::storage::metadata::{format_human, invokeai};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(found) = invokeai::recover_from_metadata(text) {
        let _ = format_human(&found);
    }
});
