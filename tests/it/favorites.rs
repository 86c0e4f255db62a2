//! `imagelab favorites analyze|apply` and `generate --bundle` on a mock all-models sweep, run as
//! users run them: every way of naming favourites, foreign images, damaged logs, and counts,
//! rates, lifts and bundles checked against numbers worked out by hand.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{files_below, imagelab, stderr, stdout};

/// Three profiles keep the sweep small: 12 catalog models × 3 profiles × batch 2 = 72 images.
const PROFILES: &str = r#"[
    (name: "None (raw)", prompt_suffix: "", negative_suffix: ""),
    (name: "Cinematic", prompt_suffix: "cinematic film still", negative_suffix: ""),
    (name: "Watercolor", prompt_suffix: "watercolor painting", negative_suffix: ""),
]"#;

/// A mock all-models sweep in `dir/out`: returns (output root, sweep folder).
pub fn mock_sweep(dir: &Path) -> (PathBuf, PathBuf) {
    let profiles = dir.join("profiles.ron");
    fs_err::write(&profiles, PROFILES).expect("profiles");
    let out = dir.join("out");
    let output = imagelab()
        .env("IMAGELAB_PROFILES", &profiles)
        .args(["generate", "--backend", "mock", "--all-models", "--prompt", "a fox"])
        .args(["--width", "64", "--height", "64", "--steps", "2", "--seed", "5", "--batch", "2"])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let run_dir = fs_err::read_dir(&out)
        .expect("out")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.is_dir())
        .expect("sweep folder");
    (out, run_dir)
}

/// The image of `model_slug` / `profile_slug` with `seed` in the sweep.
pub fn image(run_dir: &Path, model_slug: &str, profile_slug: &str, seed: u64) -> PathBuf {
    let suffix = format!("_{profile_slug}_a-fox_{seed}.png");
    files_below(&run_dir.join(model_slug))
        .into_iter()
        .find(|path| path.to_string_lossy().ends_with(&suffix))
        .unwrap_or_else(|| panic!("no {model_slug}/{suffix}"))
}

/// Favourites picked by model and profile: both SDXL Base × Cinematic, both Juggernaut ×
/// Cinematic, SDXL Turbo × Watercolor (seed 5), SDXL Base × Watercolor (seed 6).
fn picks(run_dir: &Path) -> Vec<PathBuf> {
    vec![
        image(run_dir, "sdxl-base-1-0", "cinematic", 5),
        image(run_dir, "sdxl-base-1-0", "cinematic", 6),
        image(run_dir, "juggernaut-xl", "cinematic", 5),
        image(run_dir, "juggernaut-xl", "cinematic", 6),
        image(run_dir, "sdxl-turbo", "watercolor", 5),
        image(run_dir, "sdxl-base-1-0", "watercolor", 6),
    ]
}

fn analyze(args: &[&std::ffi::OsStr]) -> (Value, String) {
    let output =
        imagelab().args(["favorites", "analyze", "--json"]).args(args).output().expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json = serde_json::from_str(&stdout(&output)).expect("one JSON object");
    (json, stderr(&output))
}

fn os(text: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(text)
}

/// `(value, count, generated)` of each row of a dimension, and each lift to 4 places.
fn rows(json: &Value, key: &str) -> Vec<(String, u64, u64, String)> {
    json[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key}"))
        .iter()
        .map(|row| {
            let value = match &row["value"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let lift = row["lift"].as_f64().map_or_else(|| "-".to_owned(), |l| format!("{l:.4}"));
            (
                value,
                row["count"].as_u64().expect("count"),
                row["generated"].as_u64().expect("n"),
                lift,
            )
        })
        .collect()
}

fn row(value: &str, count: u64, generated: u64, lift: &str) -> (String, u64, u64, String) {
    (value.to_owned(), count, generated, lift.to_owned())
}

/// The bundles as `(description, count, generated, lift)`.
fn bundles(json: &Value) -> Vec<(String, u64, u64, String)> {
    json["bundles"]
        .as_array()
        .expect("bundles")
        .iter()
        .map(|b| {
            let fields: Vec<String> = b["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .map(|field| {
                    let name = field.as_str().expect("name");
                    let value = if name == "resolution" {
                        format!("{}x{}", b["width"], b["height"])
                    } else {
                        match &b[name] {
                            Value::String(text) => text.clone(),
                            other => other.to_string(),
                        }
                    };
                    format!("{name}={value}")
                })
                .collect();
            (
                fields.join(" "),
                b["count"].as_u64().expect("count"),
                b["generated"].as_u64().expect("generated"),
                format!("{:.4}", b["lift"].as_f64().expect("lift")),
            )
        })
        .collect()
}

/// Worked out by hand: 6 favourites of 72 images, overall rate 1/12.
fn assert_hand_computed(json: &Value) {
    assert_eq!(json["count"], 6);
    assert_eq!(json["generated"], 72);
    let models = rows(json, "by_model");
    assert_eq!(models.len(), 12);
    assert_eq!(
        models[..4],
        [
            // (3/6) / (1/12) = 6
            row("SDXL Base 1.0", 3, 6, "6.0000"),
            row("Juggernaut XL", 2, 6, "4.0000"),
            row("SDXL Turbo", 1, 6, "2.0000"),
            // Nine models without favourites follow, by name.
            row("Animagine XL 4.0", 0, 6, "0.0000"),
        ]
    );
    assert_eq!(
        rows(json, "by_profile"),
        [
            row("Cinematic", 4, 24, "2.0000"),
            row("Watercolor", 2, 24, "1.0000"),
            row("None (raw)", 0, 24, "0.0000"),
        ]
    );
    // Animagine and Turbo default to Euler a; the mock runs Euler for the others.
    assert_eq!(
        rows(json, "by_scheduler"),
        [row("euler", 5, 60, "1.0000"), row("euler_a", 1, 12, "1.0000")]
    );
    // CFG 7: eight models × 6 images; (5/48) / (1/12) = 1.25.
    assert_eq!(
        rows(json, "by_cfg"),
        [
            row("7", 5, 48, "1.2500"),
            row("0", 1, 6, "2.0000"),
            row("5", 0, 6, "0.0000"),
            row("7.5", 0, 12, "0.0000"),
        ]
    );
    assert_eq!(rows(json, "by_steps"), [row("2", 6, 72, "1.0000")]);
    assert_eq!(rows(json, "by_resolution"), [row("64x64", 6, 72, "1.0000")]);
    assert_eq!(json["by_resolution"][0]["width"], 64);

    let shared = "scheduler=euler resolution=64x64 cfg=7 steps=2";
    assert_eq!(
        bundles(json),
        [
            // By support, then lift. "Everything at 64x64, 2 steps" (lift 1) and "Watercolor"
            // (2 of 24, lift 1) say nothing about favourites and are left out.
            (shared.to_owned(), 5, 48, "1.2500".to_owned()),
            (format!("profile=Cinematic {shared}"), 4, 16, "3.0000".to_owned()),
            (format!("model=SDXL Base 1.0 {shared}"), 3, 6, "6.0000".to_owned()),
            // Tied at 2 of 2 (lift 12): by the values' order.
            (format!("model=Juggernaut XL profile=Cinematic {shared}"), 2, 2, "12.0000".to_owned()),
            (format!("model=SDXL Base 1.0 profile=Cinematic {shared}"), 2, 2, "12.0000".to_owned()),
        ]
    );
    let request = &json["bundles"][4]["request"];
    assert_eq!(
        request,
        &serde_json::json!({"model": "SDXL Base 1.0", "profile": "Cinematic", "scheduler": "euler",
                            "width": 64, "height": 64, "cfg": 7.0, "steps": 2})
    );
    assert_eq!(json["bundles"][4]["model_id"], "stabilityai/stable-diffusion-xl-base-1.0");
}

#[test]
fn a_list_of_favourites_gives_the_hand_computed_counts_lifts_and_bundles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, run_dir) = mock_sweep(dir.path());
    let list = dir.path().join("favs.txt");
    let mut text = String::from("# picked by hand\n");
    for path in picks(&run_dir) {
        let _ = writeln!(text, "{}", path.display());
    }
    text.push_str("nope/never-made.png\n");
    fs_err::write(&list, text).expect("list");
    let (json, _) = analyze(&[os("--list"), list.as_os_str(), os("--logs"), out.as_os_str()]);
    assert_hand_computed(&json);
    assert_eq!(json["unmatched"], serde_json::json!(["nope/never-made.png"]));
    assert!(
        json["favorites"].as_array().expect("favorites").iter().all(|f| f["matched_by"] == "path")
    );
    assert_eq!(json["damaged"].as_array().map(Vec::len), Some(0));

    // The human tables say the same; the temporary folder is masked.
    let output = imagelab()
        .args(["favorites", "analyze", "--rows", "4", "--list"])
        .arg(&list)
        .arg("--logs")
        .arg(&out)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    insta::assert_snapshot!(
        "favorites_analyze_human",
        stdout(&output).replace(&dir.path().display().to_string(), "<tmp>")
    );
}

#[cfg(unix)]
#[test]
fn every_way_of_naming_favourites_finds_the_same_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, run_dir) = mock_sweep(dir.path());
    let picks = picks(&run_dir);
    let logs = [os("--logs"), out.as_os_str()];

    // A folder of symlinks, with a comma in one name.
    let links = dir.path().join("links");
    fs_err::create_dir_all(links.join("nested")).expect("links");
    for (index, path) in picks.iter().enumerate() {
        let name =
            if index == 0 { "fav, one.png".to_owned() } else { format!("nested/{index}.png") };
        std::os::unix::fs::symlink(path, links.join(name)).expect("symlink");
    }
    let (json, _) = analyze(&[&[os("--dir"), links.as_os_str()][..], &logs].concat());
    assert_hand_computed(&json);
    assert!(json["favorites"].as_array().expect("f").iter().all(|f| f["matched_by"] == "symlink"));

    // A folder of copies: joined by their embedded settings.
    let copies = dir.path().join("copies");
    fs_err::create_dir_all(&copies).expect("copies");
    for (index, path) in picks.iter().enumerate() {
        fs_err::copy(path, copies.join(format!("{index}.PNG"))).expect("copy");
    }
    let (json, _) = analyze(&[&[os("--dir"), copies.as_os_str()][..], &logs].concat());
    assert_hand_computed(&json);
    assert!(json["favorites"].as_array().expect("f").iter().all(|f| f["matched_by"] == "metadata"));

    // A CSV with a `path` column among others; quoted fields hold commas and quotes.
    let csv = dir.path().join("favs.csv");
    let mut text = String::from("rating,\"path\",\"note, free text\"\r\n");
    let _ = write!(text, "5,\"{}\",\"loved \"\"it\"\"\"\r\n", links.join("fav, one.png").display());
    for path in &picks[1..] {
        let _ = write!(text, "4,{},\r\n", path.display());
    }
    fs_err::write(&csv, text).expect("csv");
    let (json, _) = analyze(&[&[os("--csv"), csv.as_os_str()][..], &logs].concat());
    assert_hand_computed(&json);

    // The window's stars: favorites.txt, paths relative to the output root.
    for path in &picks {
        let relative = path.strip_prefix(&out).expect("under out").to_string_lossy().into_owned();
        imagelab::storage::favorites::set(&out, &relative, true).expect("star");
    }
    let (json, _) = analyze(&[&[os("--starred")][..], &logs].concat());
    assert_hand_computed(&json);

    // All at once: each image counts once, the rest are duplicates.
    let (json, _) = analyze(
        &[
            &[os("--starred"), os("--dir"), links.as_os_str(), os("--dir"), copies.as_os_str()][..],
            &logs,
        ]
        .concat(),
    );
    assert_hand_computed(&json);
    assert_eq!(json["duplicates"].as_array().map(Vec::len), Some(12));

    // The output folder is the default logs folder.
    let output = imagelab()
        .env("IMAGELAB_OUTPUT_DIR", &out)
        .args(["favorites", "analyze", "--json", "--starred"])
        .output()
        .expect("runs");
    let json: Value = serde_json::from_str(&stdout(&output)).expect("json");
    assert_hand_computed(&json);
}

/// An A1111 PNG: `parameters` infotext in a tEXt chunk, as AUTOMATIC1111 writes it.
fn write_a1111_png(path: &Path, parameters: &str) {
    let file = fs_err::File::create(path).expect("create");
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 8, 8);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.add_text_chunk("parameters".to_owned(), parameters.to_owned()).expect("text");
    let mut writer = encoder.write_header().expect("header");
    writer.write_image_data(&[90; 8 * 8 * 3]).expect("data");
    writer.finish().expect("finish");
}

#[test]
fn foreign_images_unknown_copies_and_damaged_log_lines_are_reported_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, run_dir) = mock_sweep(dir.path());
    // A second instance writing its own log in another folder beneath the logs folder.
    let other = dir.path().join("gpu1");
    let output = imagelab()
        .env("INSTANCE_ID", "gpu1")
        .args(["generate", "--backend", "mock", "--model", "SDXL Turbo", "--prompt", "a fox"])
        .args(["--width", "64", "--height", "64", "--steps", "2", "--seed", "90", "--batch", "2"])
        .arg("--out")
        .arg(&other)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(other.join("jobs_gpu1.log").is_file());
    // A torn line from a crashed writer, then a line that is JSON but not a job.
    let log = out.join("jobs.log");
    let mut text = fs_err::read_to_string(&log).expect("log");
    text.push_str("{\"timestamp\": \"2026-\n[1, 2]\n");
    fs_err::write(&log, text).expect("log");

    let favs = dir.path().join("favs");
    fs_err::create_dir_all(&favs).expect("favs");
    fs_err::copy(image(&run_dir, "sdxl-turbo", "watercolor", 5), favs.join("a.png")).expect("copy");
    let second =
        files_below(&other).into_iter().find(|p| p.extension().is_some_and(|e| e == "png"));
    fs_err::copy(second.expect("gpu1 image"), favs.join("b.png")).expect("copy");
    write_a1111_png(
        &favs.join("c.png"),
        "a castle on a hill\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, \
         CFG scale: 6, Seed: 1234, Size: 832x1216, Model: juggernautXL_v9",
    );
    // No metadata and bytes no logged image has.
    image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3])).save(favs.join("d.png")).expect("png");

    let (json, warnings) = analyze(&[
        os("--dir"),
        favs.as_os_str(),
        os("--logs"),
        dir.path().as_os_str(),
        os("--min-support"),
        os("1"),
    ]);
    // 72 + 2 logged images, plus the A1111 image read from its own metadata.
    assert_eq!((json["count"].as_u64(), json["generated"].as_u64()), (Some(3), Some(75)));
    assert_eq!(json["logs"].as_array().map(Vec::len), Some(2), "{}", json["logs"]);
    let damaged = json["damaged"].as_array().expect("damaged");
    assert_eq!(damaged.len(), 2, "{damaged:?}");
    assert_eq!(damaged[0]["line"], 37, "36 items, then the torn line");
    assert!(warnings.contains("skipped damaged log line"), "{warnings}");
    let unmatched = json["unmatched"].as_array().expect("unmatched");
    assert_eq!(unmatched.len(), 1);
    assert!(unmatched[0].as_str().expect("path").ends_with("d.png"));
    assert!(
        json["unmatched_reasons"][0]["reason"].as_str().expect("reason").contains("no generation")
    );
    let matched: Vec<(String, String)> = json["favorites"]
        .as_array()
        .expect("favorites")
        .iter()
        .map(|f| {
            let name = Path::new(f["path"].as_str().expect("path")).file_name().expect("name");
            (name.to_string_lossy().into_owned(), f["matched_by"].as_str().expect("how").to_owned())
        })
        .collect();
    assert_eq!(
        matched,
        [
            ("a.png".to_owned(), "metadata".to_owned()),
            ("b.png".to_owned(), "metadata".to_owned()),
            ("c.png".to_owned(), "own_metadata".to_owned()),
        ]
    );
    assert_eq!(json["favorites"][2]["source"], "AUTOMATIC1111");
    let models = rows(&json, "by_model");
    // SDXL Turbo: 1 favourite of 6 in the sweep plus 1 of 2 from the other instance.
    assert!(models.contains(&row(
        "SDXL Turbo",
        2,
        8,
        &format!("{:.4}", (2.0 / 8.0) / (3.0 / 75.0))
    )));
    assert!(models.contains(&row("juggernautXL_v9", 1, 1, &format!("{:.4}", 25.0))));
    // Another tool's image has no profile: its own row; its sampler maps to ours.
    assert!(rows(&json, "by_profile").contains(&row("null", 1, 1, "25.0000")));
    assert!(rows(&json, "by_scheduler").contains(&row("dpmpp_2m_karras", 1, 1, "25.0000")));
    assert!(rows(&json, "by_resolution").contains(&row("832x1216", 1, 1, "25.0000")));
}

#[test]
fn copies_the_metadata_reader_cannot_name_are_matched_by_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    fs_err::create_dir_all(out.join("run")).expect("out");
    // A logged JPEG (another helper writes JPEG outputs) and a WebP; copies of them carry no
    // settings this reader can see, so only their bytes can join them to the log.
    image::RgbImage::from_pixel(16, 16, image::Rgb([200, 10, 10]))
        .save(out.join("run/a.jpg"))
        .expect("jpeg");
    image::RgbImage::from_pixel(16, 16, image::Rgb([10, 200, 10]))
        .save(out.join("run/b.webp"))
        .expect("webp");
    let line = |model: &str, path: &str, seed: u64| {
        serde_json::json!({
            "timestamp": "2026-11-23T09:30:05+00:00", "mode": "txt2img", "prompt": "x",
            "negative": "", "all_profiles": false, "all_models": false, "profile": "None (raw)",
            "model": model, "model_id": "org/m", "scheduler": "euler", "steps": 4, "cfg": 7.0,
            "width": 16, "height": 16, "batch_size": 1, "seed_base": seed, "seeds": [seed],
            "paths": [path], "run_dir": null, "error": null, "duration_s": 0.1, "device": "cpu",
            // What `imagelab runner` adds to its lines.
            "runner": {"job": seed, "template": if seed == 1 { "portrait" } else { "landscape" },
                       "prompt": "x", "seed": 9}
        })
        .to_string()
    };
    fs_err::write(
        out.join("jobs.log"),
        format!("{}\n{}\n", line("M1", "run/a.jpg", 1), line("M2", "run/b.webp", 2)),
    )
    .expect("log");
    let favs = dir.path().join("favs");
    fs_err::create_dir_all(&favs).expect("favs");
    fs_err::copy(out.join("run/a.jpg"), favs.join("mine.jpeg")).expect("copy");
    let (json, _) = analyze(&[os("--dir"), favs.as_os_str(), os("--logs"), out.as_os_str()]);
    assert_eq!((json["count"].as_u64(), json["generated"].as_u64()), (Some(1), Some(2)));
    assert_eq!(json["favorites"][0]["matched_by"], "content");
    assert_eq!(rows(&json, "by_model")[0], row("M1", 1, 1, "2.0000"));
    // The runner's fields (its template, job number, generated prompt) are dimensions too.
    let dimensions = json["dimensions"].as_array().expect("dims");
    for name in ["runner.template", "runner.job", "runner.prompt", "runner.seed"] {
        assert!(dimensions.contains(&Value::from(name)), "{name}: {dimensions:?}");
    }
    assert_eq!(
        rows(&json, "by_runner.template"),
        [row("portrait", 1, 1, "2.0000"), row("landscape", 0, 1, "0.0000")]
    );
}

#[test]
fn bad_favourites_input_is_refused_before_any_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&std::ffi::OsStr]| {
        let output = imagelab().args(["favorites", "analyze"]).args(args).output().expect("runs");
        (output.status.code(), stderr(&output))
    };
    let (code, err) = run(&[os("--logs"), dir.path().as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--list FILE, --dir DIR, --csv FILE or --starred"), "{err}");
    let missing = dir.path().join("missing");
    let (code, err) = run(&[os("--starred"), os("--logs"), missing.as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--logs: not a folder") && err.contains("missing"), "{err}");
    let csv = dir.path().join("f.csv");
    fs_err::write(&csv, "file\na.png\n").expect("csv");
    let (code, err) = run(&[os("--csv"), csv.as_os_str(), os("--logs"), dir.path().as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no `path` column (columns: file)") && err.contains("f.csv"), "{err}");
    let (code, err) =
        run(&[os("--list"), missing.as_os_str(), os("--logs"), dir.path().as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("missing"), "{err}");
}

fn generated_record(out: &Path) -> imagelab::storage::jobs_log::JobRecord {
    let log = imagelab::storage::jobs_log::read_all(out).expect("log");
    assert_eq!(log.records.len(), 1, "{:?}", log.records);
    log.records.into_iter().next().expect("one")
}

#[test]
fn apply_and_generate_bundle_run_a_bundle_with_a_new_prompt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, run_dir) = mock_sweep(dir.path());
    let list = dir.path().join("favs.txt");
    let text = picks(&run_dir).iter().fold(String::new(), |mut text, path| {
        let _ = writeln!(text, "{}", path.display());
        text
    });
    fs_err::write(&list, text).expect("list");

    // Bundle 3 is SDXL Base 1.0 with its shared settings; it fixes no profile.
    let out2 = dir.path().join("out2");
    let output = imagelab()
        .args(["favorites", "apply", "3", "--prompt", "a lighthouse", "--seed", "11"])
        .args(["--backend", "mock", "--list"])
        .arg(&list)
        .arg("--logs")
        .arg(&out)
        .arg("--out")
        .arg(&out2)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("bundle 3: model SDXL Base 1.0"), "{}", stderr(&output));
    let record = generated_record(&out2);
    assert_eq!((record.model.as_str(), record.profile.as_str()), ("SDXL Base 1.0", "None (raw)"));
    assert_eq!((record.prompt.as_str(), record.scheduler.as_str()), ("a lighthouse", "euler"));
    assert_eq!((record.width, record.height, record.steps, record.cfg), (64, 64, 2, 7.0));

    // The same from a saved analysis; a flag the user types wins over the bundle.
    let analysis = dir.path().join("analysis.json");
    let output = imagelab()
        .args(["favorites", "analyze", "--json", "--list"])
        .arg(&list)
        .arg("--logs")
        .arg(&out)
        .output()
        .expect("runs");
    fs_err::write(&analysis, &output.stdout).expect("save");
    let out3 = dir.path().join("out3");
    let output = imagelab()
        .args(["generate", "--backend", "mock", "--prompt", "a kite", "--steps", "3", "--bundle"])
        .arg(format!("{}:4", analysis.display()))
        .arg("--out")
        .arg(&out3)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let record = generated_record(&out3);
    assert_eq!((record.model.as_str(), record.profile.as_str()), ("Juggernaut XL", "Cinematic"));
    assert_eq!((record.steps, record.width), (3, 64), "typed --steps kept");
}

#[test]
fn a_bundle_that_cannot_run_is_refused_before_any_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, run_dir) = mock_sweep(dir.path());
    let list = dir.path().join("favs.txt");
    let text = picks(&run_dir).iter().fold(String::new(), |mut text, path| {
        let _ = writeln!(text, "{}", path.display());
        text
    });
    fs_err::write(&list, text).expect("list");
    let analysis = dir.path().join("analysis.json");
    let output = imagelab()
        .args(["favorites", "analyze", "--json", "--list"])
        .arg(&list)
        .arg("--logs")
        .arg(&out)
        .output()
        .expect("runs");
    fs_err::write(&analysis, &output.stdout).expect("save");
    // No prompt, no such bundle, not an analysis, no number.
    let out4 = dir.path().join("out4");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["generate".into(), "--bundle".into(), format!("{}:1", analysis.display())],
            "give --prompt",
        ),
        (
            vec![
                "generate".into(),
                "--prompt".into(),
                "x".into(),
                "--bundle".into(),
                format!("{}:9", analysis.display()),
            ],
            "no bundle 9; it lists 5",
        ),
        (
            vec![
                "generate".into(),
                "--prompt".into(),
                "x".into(),
                "--bundle".into(),
                format!("{}:1", list.display()),
            ],
            "not the JSON of `favorites analyze --json`",
        ),
        (
            vec![
                "generate".into(),
                "--prompt".into(),
                "x".into(),
                "--bundle".into(),
                "nonumber".into(),
            ],
            "expected FILE:N",
        ),
        (
            vec![
                "favorites".into(),
                "apply".into(),
                "6".into(),
                "--prompt".into(),
                "x".into(),
                "--list".into(),
                list.display().to_string(),
                "--logs".into(),
                out.display().to_string(),
            ],
            "no bundle 6; the analysis has 5",
        ),
    ];
    for (args, expected) in cases {
        let output = imagelab()
            .args(&args)
            .arg("--backend")
            .arg("mock")
            .arg("--out")
            .arg(&out4)
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{args:?}: {}", stderr(&output));
    }
    assert!(!out4.exists(), "nothing written");
}
