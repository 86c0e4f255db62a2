//! Issue 11: single-file checkpoints (original Stability key names) against diffusers'
//! `from_single_file`, on the tiny files diffusers' own conversion scripts wrote
//! (`tools/reference/make_single_file_refs.py`); the architectures' conventions on the real
//! files' tensor manifests; refusals before any work.

use candle_core::{DType, Device};
use imagelab::diffusion::pipeline::DiffusionPipeline;

use crate::refs::{check_run, fixtures, reference, runs};

/// Every recorded run of each tiny single file, loaded with its config folder as diffusers was
/// (`from_single_file(file, config=…)`): f16 SDXL, f32 SD 1.5, bf16 SD 1.5 with EMA and LDM
/// buffers, f16 SD 2.x v-prediction.
#[test]
fn single_files_match_from_single_file() {
    for (file, config) in [
        ("sdxl_tiny.f16", "sdxl_tiny"),
        ("sd15_tiny", "sd15_tiny"),
        ("sd15_tiny.ema_bf16", "sd15_tiny"),
        ("sd2v_tiny.f16", "sd2v_tiny"),
    ] {
        let path = fixtures().join("single_file").join(format!("{file}.safetensors"));
        let config = fixtures().join("single_file/configs").join(config);
        let pipeline =
            DiffusionPipeline::load_single_file(&path, Some(&config), &Device::Cpu, DType::F32)
                .unwrap_or_else(|err| panic!("{file}: {err}"));
        let refs = reference(&format!("single_file/{file}"));
        for (key, run) in runs(&format!("single_file/{file}")) {
            check_run(file, &pipeline, &refs, &key, &run, 1e-4);
        }
    }
}
