//! Whole-file recovery: any bytes, PNG or not, must give settings or an error, never a panic.
#![no_main]
use imagelab::storage::metadata::{format_human, recover};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(found) = recover(data) {
        let _ = format_human(&found);
        let _ = serde_json::to_string(&found);
    }
});
