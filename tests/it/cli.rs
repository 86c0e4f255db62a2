//! The built binary, run the way users and scripts run it, with `--backend mock`.

use std::fmt::Write as _;
use std::path::Path;

use crate::util::{files_below, imagelab, parameters_of, pngs_below, stderr, stdout};

fn generate(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut command = imagelab();
    command.args(["generate", "--backend", "mock", "--out"]).arg(out).args(extra);
    command.output().expect("runs")
}

#[test]
fn json_summary_lists_files_that_exist_with_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let output = generate(
        &out,
        &[
            "--prompt",
            "a red fox, in snow",
            "--negative",
            "blurry",
            "--profile",
            "Cinematic",
            "--width",
            "256",
            "--height",
            "192",
            "--steps",
            "4",
            "--cfg",
            "6.5",
            "--seed",
            "42",
            "--batch",
            "2",
            "--scheduler",
            "dpmpp_2m_karras",
            "--save-latent",
            "--json",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary: serde_json::Value =
        serde_json::from_str(stdout(&output).trim()).expect("one JSON object");
    let files = summary["files"].as_array().expect("files");
    assert_eq!(files.len(), 2);
    assert_eq!(summary["errors"].as_array().map(Vec::len), Some(0));
    assert_eq!(summary["timings"]["steps_s"].as_array().map(Vec::len), Some(8));
    for (i, file) in files.iter().enumerate() {
        let path = Path::new(file["path"].as_str().expect("path"));
        assert!(path.starts_with(&out), "{}", path.display());
        assert_eq!(file["seed"].as_u64(), Some(42 + i as u64));
        let img = image::open(path).expect("a real PNG");
        assert_eq!((img.width(), img.height()), (256, 192));
        let latent = Path::new(file["latent"].as_str().expect("latent path"));
        let bytes = fs_err::read(latent).expect("latent file");
        let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
        assert_eq!(tensors.tensor("latent_tensor").expect("key").shape(), [1, 4, 24, 32]);
        let params = parameters_of(path);
        assert!(params.starts_with("a red fox, in snow, cinematic film still"), "{params}");
        assert!(params.contains("\nNegative prompt: blurry, flat lighting"), "{params}");
        assert!(
            params.contains(&format!(
                "Steps: 4, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: {}, Size: 256x192, Model: SDXL Base 1.0",
                42 + i
            )),
            "{params}"
        );
        assert!(params.contains("Style profile: Cinematic"), "{params}");
        assert!(!params.contains("Denoising strength"), "txt2img has none: {params}");
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(name.ends_with(&format!("_cinematic_a-red-fox-in-snow_{}.png", 42 + i)), "{name}");
    }
    let log = fs_err::read_to_string(out.join("jobs.log")).expect("jobs.log");
    let line: serde_json::Value =
        serde_json::from_str(log.lines().next().expect("a line")).expect("json");
    for field in [
        "timestamp",
        "mode",
        "prompt",
        "negative",
        "all_profiles",
        "all_models",
        "profile",
        "model",
        "model_id",
        "scheduler",
        "steps",
        "cfg",
        "width",
        "height",
        "batch_size",
        "seed_base",
        "seeds",
        "paths",
        "run_dir",
        "error",
        "duration_s",
        "device",
    ] {
        assert!(line.get(field).is_some(), "jobs log lacks {field}: {line}");
    }
    assert_eq!(line["scheduler"], "dpmpp_2m_karras");
    assert_eq!(line["seeds"], serde_json::json!([42, 43]));
}

#[test]
fn both_sweeps_exit_2_naming_both_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let output = generate(&out, &["--prompt", "x", "--all-profiles", "--all-models"]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("--all-profiles") && err.contains("--all-models"), "{err}");
    assert!(!out.exists(), "nothing written");

    let mut env_run = imagelab();
    env_run
        .env("PROMPT", "x")
        .env("IMAGELAB_BACKEND", "mock")
        .env("IMAGELAB_OUTPUT_DIR", &out)
        .env("RUN_ALL_PROFILES", "1")
        .env("RUN_ALL_MODELS", "true");
    let output = env_run.output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("RUN_ALL_PROFILES") && err.contains("RUN_ALL_MODELS"), "{err}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn bad_input_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let not_image = dir.path().join("notes.png");
    fs_err::write(&not_image, "this is text").expect("write");
    let a_file = dir.path().join("file");
    fs_err::write(&a_file, "x").expect("write");
    let unwritable = a_file.join("sub");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--width".into(), "1001".into()], "width"),
        (vec!["--height".into(), "8".into()], "height"),
        (vec!["--steps".into(), "0".into()], "steps"),
        (vec!["--cfg".into(), "-1".into()], "cfg"),
        (
            vec![
                "--init-image".into(),
                not_image.display().to_string(),
                "--strength".into(),
                "1.5".into(),
            ],
            "strength",
        ),
        (vec!["--batch".into(), "0".into()], "batch"),
        (vec!["--profile".into(), "Nope".into()], "Cinematic"),
        (vec!["--scheduler".into(), "plms".into()], "dpmpp_2m_karras"),
        (vec!["--model".into(), "no such model".into()], "SDXL Turbo"),
        (
            vec!["--init-image".into(), dir.path().join("missing.png").display().to_string()],
            "missing.png",
        ),
        (vec!["--init-image".into(), not_image.display().to_string()], "notes.png"),
        (vec!["--device".into(), "tpu".into()], "cuda:N"),
    ];
    // Every message, pinned (tests/it/snapshots/): wording changes are seen in review.
    let mut messages = String::new();
    let tmp = dir.path().display().to_string();
    for (args, needle) in cases {
        let mut full = vec!["--prompt".to_owned(), "x".to_owned()];
        full.extend(args.iter().cloned());
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let output = generate(&out, &refs);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(needle), "{args:?}: {}", stderr(&output));
        assert!(!out.exists(), "{args:?} wrote something");
        let shown: Vec<String> = args.iter().map(|arg| arg.replace(&tmp, "<tmp>")).collect();
        let _ =
            writeln!(messages, "$ {}\n{}", shown.join(" "), stderr(&output).replace(&tmp, "<tmp>"));
    }
    let output = generate(&unwritable, &["--prompt", "x"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("output"), "{}", stderr(&output));
    let _ = write!(messages, "$ --out <tmp>/file/sub\n{}", stderr(&output).replace(&tmp, "<tmp>"));
    insta::assert_snapshot!("bad_input_errors", messages);
}

/// The human summary of a run (stderr: progress lines and the totals), pinned with the times,
/// timestamps and the temporary folder masked.
#[test]
fn human_summary_is_pinned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let output = generate(
        &out,
        &[
            "--prompt", "a kite", "--steps", "2", "--width", "64", "--height", "64", "--seed", "5",
            "--batch", "2",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let time = regex::Regex::new(r"\d{8}-\d{6}").expect("regex");
    let seconds = regex::Regex::new(r"in \d+\.\d s").expect("regex");
    let mask = |text: String| {
        let text = text.replace(&dir.path().display().to_string(), "<tmp>");
        seconds.replace_all(&time.replace_all(&text, "<time>"), "in <s> s").into_owned()
    };
    insta::assert_snapshot!(
        "human_summary",
        format!("stdout:\n{}stderr:\n{}", mask(stdout(&output)), mask(stderr(&output)))
    );
}

#[test]
fn sweep_with_a_failing_model_continues_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let mut command = imagelab();
    command
        .args([
            "generate",
            "--backend",
            "mock",
            "--all-models",
            "--prompt",
            "tiny",
            "--steps",
            "1",
            "--width",
            "64",
            "--height",
            "64",
            "--seed",
            "3",
            "--json",
            "--out",
        ])
        .arg(&out)
        .env("IMAGELAB_MOCK_FAIL_MODEL", "SDXL Turbo");
    let output = command.output().expect("runs");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_str(stdout(&output).trim()).expect("json");
    let profiles = imagelab::request::Profiles::builtin().all().len();
    let models = imagelab::models::Catalog::builtin().sweep_models().len();
    assert_eq!(summary["failed"].as_u64(), Some(profiles as u64), "every Turbo item failed");
    assert_eq!(summary["files"].as_array().map(Vec::len), Some((models - 1) * profiles));
    assert!(
        summary["errors"][0]
            .as_str()
            .is_some_and(|e| e.starts_with("SDXL Turbo / None (raw): loading SDXL Turbo"))
    );
    let run_dir = Path::new(summary["run_dir"].as_str().expect("run dir"));
    assert!(
        run_dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with("_all-models-all-profiles"))
    );
    assert!(run_dir.join("realvis-xl-v5-0").is_dir());
    assert!(!run_dir.join("sdxl-turbo").exists(), "no images for the failed model");
}

#[test]
fn env_mode_matches_the_cli_and_uses_the_instance_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env_out = dir.path().join("env");
    let cli_out = dir.path().join("cli");
    let mut env_run = imagelab();
    env_run
        .env("PROMPT", "harbour at dawn")
        .env("STYLE_PROFILE", "35mm Film")
        .env("WIDTH", "128")
        .env("HEIGHT", "128")
        .env("STEPS", "3")
        .env("SEED", "99")
        .env("SCHEDULER", "euler_a")
        .env("IMAGELAB_BACKEND", "mock")
        .env("IMAGELAB_OUTPUT_DIR", &env_out)
        .env("INSTANCE_ID", "gpu-3");
    let output = env_run.output().expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(env_out.join("jobs_gpu-3.log").is_file());
    let output = generate(
        &cli_out,
        &[
            "--prompt",
            "harbour at dawn",
            "--profile",
            "35mm Film",
            "--width",
            "128",
            "--height",
            "128",
            "--steps",
            "3",
            "--seed",
            "99",
            "--scheduler",
            "euler_a",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let env_png = pngs_below(&env_out);
    let cli_png = pngs_below(&cli_out);
    assert_eq!((env_png.len(), cli_png.len()), (1, 1));
    let pixels = |p: &Path| image::open(p).expect("png").to_rgb8().into_raw();
    assert_eq!(pixels(&env_png[0]), pixels(&cli_png[0]), "same settings, same image");
    let strip_version = |s: String| s.replace(env!("CARGO_PKG_VERSION"), "");
    assert_eq!(
        strip_version(parameters_of(&env_png[0])),
        strip_version(parameters_of(&cli_png[0]))
    );
    // stdout lists every file written.
    assert!(stdout(&output).contains(&cli_png[0].display().to_string()));
}

#[test]
fn img2img_records_strength_and_uses_the_init_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let init = dir.path().join("init.png");
    image::RgbImage::from_pixel(203, 150, image::Rgb([200, 30, 30]))
        .save(&init)
        .expect("write init");
    let output = generate(
        &out,
        &[
            "--prompt",
            "repaint",
            "--init-image",
            init.to_str().expect("utf8"),
            "--strength",
            "0.6",
            "--steps",
            "2",
            "--seed",
            "1",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let png = &pngs_below(&out)[0];
    let img = image::open(png).expect("png");
    assert_eq!((img.width(), img.height()), (200, 144), "own size rounded down to multiples of 8");
    let params = parameters_of(png);
    assert!(params.contains("Denoising strength: 0.6"), "{params}");
    let log = fs_err::read_to_string(out.join("jobs.log")).expect("log");
    assert!(log.contains("\"mode\":\"img2img\""), "{log}");
}

#[test]
fn hostile_prompts_stay_inside_the_output_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let long = "ünïcödé ".repeat(40);
    for prompt in ["../../../etc/passwd", "/absolute/path", "..\\..\\windows", long.as_str(), "猫"]
    {
        let output = generate(
            &out,
            &["--prompt", prompt, "--steps", "1", "--width", "64", "--height", "64"],
        );
        assert_eq!(output.status.code(), Some(0), "{prompt}: {}", stderr(&output));
    }
    let files = files_below(dir.path());
    for file in &files {
        assert!(file.starts_with(&out), "escaped: {}", file.display());
        let name = file.file_name().and_then(|n| n.to_str()).expect("ascii name");
        assert!(name.is_ascii() && name.len() < 120, "{name}");
    }
    assert_eq!(pngs_below(&out).len(), 5);
}

#[test]
fn from_reproduces_our_image_exactly_and_flags_override() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("first");
    let model = crate::util::repo_root().join("tests/fixtures/diffusion/sdxl_tiny");
    let output = imagelab()
        .args(["generate", "--backend", "candle", "--device", "cpu", "--model"])
        .arg(&model)
        .args([
            "--prompt",
            "a cat, at night",
            "--negative",
            "blurry",
            "--profile",
            "Watercolor",
            "--width",
            "64",
            "--height",
            "48",
            "--steps",
            "3",
            "--cfg",
            "4.5",
            "--seed",
            "77",
            "--scheduler",
            "dpmpp_2m_karras",
            "--out",
        ])
        .arg(&first)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let original = pngs_below(&first).remove(0);

    let again = dir.path().join("again");
    let output = imagelab()
        .args(["generate", "--from"])
        .arg(&original)
        .args(["--device", "cpu", "--out"])
        .arg(&again)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let rerun = pngs_below(&again).remove(0);
    let pixels = |p: &Path| image::open(p).expect("png").to_rgb8().into_raw();
    assert_eq!(pixels(&original), pixels(&rerun), "bit-for-bit from the metadata");
    let strip = |s: String| s.replace(env!("CARGO_PKG_VERSION"), "");
    assert_eq!(strip(parameters_of(&original)), strip(parameters_of(&rerun)));

    let other = dir.path().join("other");
    let output = imagelab()
        .args(["generate", "--backend", "mock", "--from"])
        .arg(&original)
        .args(["--seed", "78", "--out"])
        .arg(&other)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let params = parameters_of(&pngs_below(&other)[0]);
    assert!(params.contains("Seed: 78") && params.contains("Size: 64x48"), "{params}");
    assert!(
        params.contains("Schedule type: Karras") && params.contains("Style profile: Watercolor"),
        "{params}"
    );
}

#[test]
fn info_reads_other_tools_and_from_runs_the_closest_equivalent() {
    let fixtures = crate::util::repo_root().join("tests/fixtures/metadata");
    for (file, source) in [
        ("a1111_sdxl_hires.png", "automatic1111"),
        ("comfyui_sdxl.png", "comfyui"),
        ("invokeai_sdxl.png", "invokeai"),
        ("fooocus_json_scheme.png", "fooocus"),
        ("imagelab_txt2img.png", "imagelab"),
    ] {
        let output =
            imagelab().args(["info", "--json"]).arg(fixtures.join(file)).output().expect("runs");
        assert_eq!(output.status.code(), Some(0), "{file}: {}", stderr(&output));
        let info: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
        assert_eq!(info["source"], source, "{file}: {info}");
        assert!(info["prompt"].as_str().is_some_and(|p| !p.is_empty()), "{file}: {info}");
        assert!(
            info["seed"].as_u64().is_some() && info["steps"].as_u64().is_some(),
            "{file}: {info}"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let a1111 = fixtures.join("a1111_sdxl_hires.png");
    let output = imagelab()
        .args(["generate", "--backend", "mock", "--width", "64", "--height", "64", "--from"])
        .arg(&a1111)
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("closest equivalent"), "{}", stderr(&output));
    let info: serde_json::Value = serde_json::from_str(&stdout(
        &imagelab().args(["info", "--json"]).arg(&a1111).output().expect("runs"),
    ))
    .expect("json");
    let params = parameters_of(&pngs_below(dir.path())[0]);
    assert!(params.contains(&format!("Seed: {}", info["seed"])), "{params}");
    assert!(params.contains(&format!("Steps: {},", info["steps"])), "{params}");

    let output =
        imagelab().args(["info"]).arg(dir.path().join("missing.png")).output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("missing.png"), "{}", stderr(&output));
}
