//! Shared helpers for the tests that compare our outputs with diffusers' recorded references
//! (`tests/fixtures/diffusion/refs/<name>/{reference.safetensors,runs.json}`): loading them,
//! the relative L2 error, and one recorded run replayed through a pipeline.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use imagelab::diffusion::pipeline::{DiffusionPipeline, GenerationOutput, GenerationRequest};
use imagelab::diffusion::tokenizer::LongPromptMode;
use imagelab::vocab::{SamplerKind, SigmaSchedule};
use serde_json::Value;

use crate::util::repo_root;

/// `tests/fixtures/diffusion`.
pub fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/diffusion")
}

/// The tensors of `refs/<name>/reference.safetensors`.
pub fn reference(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures().join("refs").join(name).join("reference.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).expect("reference loads")
}

/// The `runs` of `refs/<name>/runs.json`, by key.
pub fn runs(name: &str) -> serde_json::Map<String, Value> {
    let path = fixtures().join("refs").join(name).join("runs.json");
    let text = fs_err::read_to_string(path).expect("runs.json");
    let value: Value = serde_json::from_str(&text).expect("runs.json parses");
    value["runs"].as_object().expect("runs").clone()
}

/// A named reference tensor.
pub fn get<'a>(tensors: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    tensors.get(key).unwrap_or_else(|| panic!("reference has {key}"))
}

/// ‖ours − theirs‖ / ‖theirs‖, in f64.
pub fn rel_l2(ours: &Tensor, theirs: &Tensor) -> f64 {
    assert_eq!(ours.dims(), theirs.dims(), "shapes");
    let ours = ours.to_dtype(DType::F64).expect("f64");
    let theirs = theirs.to_dtype(DType::F64).expect("f64");
    let diff = (&ours - &theirs).expect("diff").sqr().expect("sqr").sum_all().expect("sum");
    let norm = theirs.sqr().expect("sqr").sum_all().expect("sum");
    let diff: f64 = diff.to_scalar().expect("scalar");
    let norm: f64 = norm.to_scalar().expect("scalar");
    (diff / norm.max(1e-30)).sqrt()
}

/// Panics when the relative L2 error exceeds `tolerance`.
pub fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor, tolerance: f64) {
    let error = rel_l2(ours, theirs);
    assert!(error <= tolerance, "{what}: relative L2 error {error:e} > {tolerance:e}");
}

/// The generation request of one recorded run (`init` for img2img runs).
pub fn request_of(run: &Value, init: &image::RgbImage) -> GenerationRequest {
    let number = |key: &str| run[key].as_u64().unwrap_or_else(|| panic!("run has {key}"));
    let img2img = run["mode"] == "img2img";
    GenerationRequest {
        prompt: run["prompt"].as_str().expect("prompt").to_owned(),
        negative: run["negative"].as_str().expect("negative").to_owned(),
        width: usize::try_from(number("width")).expect("usize"),
        height: usize::try_from(number("height")).expect("usize"),
        steps: usize::try_from(number("steps")).expect("usize"),
        cfg: run["cfg"].as_f64().expect("cfg"),
        sampler: SamplerKind::parse(run["sampler"].as_str().expect("sampler")).expect("sampler"),
        schedule: SigmaSchedule::Automatic,
        seed: number("seed"),
        init_image: img2img.then(|| init.clone()),
        strength: run.get("strength").and_then(Value::as_f64).unwrap_or(1.0),
        long_prompt: LongPromptMode::Chunk,
        want_preview: false,
    }
}

/// `init.png`, the img2img source of every recorded img2img run.
pub fn init_image() -> image::RgbImage {
    image::open(fixtures().join("init.png")).expect("init.png").to_rgb8()
}

/// Runs `key` of `refs` through `pipeline` and checks the latents (and, when recorded, the
/// image) within `tolerance` and the step count.
pub fn check_run(
    what: &str,
    pipeline: &DiffusionPipeline,
    refs: &HashMap<String, Tensor>,
    key: &str,
    run: &Value,
    tolerance: f64,
) -> GenerationOutput {
    let request = request_of(run, &init_image());
    let output = pipeline
        .generate(&request, &mut |_| ControlFlow::Continue(()))
        .unwrap_or_else(|err| panic!("{what}/{key}: {err}"));
    let steps = get(refs, &format!("{key}.step_latents")).dims()[0];
    assert_eq!(output.steps_s.len(), steps, "{what}/{key}: steps run");
    assert_close(
        &format!("{what}/{key} latents"),
        &output.latents,
        get(refs, &format!("{key}.latents")),
        tolerance,
    );
    if let Some(image) = refs.get(&format!("{key}.image")) {
        assert_close(&format!("{what}/{key} image"), &output.image_tensor, image, tolerance);
    }
    output
}
