//! ComfyUI `prompt` graphs: cycles, dangling links, odd types, deep nesting.
#![no_main]

#[path = "../checks/comfyui_graph.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|text: &str| check::check(text));
