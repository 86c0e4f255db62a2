//! The fuzz targets' checks, one module per target: the cargo-fuzz binaries
//! (`fuzz_targets/`) call them on generated inputs, and the integration tests
//! (`tests/it/fuzz_corpus.rs`) replay the committed seed corpora through them on every test run.

pub mod a1111_infotext;
pub mod comfyui_graph;
#[cfg(unix)]
pub mod env_mode;
pub mod exif_tiff;
pub mod fooocus_parameters;
pub mod infotext_round_trip;
pub mod invokeai_metadata;
pub mod legacy_tools;
pub mod profiles_ron;
pub mod recover_image;
pub mod recover_png;
pub mod request_flags;
pub mod styles_file;
pub mod xmp_packet;
