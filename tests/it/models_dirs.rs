//! Issue 11: models as users keep them — A1111 and ComfyUI checkpoint folders, single-file hub
//! repos beside diffusers ones — listed, resolved by name, swept with the mock and with candle,
//! and run from the built binary (with a swapped-in VAE) against diffusers' output.
//!
//! The tiny single files carry their diffusers config folder beside them (`<stem>.config/`, as
//! diffusers' `from_single_file(config=…)`): their heads and group counts are not the real
//! architectures' (see tools/reference/README.md).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use imagelab::engine::candle_backend::CandleBackend;
use imagelab::engine::mock::MockBackend;
use imagelab::engine::{
    Backend, Engine, EngineConfig, Event, JobId, JobSummary, no_waker, prepare_plan,
};
use imagelab::models::Catalog;
use imagelab::models::catalog::{CatalogEntry, EntryKind, ModelDefaults, ModelSource};
use imagelab::models::checkpoint::CheckpointArchitecture;
use imagelab::models::library::{LocalKind, ModelLibrary};
use imagelab::request::{Profiles, Request, Sweep};

use crate::refs::fixtures;
use crate::util::{imagelab, pngs_below, stderr, stdout};

fn copy_dir(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).expect("dir");
    for entry in fs_err::read_dir(from).expect("read") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs_err::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A checkpoint with its config folder beside it.
fn put_checkpoint(folder: &Path, name: &str, fixture: &str, config: &str) {
    fs_err::create_dir_all(folder).expect("dir");
    let single = fixtures().join("single_file");
    fs_err::copy(
        single.join(format!("{fixture}.safetensors")),
        folder.join(format!("{name}.safetensors")),
    )
    .expect("copy");
    copy_dir(&single.join("configs").join(config), &folder.join(format!("{name}.config")));
}

fn put_vae(folder: &Path) {
    fs_err::create_dir_all(folder.join("tiny_vae.config")).expect("dir");
    let vae = fixtures().join("single_file/vae");
    fs_err::copy(vae.join("tiny_vae.safetensors"), folder.join("tiny_vae.safetensors"))
        .expect("copy");
    fs_err::copy(
        vae.join("tiny_vae_diffusers/config.json"),
        folder.join("tiny_vae.config/config.json"),
    )
    .expect("copy");
}

/// `stable-diffusion-webui/models/{Stable-diffusion,Lora,VAE}` with sub-folders, a pickle, a
/// Flux file and a preview image, as A1111 users have them.
fn a1111(root: &Path) -> PathBuf {
    let webui = root.join("stable-diffusion-webui");
    let models = webui.join("models");
    put_checkpoint(&models.join("Stable-diffusion/XL"), "sdxl_tiny", "sdxl_tiny.f16", "sdxl_tiny");
    put_checkpoint(&models.join("Stable-diffusion"), "sd15_tiny", "sd15_tiny", "sd15_tiny");
    fs_err::write(models.join("Stable-diffusion/old.ckpt"), b"PK pickle").expect("pickle");
    fs_err::copy(
        fixtures().join("single_file/refuse/flux_like.safetensors"),
        models.join("Stable-diffusion/flux_dev.safetensors"),
    )
    .expect("flux");
    fs_err::create_dir_all(models.join("Lora")).expect("lora dir");
    fs_err::copy(
        fixtures().join("lora/lora_a.kohya_sgm.safetensors"),
        models.join("Lora/pixel.safetensors"),
    )
    .expect("lora");
    fs_err::write(models.join("Lora/pixel.preview.png"), b"not read").expect("preview");
    put_vae(&models.join("VAE"));
    webui
}

/// `ComfyUI/models/{checkpoints,loras,vae,diffusion_models}`.
fn comfyui(root: &Path) -> PathBuf {
    let comfy = root.join("ComfyUI");
    let models = comfy.join("models");
    put_checkpoint(&models.join("checkpoints"), "sd2v_tiny", "sd2v_tiny.f16", "sd2v_tiny");
    fs_err::create_dir_all(models.join("loras")).expect("loras");
    fs_err::copy(
        fixtures().join("lora/lora_b.peft.safetensors"),
        models.join("loras/style_b.safetensors"),
    )
    .expect("lora");
    put_vae(&models.join("vae"));
    // A UNet without its text encoders and VAE, as ComfyUI's diffusion_models holds them.
    let tensors = candle_core::safetensors::load(
        fixtures().join("single_file/sd15_tiny.safetensors"),
        &candle_core::Device::Cpu,
    )
    .expect("load");
    let unet: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .filter(|(name, _)| name.starts_with("model.diffusion_model."))
        .collect();
    fs_err::create_dir_all(models.join("diffusion_models")).expect("dir");
    candle_core::safetensors::save(&unet, models.join("diffusion_models/unet_only.safetensors"))
        .expect("save");
    comfy
}

#[test]
fn a1111_and_comfyui_folders_list_every_checkpoint_lora_and_vae() {
    let root = tempfile::tempdir().expect("tempdir");
    let library = ModelLibrary::scan(&[a1111(root.path()), comfyui(root.path())]);
    let names = |list: &[imagelab::models::library::LocalModel]| {
        list.iter().map(|m| (m.name.clone(), m.kind)).collect::<Vec<_>>()
    };
    assert_eq!(
        names(&library.checkpoints),
        [
            ("sd15_tiny".to_owned(), LocalKind::Checkpoint(CheckpointArchitecture::Sd1)),
            ("sd2v_tiny".to_owned(), LocalKind::Checkpoint(CheckpointArchitecture::Sd2)),
            ("XL/sdxl_tiny".to_owned(), LocalKind::Checkpoint(CheckpointArchitecture::SdxlBase)),
        ]
    );
    assert_eq!(
        names(&library.loras),
        [("pixel".to_owned(), LocalKind::Lora), ("style_b".to_owned(), LocalKind::Lora)]
    );
    assert_eq!(
        names(&library.vaes),
        [("tiny_vae".to_owned(), LocalKind::Vae), ("tiny_vae (2)".to_owned(), LocalKind::Vae)]
    );
    let refused: Vec<(String, &str)> = library
        .refused
        .iter()
        .map(|r| {
            (r.path.file_name().expect("name").to_string_lossy().into_owned(), r.reason.as_str())
        })
        .collect();
    assert_eq!(refused.len(), 3, "{refused:#?}");
    assert!(refused.iter().any(|(f, r)| f == "old.ckpt" && r.contains("pickle")), "{refused:#?}");
    assert!(
        refused.iter().any(|(f, r)| f == "flux_dev.safetensors" && r.contains("Flux.1")),
        "{refused:#?}"
    );
    assert!(
        refused
            .iter()
            .any(|(f, r)| f == "unet_only.safetensors" && r.contains("without its text encoders")),
        "{refused:#?}"
    );

    // The catalog resolves them by name (or unique file stem) and sweeps the checkpoints.
    let catalog = Catalog::builtin().with_library(library);
    let xl = catalog.resolve("XL/sdxl_tiny").expect("by name");
    assert!(
        matches!(&xl.source, ModelSource::LocalFile(p) if p.ends_with("XL/sdxl_tiny.safetensors"))
    );
    assert_eq!(catalog.resolve("sdxl_tiny").expect("by stem").source, xl.source);
    assert_eq!(catalog.resolve("sd15_tiny").expect("sd15").defaults, ModelDefaults::SD15);
    assert_eq!(catalog.resolve_vae("tiny_vae").expect("vae").kind, EntryKind::Vae);
    let sweep = catalog.sweep_models();
    assert_eq!(sweep.len(), Catalog::builtin().sweep_models().len() + 3);
}

/// The all-models sweep with the mock over the catalog plus the folders' checkpoints: every
/// item runs, models folder ones included, and the sweep folder names them.
#[test]
fn all_models_mock_sweep_includes_the_folders_checkpoints() {
    let root = tempfile::tempdir().expect("tempdir");
    let catalog = Catalog::builtin().with_library(ModelLibrary::scan(&[a1111(root.path())]));
    let profiles = Profiles::parse(
        r#"[(name: "None (raw)", prompt_suffix: "", negative_suffix: "")]"#,
        "test",
    )
    .expect("profiles");
    let mock = MockBackend::new();
    let request = Request {
        prompt: "a lighthouse".into(),
        sweep: Sweep::AllModelsAllProfiles,
        width: Some(64),
        height: Some(64),
        steps: Some(2),
        seed: Some(1),
        ..Request::default()
    };
    let plan = prepare_plan(&request, &profiles, &catalog, &mock.capabilities()).expect("plan");
    let models: Vec<&str> =
        plan.items.iter().map(|item| item.model.display_name.as_str()).collect();
    assert!(models.ends_with(&["sd15_tiny", "XL/sdxl_tiny"]), "{models:?}");
    let out = tempfile::tempdir().expect("out");
    let engine = Engine::spawn(
        Box::new(mock),
        EngineConfig { output_root: out.path().to_path_buf(), instance_id: None, previews: false },
        no_waker(),
    )
    .expect("engine");
    let job = engine.submit(plan).expect("submit");
    let summary = until_finished(&engine, job, Duration::from_mins(1));
    // Every item runs, the catalog's LoRA entry (Pixel Art XL: SDXL Base 1.0 + its LoRA) too.
    assert_eq!((summary.done, summary.failed), (summary.items, 0), "{:?}", summary.errors);
    for folder in ["xl-sdxl-tiny", "sd15-tiny"] {
        assert!(
            summary.paths.iter().any(|p| p.to_string_lossy().contains(folder)),
            "{folder}: {:?}",
            summary.paths
        );
    }
}

fn until_finished(engine: &Engine, job: JobId, limit: Duration) -> JobSummary {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let Ok(event) = engine.events().recv_timeout(Duration::from_millis(100)) else { continue };
        if let Event::JobFinished { job: finished, summary } = event
            && finished == job
        {
            return summary;
        }
    }
    panic!("job {job} did not finish");
}

/// A fake Hugging Face cache (plain files) with a diffusers repo and a single-file repo.
fn offline_cache(root: &Path) -> imagelab::models::hub::HubConfig {
    let cache = root.join("hub");
    let snapshot = |repo: &str| {
        let dir = cache.join(format!("models--{}", repo.replace('/', "--")));
        fs_err::create_dir_all(dir.join("refs")).expect("refs");
        fs_err::write(dir.join("refs/main"), "0123").expect("main");
        dir.join("snapshots/0123")
    };
    copy_dir(&fixtures().join("sdxl_tiny"), &snapshot("tiny/sdxl-folder"));
    put_checkpoint(&snapshot("tiny/sdxl-single-file"), "model", "sdxl_tiny.f16", "sdxl_tiny");
    copy_dir(&fixtures().join("sdxl_tiny_3lvl"), &snapshot("tiny/sdxl-3lvl"));
    let lora = snapshot("tiny/lora");
    fs_err::create_dir_all(&lora).expect("lora snapshot");
    fs_err::copy(
        fixtures().join("lora/lora_a.kohya_sgm.safetensors"),
        lora.join("tiny-lora.safetensors"),
    )
    .expect("lora");
    imagelab::models::hub::HubConfig::offline_at(cache)
}

/// The candle backend sweeps a catalog of tiny models in every layout — a diffusers repo and a
/// single-file repo through the hub cache, a base + LoRA entry (as Pixel Art XL: the LoRA file
/// of its repo merged into its base), A1111 folder checkpoints (SDXL, SD 1.5) — and each single
/// file's image is diffusers' (`from_single_file`) for the same settings.
#[test]
fn candle_sweep_over_tiny_models_in_every_layout() {
    let root = tempfile::tempdir().expect("tempdir");
    let hub = offline_cache(root.path());
    let entries = vec![
        CatalogEntry {
            display_name: "Tiny folder".into(),
            hub_id: "tiny/sdxl-folder".into(),
            kind: EntryKind::Pipeline,
            defaults: ModelDefaults::SDXL,
        },
        CatalogEntry {
            display_name: "Tiny single file".into(),
            hub_id: "tiny/sdxl-single-file".into(),
            kind: EntryKind::Pipeline,
            defaults: ModelDefaults::SDXL,
        },
        CatalogEntry {
            display_name: "Tiny three levels".into(),
            hub_id: "tiny/sdxl-3lvl".into(),
            kind: EntryKind::Pipeline,
            defaults: ModelDefaults::SDXL,
        },
        CatalogEntry {
            display_name: "Tiny with LoRA".into(),
            hub_id: "tiny/lora".into(),
            kind: EntryKind::Lora {
                base: "Tiny three levels".into(),
                file: "tiny-lora.safetensors".into(),
            },
            defaults: ModelDefaults::SDXL,
        },
    ];
    let catalog =
        Catalog::from_entries(entries).with_library(ModelLibrary::scan(&[a1111(root.path())]));
    let profiles = Profiles::parse(
        r#"[(name: "None (raw)", prompt_suffix: "", negative_suffix: "")]"#,
        "test",
    )
    .expect("profiles");
    // The recorded run of the single files: refs/single_file/sdxl_tiny.f16 txt2img_cfg5_zero_neg.
    let request = Request {
        prompt: "a photo of an astronaut riding a horse on mars".into(),
        sweep: Sweep::AllModelsAllProfiles,
        width: Some(64),
        height: Some(64),
        steps: Some(5),
        cfg: Some(5.0),
        seed: Some(42),
        device: imagelab::vocab::DeviceChoice::Cpu,
        ..Request::default()
    };
    let backend = CandleBackend::new(Some(imagelab::app::hub_resolver(hub)));
    let plan = prepare_plan(&request, &profiles, &catalog, &backend.capabilities()).expect("plan");
    assert_eq!(plan.items.len(), 6);
    let out = tempfile::tempdir().expect("out");
    let engine = Engine::spawn(
        Box::new(backend),
        EngineConfig { output_root: out.path().to_path_buf(), instance_id: None, previews: false },
        no_waker(),
    )
    .expect("engine");
    let job = engine.submit(plan).expect("submit");
    let summary = until_finished(&engine, job, Duration::from_mins(10));
    assert_eq!((summary.done, summary.failed), (6, 0), "{:?}", summary.errors);
    // The LoRA entry ran on its base with the LoRA merged: not the base's image.
    let image_of = |folder: &str| {
        let path = summary
            .paths
            .iter()
            .find(|p| p.to_string_lossy().contains(folder))
            .unwrap_or_else(|| panic!("{folder}: {:?}", summary.paths));
        image::open(path).expect("png").to_rgb8()
    };
    let (base, with_lora) = (image_of("tiny-three-levels"), image_of("tiny-with-lora"));
    let changed = base.as_raw().iter().zip(with_lora.as_raw()).filter(|(a, b)| a != b).count();
    assert!(changed > base.as_raw().len() / 4, "{changed} values changed");
    let reference = crate::refs::reference("single_file/sdxl_tiny.f16");
    let theirs: Vec<u8> = crate::refs::get(&reference, "txt2img_cfg5_zero_neg.image_u8")
        .flatten_all()
        .expect("flat")
        .to_vec1()
        .expect("u8");
    let mut compared = 0;
    for path in &summary.paths {
        let text = path.to_string_lossy();
        if text.contains("tiny-single-file") || text.contains("xl-sdxl-tiny") {
            let ours = image::open(path).expect("png").to_rgb8();
            let worst = ours
                .as_raw()
                .iter()
                .zip(&theirs)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap_or(u8::MAX);
            assert!(worst <= 1, "{text}: pixels differ by {worst}");
            compared += 1;
        }
    }
    assert_eq!(compared, 2, "{:?}", summary.paths);
}

/// From the built binary: `models list --models-dir` shows what the folder holds and what it
/// refuses; `generate` runs a folder checkpoint by name with a folder VAE by name, giving
/// diffusers' image for that pair; a refused file stops before any work (exit 2).
#[test]
fn the_cli_lists_and_runs_models_folder_files() {
    let root = tempfile::tempdir().expect("tempdir");
    let webui = a1111(root.path());
    let output = imagelab()
        .args(["models", "list", "--models-dir"])
        .arg(&webui)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", root.path().join("hf"))
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let listing = stdout(&output);
    for expected in [
        "XL/sdxl_tiny",
        "checkpoint (SDXL)",
        "pixel",
        "[lora]",
        "tiny_vae",
        "[vae]",
        "old.ckpt",
        "pickle",
        "flux_dev.safetensors",
        "Flux.1",
    ] {
        assert!(listing.contains(expected), "{expected}: {listing}");
    }

    let out = tempfile::tempdir().expect("out");
    let output = imagelab()
        .args(["generate", "--backend", "candle", "--device", "cpu", "--models-dir"])
        .arg(&webui)
        .args(["--model", "XL/sdxl_tiny", "--vae", "tiny_vae"])
        .args(["--prompt", "a photo of an astronaut riding a horse on mars"])
        .args([
            "--steps", "4", "--cfg", "5", "--seed", "42", "--width", "64", "--height", "64",
            "--out",
        ])
        .arg(out.path())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let pngs = pngs_below(out.path());
    assert_eq!(pngs.len(), 1);
    let ours = image::open(&pngs[0]).expect("png").to_rgb8();
    let reference = crate::refs::reference("single_file/vae_override");
    let theirs: Vec<u8> = crate::refs::get(&reference, "single_file_txt2img.image_u8")
        .flatten_all()
        .expect("flat")
        .to_vec1()
        .expect("u8");
    let worst =
        ours.as_raw().iter().zip(&theirs).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(u8::MAX);
    assert!(worst <= 1, "pixels differ by {worst}");

    let flux = webui.join("models/Stable-diffusion/flux_dev.safetensors");
    let output = imagelab()
        .args(["generate", "--backend", "candle", "--device", "cpu", "--model"])
        .arg(&flux)
        .args(["--prompt", "x", "--out"])
        .arg(out.path())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("Flux.1") && stderr(&output).contains("flux_dev.safetensors"),
        "{}",
        stderr(&output)
    );
    assert_eq!(pngs_below(out.path()).len(), 1, "nothing more written");
}
