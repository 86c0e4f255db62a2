//! ComfyUI `prompt` graphs: cycles, dangling links, odd types, deep nesting.

use imagelab::storage::metadata::{comfyui, format_human};

/// The target's check of one input: panics on what the target reports.
pub fn check(text: &str) {
    if let Ok(found) = comfyui::recover_from_prompt(text) {
        let _ = format_human(&found);
    }
}
