//! `imagelab sheet RUN_DIR`: the contact sheet decoded and checked cell by cell — positions
//! against the sheet's own metadata, colours against the source images, labels against the
//! font drawn again — on a constructed sweep and on a mock all-models sweep.

use std::path::{Path, PathBuf};

use imagelab::analytics::sheet::{self, BACKGROUND, CellRecord, FAILED_FILL, INK, SheetMetadata};
use imagelab::font;
use serde_json::json;

use crate::favorites::mock_sweep;
use crate::util::{imagelab, stderr, stdout};

fn log_line(
    model: &str,
    profile: &str,
    paths: &[&str],
    run_dir: &str,
    error: Option<&str>,
) -> String {
    let seeds: Vec<u64> = (0..paths.len() as u64).map(|i| 40 + i).collect();
    json!({
        "timestamp": "2026-11-23T09:30:05+00:00", "mode": "txt2img", "prompt": "p",
        "negative": "", "all_profiles": false, "all_models": true, "profile": profile,
        "model": model, "model_id": format!("org/{model}"), "scheduler": "euler", "steps": 4,
        "cfg": 7.0, "width": 96, "height": 64, "batch_size": 2, "seed_base": 40, "seeds": seeds,
        "paths": paths, "run_dir": run_dir, "error": error, "duration_s": 0.1, "device": "cpu",
        "status": if error.is_some() { "failed" } else { "done" }
    })
    .to_string()
}

const MODELS: [&str; 2] = ["Model A", "Model B"];
const PROFILES: [&str; 3] = ["None (raw)", "Cinematic", "Pixel Art / Isometric Game"];

/// The colour of model m, profile p, image b.
fn colour(m: usize, p: usize, b: usize) -> [u8; 3] {
    [40 + 60 * m as u8, 30 + 50 * p as u8, 100 + 80 * b as u8]
}

/// A two-model sweep of solid-colour images (PNG; one JPEG, one WebP), Model B × Cinematic
/// failed; plus a line of another sweep that must not show.
fn constructed_sweep(root: &Path) -> PathBuf {
    let run = "20260101-000000_all-models-all-profiles";
    let mut lines = Vec::new();
    for (m, model) in MODELS.iter().enumerate() {
        for (p, profile) in PROFILES.iter().enumerate() {
            if m == 1 && p == 1 {
                lines.push(log_line(model, profile, &[], run, Some("boom")));
                continue;
            }
            let mut paths = Vec::new();
            for b in 0..2 {
                let ext = match (m, p, b) {
                    (0, 1, 1) => "jpg",
                    (1, 2, 0) => "webp",
                    _ => "png",
                };
                let relative = format!("{run}/m{m}/{p}_{b}.{ext}");
                let path = root.join(&relative);
                fs_err::create_dir_all(path.parent().expect("parent")).expect("dir");
                image::RgbImage::from_pixel(96, 64, image::Rgb(colour(m, p, b)))
                    .save(&path)
                    .expect("image");
                paths.push(relative);
            }
            let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
            lines.push(log_line(model, profile, &paths, run, None));
        }
    }
    lines.push(log_line("Model C", "Cinematic", &["elsewhere.png"], "other-run", None));
    fs_err::write(root.join("jobs.log"), lines.join("\n") + "\n").expect("log");
    root.join(run)
}

fn run_sheet(args: &[&std::ffi::OsStr]) -> (serde_json::Value, String) {
    let output = imagelab().arg("sheet").args(args).arg("--json").output().expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    (serde_json::from_str(&stdout(&output)).expect("json"), stderr(&output))
}

fn decode(path: &Path) -> (image::RgbImage, SheetMetadata) {
    let bytes = fs_err::read(path).expect("sheet");
    let metadata = sheet::read_metadata(&bytes).expect("its own metadata");
    let img = image::load_from_memory(&bytes).expect("a PNG").to_rgb8();
    assert_eq!((img.width(), img.height()), (metadata.width, metadata.height));
    (img, metadata)
}

/// Every label drawn again with the font on the background matches the sheet's pixels.
fn assert_labels_drawn(img: &image::RgbImage, metadata: &SheetMetadata) {
    for label in &metadata.labels {
        let width = label.text.chars().count() as u32 * font::CELL_W * label.scale;
        let height = 7 * label.scale;
        let mut expected = image::RgbImage::from_pixel(width, height, image::Rgb(BACKGROUND));
        font::draw_text(&mut expected, 0, 0, label.scale, &label.text, INK);
        assert!(expected.pixels().any(|px| px.0 == INK) || label.text.trim().is_empty());
        for (x, y, px) in expected.enumerate_pixels() {
            assert_eq!(img.get_pixel(label.x + x, label.y + y), px, "label {label:?} at +{x},+{y}");
        }
    }
}

fn cell<'a>(
    metadata: &'a SheetMetadata,
    model: &str,
    profile: &str,
    batch: usize,
) -> &'a CellRecord {
    metadata
        .cells
        .iter()
        .find(|c| c.model == model && c.profile == profile && c.batch_index == batch)
        .unwrap_or_else(|| panic!("no cell {model}/{profile}/{batch}"))
}

#[test]
fn cells_sit_in_model_rows_and_profile_columns_with_their_colours_and_labels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = constructed_sweep(dir.path());
    for max_width in [900_u32, 400] {
        let out = dir.path().join(format!("sheet-{max_width}.png"));
        let (json, _) = run_sheet(&[
            run_dir.as_os_str(),
            "--max-width".as_ref(),
            max_width.to_string().as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ]);
        assert_eq!(json["path"], out.display().to_string());
        let (img, metadata) = decode(&out);
        assert!(img.width() <= max_width, "{} > {max_width}", img.width());
        assert_eq!(metadata.models, MODELS);
        assert_eq!(metadata.profiles, PROFILES, "the other sweep's line is not shown");
        assert_eq!((metadata.batch, metadata.cells.len()), (2, 12));
        let first = cell(&metadata, "Model A", "None (raw)", 0).rect;
        // 900 px leaves room for the images' own width; 400 px shrinks them (aspect kept).
        let expected_w = if max_width == 900 { 96 } else { 49 };
        assert_eq!((first.width, first.height), (expected_w, expected_w * 64 / 96));

        for (m, model) in MODELS.iter().enumerate() {
            for (p, profile) in PROFILES.iter().enumerate() {
                for b in 0..2 {
                    let record = cell(&metadata, model, profile, b);
                    let rect = record.rect;
                    // Rows by model, columns by profile, batch images side by side.
                    assert_eq!(rect.y, cell(&metadata, model, PROFILES[0], 0).rect.y);
                    assert_eq!(rect.x, cell(&metadata, MODELS[0], profile, b).rect.x);
                    if m > 0 {
                        assert!(
                            rect.y
                                >= cell(&metadata, MODELS[m - 1], profile, b).rect.y + rect.height
                        );
                    }
                    if b > 0 {
                        assert!(
                            rect.x >= cell(&metadata, model, profile, b - 1).rect.x + rect.width
                        );
                    } else if p > 0 {
                        assert!(
                            rect.x > cell(&metadata, model, PROFILES[p - 1], 1).rect.x + rect.width
                        );
                    }
                    assert!(
                        rect.x + rect.width <= img.width() && rect.y + rect.height <= img.height()
                    );
                    let centre = img.get_pixel(rect.x + rect.width / 2, rect.y + rect.height / 2).0;
                    let corner = img.get_pixel(rect.x, rect.y).0;
                    if m == 1 && p == 1 {
                        assert_eq!(
                            (record.status.as_str(), record.reason.as_deref()),
                            ("failed", Some("boom"))
                        );
                        assert_eq!(corner, FAILED_FILL);
                        assert_eq!(record.file, None);
                        continue;
                    }
                    assert_eq!(record.status, "image");
                    let file = record.file.as_deref().expect("file");
                    assert!(run_dir.join(file).is_file(), "{file}");
                    assert_eq!(record.seed, Some(40 + b as u64));
                    let want = colour(m, p, b);
                    let tolerance = if file.ends_with(".jpg") { 6 } else { 0 };
                    for got in [centre, corner] {
                        for c in 0..3 {
                            assert!(
                                got[c].abs_diff(want[c]) <= tolerance,
                                "{model}/{profile}/{b} ({file}): {got:?} vs {want:?}"
                            );
                        }
                    }
                }
            }
        }
        assert_labels_drawn(&img, &metadata);
        let texts: Vec<&str> = metadata.labels.iter().map(|l| l.text.as_str()).collect();
        for name in ["Model A", "Model B", "None (raw)", "Cinematic", "#1", "#2"] {
            assert!(texts.contains(&name), "{name} not in {texts:?}");
        }
        // A long profile name wraps onto lines that still say all of it.
        let profile_lines: Vec<&str> = metadata
            .labels
            .iter()
            .filter(|l| l.x == cell(&metadata, "Model A", PROFILES[2], 0).rect.x)
            .map(|l| l.text.as_str())
            .filter(|t| !t.starts_with('#'))
            .collect();
        assert_eq!(profile_lines.join(" "), PROFILES[2]);
    }
}

#[test]
fn a_one_model_sweep_is_a_grid_of_profiles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = "20260101-000000_all-profiles";
    let profiles = ["P1", "P2", "P3", "P4", "P5"];
    let mut lines = Vec::new();
    for (p, profile) in profiles.iter().enumerate() {
        let relative = format!("{run}/m/{p}.png");
        let path = dir.path().join(&relative);
        fs_err::create_dir_all(path.parent().expect("parent")).expect("dir");
        image::RgbImage::from_pixel(96, 64, image::Rgb([10 * p as u8, 0, 0]))
            .save(&path)
            .expect("png");
        lines.push(
            log_line("Only Model", profile, &[&relative], run, None)
                .replace("\"batch_size\":2", "\"batch_size\":1"),
        );
    }
    fs_err::write(dir.path().join("jobs.log"), lines.join("\n")).expect("log");
    let (json, _) = run_sheet(&[dir.path().join(run).as_os_str()]);
    let path = PathBuf::from(json["path"].as_str().expect("path"));
    assert_eq!(path, dir.path().join(run).join("contact_sheet.png"));
    let (img, metadata) = decode(&path);
    assert_eq!(json["layout"], "profile_grid");
    // Five profiles: three to a row.
    let rect = |p: usize| cell(&metadata, "Only Model", profiles[p], 0).rect;
    assert_eq!((rect(0).y, rect(1).y, rect(2).y), (rect(0).y, rect(0).y, rect(0).y));
    assert_eq!((rect(3).x, rect(4).x), (rect(0).x, rect(1).x));
    assert!(rect(3).y > rect(0).y + rect(0).height);
    for (p, profile) in profiles.iter().enumerate() {
        assert_eq!(img.get_pixel(rect(p).x + 3, rect(p).y + 3).0, [10 * p as u8, 0, 0]);
        // Each profile's name sits right above its image.
        let label = metadata.labels.iter().find(|l| l.text == *profile).expect("label");
        assert_eq!(label.x, rect(p).x);
        assert!(label.y < rect(p).y && rect(p).y - label.y < 40);
    }
    assert!(metadata.labels.iter().any(|l| l.text == "MODEL Only Model"));
    assert_labels_drawn(&img, &metadata);
}

#[test]
fn a_mock_sweep_sheet_shows_each_image_pixel_for_pixel_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_out, run_dir) = mock_sweep(dir.path());
    let output = imagelab().arg("sheet").arg(&run_dir).output().expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let sheet_path = run_dir.join("contact_sheet.png");
    assert!(stdout(&output).starts_with(&sheet_path.display().to_string()), "{}", stdout(&output));
    assert!(
        stdout(&output).contains("12 model(s) x 3 profile(s) x 2 image(s); 72 shown"),
        "{}",
        stdout(&output)
    );
    let (img, metadata) = decode(&sheet_path);
    assert_eq!(metadata.layout, sheet::SheetKind::ModelsByProfiles);
    assert_eq!(metadata.models.len(), 12);
    assert_eq!(metadata.models[0], "SDXL Base 1.0", "sweep order: the catalog's");
    assert_eq!(metadata.profiles, ["None (raw)", "Cinematic", "Watercolor"]);
    for record in &metadata.cells {
        assert_eq!(record.status, "image");
        let source = image::open(run_dir.join(record.file.as_deref().expect("file")))
            .expect("png")
            .to_rgb8();
        // 64 px images fit at their own size: the cell is the image.
        assert_eq!((record.rect.width, record.rect.height), (64, 64));
        for (x, y, px) in source.enumerate_pixels() {
            assert_eq!(
                img.get_pixel(record.rect.x + x, record.rect.y + y),
                px,
                "{:?}",
                record.file
            );
        }
    }
    assert_labels_drawn(&img, &metadata);

    let before = fs_err::read(&sheet_path).expect("sheet");
    let output = imagelab().arg("sheet").arg(&run_dir).output().expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(run_dir.join("contact_sheet-2.png").is_file());
    assert_eq!(fs_err::read(&sheet_path).expect("sheet"), before, "the first sheet is untouched");

    // A copy of the folder without its log: the images' own settings give the same grid.
    let copy = dir.path().join("copy");
    for file in crate::util::pngs_below(&run_dir) {
        if file.file_name().is_some_and(|n| n.to_string_lossy().starts_with("contact_sheet")) {
            continue;
        }
        let target = copy.join(file.strip_prefix(&run_dir).expect("inside"));
        fs_err::create_dir_all(target.parent().expect("parent")).expect("dir");
        fs_err::copy(&file, &target).expect("copy");
    }
    let (json, notes) = run_sheet(&[copy.as_os_str()]);
    assert!(notes.contains("no jobs log names this folder"), "{notes}");
    let (_, copied) = decode(Path::new(json["path"].as_str().expect("path")));
    assert_eq!((copied.models.len(), copied.profiles.len(), copied.cells.len()), (12, 3, 72));
    let files = |m: &SheetMetadata| {
        let mut files: Vec<Option<String>> = m.cells.iter().map(|c| c.file.clone()).collect();
        files.sort();
        files
    };
    assert_eq!(files(&copied), files(&metadata));
}

#[test]
fn a_sheet_that_cannot_be_made_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = constructed_sweep(dir.path());
    let check = |args: &[&std::ffi::OsStr], expected: &str| {
        let output = imagelab().arg("sheet").args(args).output().expect("runs");
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    };
    check(&[dir.path().join("nope").as_os_str()], "RUN_DIR: not a folder");
    check(
        &[run_dir.as_os_str(), "--max-width".as_ref(), "100".as_ref()],
        "--max-width 100: too narrow",
    );
    let empty = dir.path().join("empty");
    fs_err::create_dir_all(&empty).expect("dir");
    check(&[empty.as_os_str()], "no image in it has imagelab settings");
    assert!(!run_dir.join("contact_sheet.png").exists(), "nothing written");
}

/// An item stopped after its first image (status `interrupted`) and resumed later (a second
/// line with the rest): one block, each image in its batch place by seed.
#[test]
fn an_interrupted_item_and_its_resumed_line_fill_one_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = "20260101-000000_all-profiles";
    let line = |paths: &[&str], seeds: &[u64], status: &str| {
        json!({
            "timestamp": "2026-11-23T09:30:05+00:00", "mode": "txt2img", "prompt": "p",
            "negative": "", "all_profiles": true, "all_models": false, "profile": "P",
            "model": "M", "model_id": "org/M", "scheduler": "euler", "steps": 4, "cfg": 7.0,
            "width": 32, "height": 32, "batch_size": 3, "seed_base": 40, "seeds": seeds,
            "paths": paths, "run_dir": run, "error": null, "duration_s": 0.1, "device": "cpu",
            "status": status
        })
        .to_string()
    };
    for (name, shade) in [("a.png", 50_u8), ("c.png", 150)] {
        let path = dir.path().join(run).join(name);
        fs_err::create_dir_all(path.parent().expect("parent")).expect("dir");
        image::RgbImage::from_pixel(32, 32, image::Rgb([shade, shade, shade]))
            .save(&path)
            .expect("png");
    }
    let lines = [
        line(&[&format!("{run}/a.png")], &[40], "interrupted"),
        // The resumed line: the third image made, the second failed again at a later stop.
        line(&[&format!("{run}/c.png")], &[42], "interrupted"),
    ];
    fs_err::write(dir.path().join("jobs.log"), lines.join("\n")).expect("log");
    let (json, _) = run_sheet(&[dir.path().join(run).as_os_str()]);
    let (img, metadata) = decode(Path::new(json["path"].as_str().expect("path")));
    assert_eq!((metadata.batch, metadata.cells.len()), (3, 3));
    let status: Vec<(usize, &str, Option<u64>)> =
        metadata.cells.iter().map(|c| (c.batch_index, c.status.as_str(), c.seed)).collect();
    assert_eq!(status, [(0, "image", Some(40)), (1, "empty", None), (2, "image", Some(42))]);
    assert!(metadata.cells[1].reason.as_deref().is_some_and(|r| r.contains("interrupted")));
    let px = |i: usize| {
        let rect = metadata.cells[i].rect;
        img.get_pixel(rect.x + 1, rect.y + 1).0
    };
    assert_eq!((px(0), px(1), px(2)), ([50; 3], sheet::EMPTY_FILL, [150; 3]));
}
