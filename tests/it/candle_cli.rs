//! `imagelab generate --backend candle` end to end on the tiny pipelines diffusers wrote: the
//! PNG on disk and the saved latent must equal what diffusers made for the same settings and
//! seed (every run recorded in `tests/fixtures/diffusion/refs/*/runs.json`).
//!
//! Tolerances: 8-bit pixels within 1 level (float summation order differs between candle and
//! torch, so a value near .5 may round the other way); the latent handed to the VAE within
//! 1e-4 relative L2 (the same bound as the library-level pipeline tests).

use std::path::Path;

use crate::util::{imagelab, parameters_of, pngs_below, stderr};

fn f32s(tensors: &safetensors::SafeTensors<'_>, key: &str) -> Vec<f32> {
    let view = tensors.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{key}");
    view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn rel_l2(ours: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (a, b) in ours.iter().zip(reference) {
        num += f64::from(a - b).powi(2);
        den += f64::from(*b).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

fn check_pipeline(name: &str) -> usize {
    let root = crate::util::repo_root().join("tests/fixtures/diffusion");
    let folder = root.join(name);
    let refs = root.join("refs").join(name);
    let runs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(refs.join("runs.json")).expect("runs.json"))
            .expect("json");
    let bytes = std::fs::read(refs.join("reference.safetensors")).expect("reference");
    let reference = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let vae: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("vae/config.json")).expect("vae config"))
            .expect("json");
    #[allow(clippy::cast_possible_truncation)]
    let scaling = vae["scaling_factor"].as_f64().expect("scaling_factor") as f32;
    let runs = runs["runs"].as_object().expect("runs");
    for (key, run) in runs {
        let out = tempfile::tempdir().expect("tempdir");
        let text = |field: &str| run[field].as_str().unwrap_or_default().to_owned();
        let number = |field: &str| run[field].as_f64().map(|v| v.to_string()).expect(field);
        let mut command = imagelab();
        command
            .args([
                "generate",
                "--backend",
                "candle",
                "--device",
                "cpu",
                "--save-latent",
                "--model",
            ])
            .arg(&folder)
            .args(["--prompt", &text("prompt"), "--negative", &text("negative")])
            .args(["--steps", &number("steps"), "--cfg", &number("cfg"), "--seed", &number("seed")])
            .args(["--width", &number("width"), "--height", &number("height")])
            .args(["--scheduler", &text("sampler"), "--out"])
            .arg(out.path());
        if text("mode") == "img2img" {
            command
                .arg("--init-image")
                .arg(root.join("init.png"))
                .args(["--strength", &number("strength")]);
        }
        let output = command.output().expect("runs");
        assert_eq!(output.status.code(), Some(0), "{name}/{key}: {}", stderr(&output));
        let pngs = pngs_below(out.path());
        assert_eq!(pngs.len(), 1, "{name}/{key}");
        let ours = image::open(&pngs[0]).expect("png").to_rgb8();
        let theirs = reference.tensor(&format!("{key}.image_u8")).expect("image_u8");
        assert_eq!(
            theirs.shape(),
            [ours.height() as usize, ours.width() as usize, 3],
            "{name}/{key}"
        );
        let worst =
            ours.as_raw().iter().zip(theirs.data()).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
        assert!(worst <= 1, "{name}/{key}: pixels differ by {worst} levels");

        let latent_path = pngs[0].with_extension("latent");
        let latent_bytes = std::fs::read(&latent_path).expect("latent file");
        let latent =
            safetensors::SafeTensors::deserialize(&latent_bytes).expect("latent safetensors");
        let ours = f32s(&latent, "latent_tensor");
        let theirs: Vec<f32> =
            f32s(&reference, &format!("{key}.latents")).iter().map(|v| v / scaling).collect();
        let err = rel_l2(&ours, &theirs);
        assert!(err <= 1e-4, "{name}/{key}: latent rel L2 {err:e}");

        let params = parameters_of(&pngs[0]);
        assert!(params.contains(&format!("Seed: {}", number("seed"))), "{params}");
        assert!(params.contains("RNG: CPU"), "{params}");
        if text("mode") == "img2img" {
            assert!(
                params.contains(&format!("Denoising strength: {}", number("strength"))),
                "{params}"
            );
        }
    }
    runs.len()
}

#[test]
fn sdxl_two_levels_matches_diffusers_from_the_cli() {
    assert!(check_pipeline("sdxl_tiny") >= 5);
}

#[test]
fn sdxl_three_levels_matches_diffusers_from_the_cli() {
    assert!(check_pipeline("sdxl_tiny_3lvl") >= 5);
}

#[test]
fn sd15_matches_diffusers_from_the_cli() {
    assert!(check_pipeline("sd15_tiny") >= 2);
}

#[test]
fn hub_id_resolves_offline_from_a_cache_and_names_missing_files() {
    // An empty cache, offline: the error names the repo file and how to fetch it; nothing written.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let output = imagelab()
        .args([
            "generate",
            "--backend",
            "candle",
            "--device",
            "cpu",
            "--model",
            "SDXL Turbo",
            "--prompt",
            "x",
            "--out",
        ])
        .arg(&out)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", dir.path().join("hub"))
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("model_index.json") && err.contains("imagelab models prefetch"), "{err}");
    assert!(pngs_below(Path::new(&out)).is_empty());
}
