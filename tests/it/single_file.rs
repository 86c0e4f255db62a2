//! Issue 11: single-file checkpoints (original Stability key names) against diffusers'
//! `from_single_file`, on the tiny files diffusers' own conversion scripts wrote
//! (`tools/reference/make_single_file_refs.py`); the architectures' conventions on the real
//! files' tensor manifests; refusals before any work.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device};
use imagelab::diffusion::pipeline::DiffusionPipeline;
use imagelab::diffusion::single_file::SingleFile;
use imagelab::models::checkpoint::CheckpointArchitecture;
use imagelab::models::safetensors_header::{SafetensorsHeader, TensorEntry};

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

/// A manifest of a real architecture's file (`single_file/manifests/*.json.zz`).
fn manifest(name: &str) -> serde_json::Value {
    let path = fixtures().join("single_file/manifests").join(format!("{name}.json.zz"));
    let bytes = fs_err::read(&path).expect("manifest");
    let json = fdeflate::decompress_to_vec(&bytes).expect("zlib");
    serde_json::from_slice(&json).expect("json")
}

/// The header a manifest describes (names, shapes, dtypes; no data).
fn manifest_header(manifest: &serde_json::Value, name: &str) -> SafetensorsHeader {
    let tensors = manifest["tensors"]
        .as_object()
        .expect("tensors")
        .iter()
        .map(|(tensor, entry)| {
            let shape: Vec<u64> = serde_json::from_value(entry["shape"].clone()).expect("shape");
            let dtype = entry["dtype"].as_str().expect("dtype").to_owned();
            (tensor.clone(), TensorEntry { dtype, shape, data_offsets: (0, 0) })
        })
        .collect();
    SafetensorsHeader {
        path: PathBuf::from(format!("{name}.safetensors")),
        tensors,
        metadata: BTreeMap::new(),
        data_bytes: 0,
    }
}

/// `ours[key]` equals `theirs[key]` for every key we set, a number standing for a list of it.
fn assert_config_agrees(what: &str, ours: &serde_json::Value, theirs: &serde_json::Value) {
    use serde_json::Value;
    let ours = ours.as_object().expect("object");
    for (key, value) in ours {
        if key.starts_with('_') || key == "architectures" {
            continue;
        }
        let expected = &theirs[key.as_str()];
        let agrees = match (value, expected) {
            (Value::Number(a), Value::Number(b)) => {
                (a.as_f64().unwrap_or(f64::NAN) - b.as_f64().unwrap_or(0.0)).abs() < 1e-12
            }
            (Value::Array(list), Value::Number(_)) => list.iter().all(|item| item == expected),
            (Value::Number(_), Value::Array(list)) => list.iter().all(|item| item == value),
            _ => value == expected,
        };
        assert!(agrees, "{what}.{key}: ours {value}, diffusers {expected}");
    }
}

/// On the real SDXL base, SD 1.5 and SD 2.1 files (their manifests: every tensor's name and
/// shape as the conversion scripts write them), the architecture is recognised, every tensor a
/// diffusers/transformers model has is mapped with its shape (and nothing else), and the
/// configs inferred from the shapes and the conventions are those `from_single_file` uses.
#[test]
fn real_architectures_map_and_infer_as_diffusers_does() {
    for (name, architecture) in [
        ("sdxl_base", CheckpointArchitecture::SdxlBase),
        ("sd15", CheckpointArchitecture::Sd1),
        ("sd21_768_v", CheckpointArchitecture::Sd2),
    ] {
        let manifest = manifest(name);
        let file = SingleFile::from_header(Arc::new(manifest_header(&manifest, name)), None)
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(file.info.architecture, architecture, "{name}");
        let mut components = vec![("unet", &file.unet), ("vae", file.vae.as_ref().expect("vae"))];
        for (index, part) in file.text_encoders.iter().enumerate() {
            components.push((["text_encoder", "text_encoder_2"][index], &part.encoder));
        }
        for (component, part) in components {
            let theirs: BTreeMap<String, Vec<usize>> =
                serde_json::from_value(manifest["diffusers"][component].clone()).expect("names");
            let ours: BTreeMap<String, Vec<usize>> = part
                .weights
                .mapped_shapes()
                .expect("mapped")
                .into_iter()
                // transformers 5's CLIPTextModel has no `text_model.` level; the hub names do.
                .map(|(k, v)| {
                    if theirs.contains_key(&k) {
                        (k, v)
                    } else {
                        (k.strip_prefix("text_model.").map_or(k.clone(), str::to_owned), v)
                    }
                })
                .collect();
            let missing: Vec<_> =
                theirs.keys().filter(|k| !ours.contains_key(*k)).take(5).collect();
            let extra: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).take(5).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{name}/{component}: missing {missing:?}, extra {extra:?}"
            );
            for (tensor, shape) in &theirs {
                assert_eq!(&ours[tensor], shape, "{name}/{component}/{tensor}");
            }
            assert_config_agrees(
                &format!("{name}/{component}"),
                &part.config,
                &manifest["configs"][component],
            );
        }
        assert_config_agrees(
            &format!("{name}/scheduler"),
            &file.scheduler,
            &manifest["configs"]["scheduler"],
        );
        assert_eq!(file.scheduler["_class_name"], manifest["configs"]["scheduler"]["_class_name"]);
    }
}

/// On the tiny files (whose head counts and group sizes are not the architectures', so they
/// load with their config folder), every config value the tensors' shapes determine is
/// inferred exactly as the folder says.
#[test]
fn tiny_files_shapes_give_their_configs() {
    use imagelab::diffusion::single_file::infer::{self, Shapes};
    use imagelab::diffusion::weights::ComponentWeights;
    fn shapes_of(
        weights: &ComponentWeights,
    ) -> (Arc<SafetensorsHeader>, Arc<imagelab::diffusion::single_file::names::NameMap>) {
        match weights {
            ComponentWeights::Mapped { header, map, .. } => (Arc::clone(header), Arc::clone(map)),
            ComponentWeights::Files(_) => panic!("a single file is mapped"),
        }
    }
    for (file, config) in [
        ("sdxl_tiny.f16", "sdxl_tiny"),
        ("sd15_tiny", "sd15_tiny"),
        ("sd15_tiny.ema_bf16", "sd15_tiny"),
        ("sd2v_tiny.f16", "sd2v_tiny"),
    ] {
        let path = fixtures().join("single_file").join(format!("{file}.safetensors"));
        let folder = fixtures().join("single_file/configs").join(config);
        let single = SingleFile::open_with(&path, Some(&folder)).expect("opens");
        let pooled = single
            .text_encoders
            .get(1)
            .and_then(|part| part.encoder.config["projection_dim"].as_u64())
            .map(|p| p as usize);
        let (header, map) = shapes_of(&single.unet.weights);
        let ours =
            infer::unet_shape_config(&Shapes { header: &header, map: &map }, pooled).expect("unet");
        assert_config_agrees(&format!("{file}/unet"), &ours, &single.unet.config);
        let vae = single.vae.as_ref().expect("vae");
        let (header, map) = shapes_of(&vae.weights);
        let ours = infer::vae_shape_config(&Shapes { header: &header, map: &map }).expect("vae");
        assert_config_agrees(&format!("{file}/vae"), &ours, &vae.config);
        for part in &single.text_encoders {
            let projection = part.encoder.config["projection_dim"].as_u64().filter(|_| {
                pooled.is_some()
                    && part.encoder.config["architectures"][0] == "CLIPTextModelWithProjection"
            });
            let (header, map) = shapes_of(&part.encoder.weights);
            let ours = infer::clip_shape_config(
                &Shapes { header: &header, map: &map },
                projection.map(|p| p as usize),
            )
            .expect("clip");
            assert_config_agrees(&format!("{file}/text encoder"), &ours, &part.encoder.config);
        }
    }
}

fn refusal(path: &std::path::Path) -> String {
    match DiffusionPipeline::load_single_file(path, None, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(err) => err.to_string(),
    }
}

/// What cannot be mapped is refused from its header, naming the file and what it looks like.
#[test]
fn unmappable_files_are_refused_naming_what_they_look_like() {
    let refuse = fixtures().join("single_file/refuse");
    for (file, looks_like) in [
        ("flux_like", "Flux.1 transformer"),
        ("sd3_like", "Stable Diffusion 3"),
        ("sd15_inpainting_9ch", "9-channel inpainting SD 1.x UNet"),
        ("sdxl_refiner_like", "SDXL refiner"),
    ] {
        let path = refuse.join(format!("{file}.safetensors"));
        let message = refusal(&path);
        assert!(message.contains(looks_like), "{file}: {message}");
        assert!(
            message.ends_with(&path.display().to_string()),
            "{file}: the path comes last: {message}"
        );
    }
    let truncated = refuse.join("sd15_truncated.safetensors");
    let message = refusal(&truncated);
    assert!(message.contains("truncated") && message.contains("sd15_truncated"), "{message}");
    // A download cut inside its header, and a LoRA or a lone VAE given as a model.
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes =
        fs_err::read(fixtures().join("single_file/sdxl_tiny.f16.safetensors")).expect("read");
    let cut = dir.path().join("cut.safetensors");
    fs_err::write(&cut, &bytes[..4096]).expect("write");
    assert!(refusal(&cut).contains("truncated"), "{}", refusal(&cut));
    let lora = fixtures().join("lora/lora_a.kohya_sgm.safetensors");
    assert!(refusal(&lora).contains("LoRA adapter"), "{}", refusal(&lora));
    let vae = fixtures().join("single_file/vae/tiny_vae.safetensors");
    assert!(refusal(&vae).contains("lone VAE"), "{}", refusal(&vae));
}

/// `--vae`: a VAE swapped in, from a diffusers folder (as madebyollin/sdxl-vae-fp16-fix) or a
/// lone file with the original names (A1111/ComfyUI), into a single file and into a folder,
/// gives diffusers' output with that VAE; in f16 it runs in half precision, as the model's own
/// VAE does (both checked for overflow).
#[test]
fn a_swapped_in_vae_matches_diffusers_and_keeps_half_precision() {
    use imagelab::diffusion::pipeline::{PipelineParts, vae_override};
    let vae_dir = fixtures().join("single_file/vae");
    let folder_vae = vae_dir.join("tiny_vae_diffusers");
    let file_vae = vae_dir.join("tiny_vae.safetensors");
    let refs = reference("single_file/vae_override");
    let runs = runs("single_file/vae_override");
    let single = fixtures().join("single_file/sdxl_tiny.f16.safetensors");
    let config = fixtures().join("single_file/configs/sdxl_tiny");
    let load = |model: &std::path::Path,
                config: Option<&std::path::Path>,
                vae: &std::path::Path,
                dtype: DType| {
        let parts = PipelineParts::open(model, config, false).expect("parts");
        let vae_config = folder_vae.join("config.json");
        let component = vae_override(
            vae,
            parts.scaling_factor(),
            vae.is_file().then_some(vae_config.as_path()),
            false,
        )
        .expect("vae");
        DiffusionPipeline::from_parts(parts.with_vae(component, vae), &Device::Cpu, dtype)
            .expect("loads")
    };
    for vae in [&folder_vae, &file_vae] {
        let pipeline = load(&single, Some(&config), vae, DType::F32);
        check_run(
            "single file + vae",
            &pipeline,
            &refs,
            "single_file_txt2img",
            &runs["single_file_txt2img"],
            1e-4,
        );
    }
    let pipeline = load(&fixtures().join("sdxl_tiny_3lvl"), None, &folder_vae, DType::F32);
    check_run("folder + vae", &pipeline, &refs, "folder_img2img", &runs["folder_img2img"], 1e-4);
    let half = load(&single, Some(&config), &folder_vae, DType::F16);
    assert_eq!(half.vae().dtype(), DType::F16, "an fp16-safe VAE is not upcast");
    let own = DiffusionPipeline::load_single_file(&single, Some(&config), &Device::Cpu, DType::F16)
        .expect("own vae");
    // Every VAE runs in f16 with the overflow check; an f32 fallback is built from the single
    // file's own VAE tensors when a result overflows (`vae_precision.rs`, tested in diffusion.rs).
    assert_eq!(own.vae().dtype(), DType::F16, "checked f16, as main's VAE precision policy");
    assert!(own.vae_note().is_none());
}

/// A checkpoint without its VAE says so and names `--vae`; with one given it loads.
#[test]
fn a_checkpoint_without_a_vae_asks_for_one() {
    use imagelab::diffusion::pipeline::{PipelineParts, vae_override};
    let source = fixtures().join("single_file/sd15_tiny.safetensors");
    let tensors = candle_core::safetensors::load(&source, &Device::Cpu).expect("load");
    let kept: std::collections::HashMap<String, candle_core::Tensor> =
        tensors.into_iter().filter(|(name, _)| !name.starts_with("first_stage_model.")).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no_vae.safetensors");
    candle_core::safetensors::save(&kept, &path).expect("save");
    let config = fixtures().join("single_file/configs/sd15_tiny");
    let err = DiffusionPipeline::load_single_file(&path, Some(&config), &Device::Cpu, DType::F32)
        .expect_err("no vae");
    assert!(err.to_string().contains("--vae"), "{err}");
    let parts = PipelineParts::open(&path, Some(&config), false).expect("parts");
    let vae = fixtures().join("single_file/vae/tiny_vae_diffusers");
    let component = vae_override(&vae, parts.scaling_factor(), None, false).expect("vae");
    DiffusionPipeline::from_parts(parts.with_vae(component, &vae), &Device::Cpu, DType::F32)
        .expect("loads");
}
