//! ComfyUI `prompt` graphs: cycles, dangling links, odd types, deep nesting.
#![no_main]
use imagelab::storage::metadata::{comfyui, format_human};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(found) = comfyui::recover_from_prompt(text) {
        let _ = format_human(&found);
    }
});
