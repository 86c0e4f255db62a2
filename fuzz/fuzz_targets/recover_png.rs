#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = imagelab::storage::metadata::png_io::read_text_chunks(data);
});
