//! Issue 3: our SDXL/SD pipeline against diffusers' own outputs, recorded by
//! `tools/reference/make_fixtures.py` for tiny pipelines that diffusers saved itself.
//!
//! Tolerances: relative L2 error (‖ours − theirs‖ / ‖theirs‖). Single modules run in f32 with a
//! different float summation order than torch (candle's matmul/conv kernels), which gives
//! ~1e-6; we allow 1e-5 for text encoders and 1e-4 for the UNet and VAE. Full runs chain
//! several UNet calls and a scheduler: latents ≤ 1e-4 as the issue asks; 8-bit images may
//! differ by one level where a value sits on a rounding edge.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use imagelab::diffusion::clip::ClipTextModel;
use imagelab::diffusion::pipeline::{DiffusionPipeline, GenerationRequest};
use imagelab::diffusion::tokenizer::LongPromptMode;
use imagelab::diffusion::unet::{UNet2DConditionModel, UNetConditioning};
use imagelab::diffusion::vae::AutoencoderKl;
use imagelab::vocab::SamplerKind;
use serde_json::Value;

use crate::util::repo_root;

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/diffusion")
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures().join("refs").join(name).join("reference.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).expect("reference loads")
}

fn runs(name: &str) -> serde_json::Map<String, Value> {
    let path = fixtures().join("refs").join(name).join("runs.json");
    let text = fs_err::read_to_string(path).expect("runs.json");
    let value: Value = serde_json::from_str(&text).expect("runs.json parses");
    value["runs"].as_object().expect("runs").clone()
}

fn get<'a>(tensors: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    tensors.get(key).unwrap_or_else(|| panic!("reference has {key}"))
}

fn rel_l2(ours: &Tensor, theirs: &Tensor) -> f64 {
    assert_eq!(ours.dims(), theirs.dims(), "shapes");
    let ours = ours.to_dtype(DType::F64).expect("f64");
    let theirs = theirs.to_dtype(DType::F64).expect("f64");
    let diff = (&ours - &theirs).expect("diff").sqr().expect("sqr").sum_all().expect("sum");
    let norm = theirs.sqr().expect("sqr").sum_all().expect("sum");
    let diff: f64 = diff.to_scalar().expect("scalar");
    let norm: f64 = norm.to_scalar().expect("scalar");
    (diff / norm.max(1e-30)).sqrt()
}

fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor, tolerance: f64) {
    let error = rel_l2(ours, theirs);
    assert!(error <= tolerance, "{what}: relative L2 error {error:e} > {tolerance:e}");
}

fn ids(tensor: &Tensor) -> Vec<Vec<u32>> {
    let rows: Vec<Vec<i64>> = tensor.to_vec2().expect("ids");
    rows.into_iter()
        .map(|row| row.into_iter().map(|id| u32::try_from(id).expect("id")).collect())
        .collect()
}

const PIPELINES: [&str; 3] = ["sdxl_tiny", "sdxl_tiny_3lvl", "sd15_tiny"];

#[test]
fn clip_text_encoders_match_transformers() {
    for name in ["sdxl_tiny", "sd15_tiny"] {
        let refs = reference(name);
        let folder = fixtures().join(name);
        let te1 =
            ClipTextModel::load(&folder.join("text_encoder"), DType::F32, &Device::Cpu, false)
                .expect("te1");
        let out = te1.forward(&ids(get(&refs, "te1.ids"))).expect("te1 forward");
        assert_close(
            "te1 last_hidden_state",
            &out.last_normed,
            get(&refs, "te1.last_normed"),
            1e-5,
        );
        if name == "sdxl_tiny" {
            assert_close(
                "te1 hidden_states[-2]",
                &out.penultimate,
                get(&refs, "te1.penultimate"),
                1e-5,
            );
            let te2 = ClipTextModel::load(
                &folder.join("text_encoder_2"),
                DType::F32,
                &Device::Cpu,
                false,
            )
            .expect("te2");
            let out = te2.forward(&ids(get(&refs, "te2.ids"))).expect("te2 forward");
            assert_close(
                "te2 hidden_states[-2]",
                &out.penultimate,
                get(&refs, "te2.penultimate"),
                1e-5,
            );
            assert_close(
                "te2 text_embeds",
                out.text_embeds.as_ref().expect("projection"),
                get(&refs, "te2.text_embeds"),
                1e-5,
            );
        }
    }
}

#[test]
fn sdxl_prompt_encoding_matches_encode_prompt() {
    let refs = reference("sdxl_tiny");
    let pipeline = DiffusionPipeline::load(&fixtures().join("sdxl_tiny"), &Device::Cpu, DType::F32)
        .expect("load");
    let prompt = "a photo of an astronaut riding a horse on mars";
    let zero = pipeline.encode_prompt(prompt, "", LongPromptMode::Chunk).expect("encode");
    assert_close("prompt_embeds", &zero.prompt, get(&refs, "encode.prompt_embeds"), 1e-5);
    assert_close(
        "pooled",
        zero.pooled.as_ref().expect("pooled"),
        get(&refs, "encode.pooled"),
        1e-5,
    );
    let zeros: f32 =
        zero.negative.abs().expect("abs").sum_all().expect("sum").to_scalar().expect("scalar");
    assert_eq!(zeros, 0.0, "force_zeros_for_empty_prompt gives all-zero negative embeddings");
    let negative = pipeline
        .encode_prompt(prompt, "blurry, low quality", LongPromptMode::Chunk)
        .expect("encode");
    assert_close("negative_embeds", &negative.negative, get(&refs, "encode.negative_embeds"), 1e-5);
    assert_close(
        "negative_pooled",
        negative.negative_pooled.as_ref().expect("pooled"),
        get(&refs, "encode.negative_pooled"),
        1e-5,
    );
    // A long prompt is encoded in 75-token windows and says so; truncation keeps one.
    let long = "a castle on a hill, ".repeat(20);
    let token_count = pipeline.tokenizers()[0].encode(&long).len();
    let windows = token_count.div_ceil(75);
    assert!(windows >= 2, "{token_count} tokens");
    let chunked = pipeline.encode_prompt(&long, "", LongPromptMode::Chunk).expect("encode");
    assert_eq!(chunked.prompt.dims(), &[1, 77 * windows, 40]);
    assert_eq!(chunked.negative.dims(), &[1, 77 * windows, 40]);
    assert_eq!(chunked.notes.len(), 1, "{:?}", chunked.notes);
    let truncated = pipeline.encode_prompt(&long, "", LongPromptMode::Truncate).expect("encode");
    assert_eq!(truncated.prompt.dims()[1], 77);
    assert!(truncated.notes[0].contains("dropped"), "{:?}", truncated.notes);
}

#[test]
fn sd15_prompt_encoding_matches_encode_prompt() {
    let refs = reference("sd15_tiny");
    let pipeline = DiffusionPipeline::load(&fixtures().join("sd15_tiny"), &Device::Cpu, DType::F32)
        .expect("load");
    let encoded = pipeline
        .encode_prompt("a watercolor fox in the snow", "", LongPromptMode::Chunk)
        .expect("encode");
    assert_close("prompt_embeds", &encoded.prompt, get(&refs, "encode.prompt_embeds"), 1e-5);
    // SD 1.x encodes "" for an empty negative (no force_zeros in its model_index.json).
    assert_close(
        "negative_embeds",
        &encoded.negative,
        get(&refs, "encode.negative_embeds_empty"),
        1e-5,
    );
}

#[test]
fn unet_forward_matches_diffusers() {
    for name in PIPELINES {
        let refs = reference(name);
        let folder = fixtures().join(name).join("unet");
        let unet = UNet2DConditionModel::load(&folder, DType::F32, &Device::Cpu, false)
            .expect("unet loads");
        let timestep: Vec<f32> = get(&refs, "unet.timestep").to_vec1().expect("timestep");
        let conditioning = UNetConditioning {
            encoder_hidden_states: get(&refs, "unet.encoder_hidden_states"),
            text_embeds: refs.get("unet.text_embeds"),
            time_ids: refs.get("unet.time_ids"),
        };
        let out = unet
            .forward(get(&refs, "unet.sample"), f64::from(timestep[0]), conditioning)
            .expect("forward");
        assert_close(&format!("{name} unet"), &out, get(&refs, "unet.out"), 1e-4);
    }
}

#[test]
fn vae_decode_and_encode_match_diffusers() {
    for name in PIPELINES {
        let refs = reference(name);
        let vae = AutoencoderKl::load(
            &fixtures().join(name).join("vae"),
            DType::F32,
            &Device::Cpu,
            false,
        )
        .expect("vae");
        let decoded = vae.decode(get(&refs, "vae.z")).expect("decode");
        assert_close(&format!("{name} vae decode"), &decoded, get(&refs, "vae.decoded"), 1e-4);
        let distribution = vae.encode(get(&refs, "vae.x")).expect("encode");
        assert_close(&format!("{name} vae mean"), &distribution.mean, get(&refs, "vae.mean"), 1e-4);
        assert_close(&format!("{name} vae std"), &distribution.std, get(&refs, "vae.std"), 1e-4);
    }
}

/// Every recorded txt2img/img2img run: same seed ⇒ diffusers' latents and image.
#[test]
fn full_runs_match_diffusers_latents_and_images() {
    let init = image::open(fixtures().join("init.png")).expect("init.png").to_rgb8();
    for name in PIPELINES {
        let refs = reference(name);
        let pipeline = DiffusionPipeline::load(&fixtures().join(name), &Device::Cpu, DType::F32)
            .expect("load");
        for (key, run) in runs(name) {
            let sampler = SamplerKind::parse(run["sampler"].as_str().expect("sampler"))
                .expect("known sampler");
            let img2img = run["mode"] == "img2img";
            let request = GenerationRequest {
                prompt: run["prompt"].as_str().expect("prompt").to_owned(),
                negative: run["negative"].as_str().expect("negative").to_owned(),
                width: usize::try_from(run["width"].as_u64().expect("width")).expect("usize"),
                height: usize::try_from(run["height"].as_u64().expect("height")).expect("usize"),
                steps: usize::try_from(run["steps"].as_u64().expect("steps")).expect("usize"),
                cfg: run["cfg"].as_f64().expect("cfg"),
                sampler,
                schedule: imagelab::vocab::SigmaSchedule::Automatic,
                seed: run["seed"].as_u64().expect("seed"),
                init_image: img2img.then(|| init.clone()),
                strength: run.get("strength").and_then(Value::as_f64).unwrap_or(1.0),
                long_prompt: LongPromptMode::Chunk,
                want_preview: true,
            };
            let mut previews = 0;
            let output = pipeline
                .generate(&request, &mut |progress| {
                    previews += usize::from(progress.preview.is_some());
                    ControlFlow::Continue(())
                })
                .unwrap_or_else(|err| panic!("{name}/{key}: {err}"));
            let expected_steps = get(&refs, &format!("{key}.step_latents")).dims()[0];
            assert_eq!(output.steps_s.len(), expected_steps, "{name}/{key}: steps run");
            assert_eq!(previews, expected_steps);
            assert_close(
                &format!("{name}/{key} latents"),
                &output.latents,
                get(&refs, &format!("{key}.latents")),
                1e-4,
            );
            assert_close(
                &format!("{name}/{key} image"),
                &output.image_tensor,
                get(&refs, &format!("{key}.image")),
                1e-4,
            );
            let theirs: Vec<u8> = get(&refs, &format!("{key}.image_u8"))
                .flatten_all()
                .expect("flat")
                .to_vec1()
                .expect("u8");
            let worst = output
                .image
                .as_raw()
                .iter()
                .zip(&theirs)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap_or(0);
            assert!(worst <= 1, "{name}/{key}: 8-bit image differs by {worst}");
        }
    }
}

#[test]
fn cancel_stops_within_the_step_and_latents_save_as_comfyui_does() {
    let pipeline = DiffusionPipeline::load(&fixtures().join("sdxl_tiny"), &Device::Cpu, DType::F32)
        .expect("load");
    let mut request = GenerationRequest {
        prompt: "a red cube".to_owned(),
        negative: String::new(),
        width: 64,
        height: 64,
        steps: 3,
        cfg: 1.0,
        sampler: SamplerKind::Default,
        schedule: imagelab::vocab::SigmaSchedule::Automatic,
        seed: 3,
        init_image: None,
        strength: 1.0,
        long_prompt: LongPromptMode::Chunk,
        want_preview: false,
    };
    let mut calls = 0;
    let cancelled = pipeline.generate(&request, &mut |_| {
        calls += 1;
        ControlFlow::Break(())
    });
    assert!(matches!(cancelled, Err(imagelab::diffusion::DiffusionError::Cancelled)));
    assert_eq!(calls, 1);

    request.steps = 1;
    let output = pipeline.generate(&request, &mut |_| ControlFlow::Continue(())).expect("generate");
    let scaling = pipeline.vae().config().scaling_factor;
    let bytes = output.latent_safetensors(scaling).expect("safetensors");
    let saved = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).expect("parses");
    let latent = saved.get("latent_tensor").expect("key latent_tensor");
    let expected = (&output.latents / scaling).expect("scaled");
    assert_close("saved latent", latent, &expected, 0.0);
}

#[test]
fn bad_sizes_are_refused_with_a_message() {
    let pipeline = DiffusionPipeline::load(&fixtures().join("sdxl_tiny"), &Device::Cpu, DType::F32)
        .expect("load");
    let request = GenerationRequest {
        prompt: "x".to_owned(),
        negative: String::new(),
        width: 63,
        height: 64,
        steps: 2,
        cfg: 5.0,
        sampler: SamplerKind::Default,
        schedule: imagelab::vocab::SigmaSchedule::Automatic,
        seed: 0,
        init_image: None,
        strength: 1.0,
        long_prompt: LongPromptMode::Chunk,
        want_preview: false,
    };
    let err = pipeline.generate(&request, &mut |_| ControlFlow::Continue(())).expect_err("refused");
    assert!(err.to_string().contains("63x64"), "{err}");
}

fn astronaut_request(steps: usize) -> GenerationRequest {
    GenerationRequest {
        prompt: "a photo of an astronaut riding a horse on mars".to_owned(),
        negative: String::new(),
        width: 64,
        height: 64,
        steps,
        cfg: 5.0,
        sampler: SamplerKind::Default,
        schedule: imagelab::vocab::SigmaSchedule::Automatic,
        seed: 42,
        init_image: None,
        strength: 1.0,
        long_prompt: LongPromptMode::Chunk,
        want_preview: true,
    }
}

/// Issue 15: the f16 path GPUs take, end to end (text encoders, UNet and VAE all in f16), run
/// on the CPU so the dtype plumbing and numerics are exercised without a GPU, against
/// diffusers' f32 run. f16 has an 11-bit mantissa: through 5 steps the latents stay within 1 %
/// (relative L2) and the image within 2 %. The tiny VAE does not overflow in f16, so there is
/// no fallback and no note. (bf16 cannot run here: candle's CPU matmul has no bf16 kernel; its
/// attention and VAE policy are covered by unit tests.)
#[test]
fn half_precision_pipeline_stays_close_to_f32_reference() {
    let refs = reference("sdxl_tiny");
    let pipeline = DiffusionPipeline::load(&fixtures().join("sdxl_tiny"), &Device::Cpu, DType::F16)
        .expect("load f16");
    assert_eq!(pipeline.vae().dtype(), DType::F16, "the VAE runs in the pipeline's dtype");
    let output = pipeline
        .generate(&astronaut_request(5), &mut |_| ControlFlow::Continue(()))
        .expect("generate f16");
    let key = "txt2img_cfg5_zero_neg";
    assert_close("f16 latents", &output.latents, get(&refs, &format!("{key}.latents")), 1e-2);
    assert_close("f16 image", &output.image_tensor, get(&refs, &format!("{key}.image")), 2e-2);
    assert_eq!(pipeline.active_vae().dtype(), DType::F16, "no fallback");
    assert!(!output.notes.iter().any(|note| note.starts_with("VAE")), "{:?}", output.notes);
}

/// Issue 15: an f16 VAE whose result overflows (as SDXL's own VAE does on real latents) is
/// redone in f32, stays in f32 for that model, and every image made from then on says so in
/// its notes. Latents far beyond f16's range (65 504) stand in for the overflowing activations:
/// in f16 they become inf and the GroupNorms turn that into NaN; in f32 they decode to finite
/// values, the same as an f32 pipeline's.
#[test]
fn overflowing_f16_vae_falls_back_to_f32_and_says_so() {
    let folder = fixtures().join("sdxl_tiny");
    let half = DiffusionPipeline::load(&folder, &Device::Cpu, DType::F16).expect("load f16");
    let full = DiffusionPipeline::load(&folder, &Device::Cpu, DType::F32).expect("load f32");
    let refs = reference("sdxl_tiny");
    let latents = get(&refs, "txt2img_cfg5_zero_neg.latents");

    // Ordinary latents: f16 decodes them, no fallback.
    let ordinary = half.decode(latents).expect("decode");
    assert_close("f16 decode", &ordinary, &full.decode(latents).expect("f32 decode"), 2e-2);
    assert!(half.vae_note().is_none());

    let huge = (latents * 1e6).expect("scale");
    let overflowed = half.vae().decode(&huge).expect("raw f16 decode");
    assert!(!imagelab::diffusion::pipeline::all_finite(&overflowed).expect("check"));
    let decoded = half.decode(&huge).expect("decode with fallback");
    assert!(imagelab::diffusion::pipeline::all_finite(&decoded).expect("check"));
    assert_close("fallback decode", &decoded, &full.decode(&huge).expect("f32 decode"), 1e-5);
    assert_eq!(half.active_vae().dtype(), DType::F32);
    assert_eq!(half.vae_note(), Some(imagelab::diffusion::pipeline::VAE_F32_FALLBACK_NOTE));

    // From now on the model decodes in f32 and its images carry the note.
    let output = half
        .generate(&astronaut_request(2), &mut |_| ControlFlow::Continue(()))
        .expect("generate after fallback");
    assert!(
        output
            .notes
            .iter()
            .any(|note| note == imagelab::diffusion::pipeline::VAE_F32_FALLBACK_NOTE),
        "{:?}",
        output.notes
    );
}

/// Issue 5: the tiled VAE decode against the full decode, on latents of a real 3-step run of
/// the tiny SDXL pipeline at 128×128 (64×64 latents, 16 tiles of 16² with 4 of overlap).
///
/// Tiles cannot be exact: each tile's GroupNorms take their mean and variance over the tile,
/// and the mid-block attention attends within the tile only. Measured on [0, 1] pixels (f32,
/// CPU): tiles of 16 latent px with 4 of overlap give max |Δ| 0.130, mean |Δ| 0.0114; tiles of
/// 32 with 8 give max 0.053, mean 0.0056. We allow about 1.5× those (16/4: max 0.2, mean 0.02;
/// 32/8: max 0.08, mean 0.01), and larger tiles (more context per GroupNorm) must be closer.
/// A decode that drops, misplaces or does not blend a tile is off by far more.
#[test]
fn tiled_vae_decode_is_close_to_the_full_decode() {
    let pipeline = DiffusionPipeline::load(&fixtures().join("sdxl_tiny"), &Device::Cpu, DType::F32)
        .expect("pipeline loads");
    let request = GenerationRequest {
        prompt: "a red cube on a blue floor".to_owned(),
        negative: String::new(),
        width: 128,
        height: 128,
        steps: 3,
        cfg: 5.0,
        sampler: SamplerKind::Default,
        schedule: imagelab::vocab::SigmaSchedule::Automatic,
        seed: 11,
        init_image: None,
        strength: 1.0,
        long_prompt: LongPromptMode::Chunk,
        want_preview: false,
    };
    let output =
        pipeline.generate(&request, &mut |_| ControlFlow::Continue(())).expect("generates");
    let full = pipeline.decode(&output.latents).expect("full decode");
    let max_and_mean = |tiled: &Tensor| -> (f32, f32) {
        let diff = (tiled - &full).expect("diff").abs().expect("abs");
        let max: f32 =
            diff.flatten_all().expect("flat").max(0).expect("max").to_scalar().expect("s");
        let mean: f32 = diff.mean_all().expect("mean").to_scalar().expect("s");
        (max, mean)
    };
    let tiled = pipeline.decode_tiled(&output.latents, 16, 4).expect("tiled decode");
    assert_eq!(tiled.dims(), full.dims());
    let (max, mean) = max_and_mean(&tiled);
    let (max_big, mean_big) =
        max_and_mean(&pipeline.decode_tiled(&output.latents, 32, 8).expect("tiled"));
    assert!(max <= 0.2 && mean <= 0.02, "16/4: max {max} mean {mean}");
    assert!(max_big <= 0.08 && mean_big <= 0.01, "32/8: max {max_big} mean {mean_big}");
    assert!(mean_big < mean, "larger tiles must be closer to the full decode");
    let whole = pipeline.decode_tiled(&output.latents, 64, 4).expect("one tile");
    assert_eq!(max_and_mean(&whole), (0.0, 0.0), "a single tile is the full decode");
    assert!(pipeline.decode_tiled(&output.latents, 8, 8).is_err(), "overlap must be < tile");
}

/// Issue 5: the VAE encoder (only img2img needs it) is built on the first img2img, not at
/// load, and the same one is reused after; txt2img never builds it. The pipeline's byte size
/// (what the model cache accounts) grows by exactly the encoder's f32 tensors, counted here
/// from the VAE weights file itself, and only once it is built.
#[test]
fn vae_encoder_loads_on_first_img2img_and_is_reused() {
    use imagelab::models::cache::ByteSize;
    let folder = fixtures().join("sdxl_tiny");
    let vae_weights = candle_core::safetensors::load(
        folder.join("vae/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .expect("vae weights");
    let encoder_bytes: u64 = vae_weights
        .iter()
        .filter(|(name, _)| name.starts_with("encoder.") || name.starts_with("quant_conv."))
        .map(|(_, tensor)| (tensor.elem_count() * DType::F32.size_in_bytes()) as u64)
        .sum();
    assert!(encoder_bytes > 0);

    let pipeline = DiffusionPipeline::load(&folder, &Device::Cpu, DType::F32).expect("load");
    assert!(!pipeline.vae().encoder_is_loaded(), "load builds only the decoder");
    assert_eq!(pipeline.vae().encoder_byte_size(), 0);
    let before = pipeline.byte_size();

    let init = image::open(fixtures().join("init.png")).expect("init.png").to_rgb8();
    let mut request = GenerationRequest {
        prompt: "a red cube".to_owned(),
        negative: String::new(),
        width: 64,
        height: 64,
        steps: 2,
        cfg: 1.0,
        sampler: SamplerKind::Default,
        schedule: imagelab::vocab::SigmaSchedule::Automatic,
        seed: 7,
        init_image: None,
        strength: 1.0,
        long_prompt: LongPromptMode::Chunk,
        want_preview: false,
    };
    pipeline.generate(&request, &mut |_| ControlFlow::Continue(())).expect("txt2img");
    assert!(!pipeline.vae().encoder_is_loaded(), "txt2img never needs the encoder");
    assert_eq!(pipeline.byte_size(), before);

    request.init_image = Some(init);
    request.strength = 0.6;
    let first = pipeline.generate(&request, &mut |_| ControlFlow::Continue(())).expect("img2img");
    assert!(pipeline.vae().encoder_is_loaded());
    assert_eq!(pipeline.vae().encoder_byte_size(), encoder_bytes);
    assert_eq!(pipeline.byte_size(), before + encoder_bytes);
    let built = pipeline.vae().encoder().expect("encoder");

    let second = pipeline.generate(&request, &mut |_| ControlFlow::Continue(())).expect("again");
    let reused = pipeline.vae().encoder().expect("encoder");
    assert!(std::sync::Arc::ptr_eq(&built, &reused), "the second img2img reuses the encoder");
    assert_eq!(pipeline.byte_size(), before + encoder_bytes, "counted once");
    assert_close("img2img with the reused encoder", &second.latents, &first.latents, 0.0);
}

/// A pipeline whose UNet and second text encoder are sharded `fp16` variants, as
/// `save_pretrained(variant="fp16", max_shard_size=…)` writes them
/// (`tools/reference/make_sharded_fp16.py)`: the hub planner and the loader choose the same files
/// (the shards and their `*.safetensors.index.fp16.json`), the loader maps every shard, and the
/// image matches what diffusers made from the same folder with `variant="fp16"` in f32.
#[test]
fn sharded_fp16_variant_loads_like_diffusers() {
    use imagelab::diffusion::weights::component_weights;
    use imagelab::models::hub::{WeightVariant, list_files, plan_pipeline};

    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("pipeline");
    for file in imagelab::models::hub::list_files(&fixtures().join("sdxl_tiny")) {
        let target = folder.join(&file);
        fs_err::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        fs_err::copy(fixtures().join("sdxl_tiny").join(&file), target).expect("copy");
    }
    fs_err::remove_file(folder.join("unet/diffusion_pytorch_model.safetensors")).expect("rm");
    fs_err::remove_file(folder.join("text_encoder_2/model.safetensors")).expect("rm");
    let sharded = fixtures().join("sdxl_tiny_sharded_fp16");
    for file in list_files(&sharded) {
        fs_err::copy(sharded.join(&file), folder.join(&file)).expect("copy shard");
    }

    let listing = list_files(&folder);
    let model_index: Value = serde_json::from_str(
        &fs_err::read_to_string(folder.join("model_index.json")).expect("model_index.json"),
    )
    .expect("json");
    let expected_unet = [
        "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
    ];
    for prefer in [WeightVariant::Fp16, WeightVariant::Full] {
        let plan = plan_pipeline(&model_index, &listing, prefer).expect("plan");
        let unet = plan.iter().find(|c| c.name == "unet").expect("unet");
        assert_eq!(unet.weights, expected_unet, "{prefer:?}");
        assert!(
            unet.files
                .contains(&"unet/diffusion_pytorch_model.safetensors.index.fp16.json".to_owned()),
            "{:?}",
            unet.files
        );
        let encoder = plan.iter().find(|c| c.name == "text_encoder_2").expect("text_encoder_2");
        assert_eq!(encoder.weights.len(), 2, "{:?}", encoder.weights);
        assert_eq!(encoder.variant.as_deref(), Some("fp16"));
        for prefer_fp16 in [true, false] {
            let loaded =
                component_weights(&folder.join("unet"), "diffusion_pytorch_model", prefer_fp16)
                    .expect("unet weights");
            let loaded: Vec<String> = loaded
                .iter()
                .map(|p| format!("unet/{}", p.file_name().expect("name").to_string_lossy()))
                .collect();
            assert_eq!(loaded, expected_unet, "the loader chooses what the planner downloads");
        }
    }

    let pipeline = DiffusionPipeline::load(&folder, &Device::Cpu, DType::F32).expect("load");
    let request = GenerationRequest {
        prompt: "a red cube".to_owned(),
        negative: String::new(),
        width: 64,
        height: 64,
        steps: 3,
        cfg: 1.0,
        sampler: SamplerKind::Default,
        schedule: imagelab::vocab::SigmaSchedule::Automatic,
        seed: 3,
        init_image: None,
        strength: 1.0,
        long_prompt: LongPromptMode::Chunk,
        want_preview: false,
    };
    let output = pipeline.generate(&request, &mut |_| ControlFlow::Continue(())).expect("generate");
    let path = fixtures().join("refs/sdxl_tiny_sharded_fp16.safetensors");
    let refs = candle_core::safetensors::load(&path, &Device::Cpu).expect("reference");
    let theirs: Vec<u8> =
        get(&refs, "image_u8").flatten_all().expect("flat").to_vec1().expect("u8");
    let worst =
        output.image.as_raw().iter().zip(&theirs).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
    assert!(worst <= 1, "8-bit image differs from diffusers by {worst}");
}
