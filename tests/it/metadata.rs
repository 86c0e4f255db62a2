//! PNG metadata against outside references (issue 7).
//!
//! - `tests/fixtures/metadata/imagelab_*.png` are written by our writer (regenerate with
//!   `cargo test --test it write_imagelab_fixtures -- --ignored`), then read by Pillow and by an
//!   independent Python mirror of A1111's `parse_generation_parameters`
//!   (`tools/reference/metadata/make_samples.py`); what they read is recorded in
//!   `outside_reader.json` and compared here without Python.
//! - `a1111_*.png`, `comfyui_*.png`, `invokeai_*.png`, `fooocus_*.png` are written by the same
//!   script exactly the way each tool writes them (Pillow `PngInfo.add_text`, the tools' own
//!   key names and value shapes).

use std::collections::BTreeMap;
use std::path::PathBuf;

use imagelab::storage::metadata::png_io::{self, PARAMETERS_KEY};
use imagelab::storage::metadata::{
    GenerationInfo, MetadataError, Source, format_human, infotext, recover, recover_file,
};
use imagelab::vocab::{LoraSpec, Mode, SamplerKind};

use crate::util::repo_root;

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/metadata")
}

fn read_fixture(name: &str) -> Vec<u8> {
    fs_err::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Our sample requests: Latin-1 and non-Latin-1 prompts, img2img, quotes, colons, LoRAs.
fn imagelab_samples() -> Vec<(&'static str, GenerationInfo)> {
    let base = GenerationInfo {
        model: "SDXL Base 1.0".into(),
        model_id: "stabilityai/stable-diffusion-xl-base-1.0".into(),
        model_revision: Some("462165984030d82259a11f4367a4eed129e94a7b".into()),
        version: "imagelab 0.1.0".into(),
        width: 8,
        height: 8,
        ..GenerationInfo::default()
    };
    vec![
        (
            "imagelab_txt2img.png",
            GenerationInfo {
                prompt: "a lighthouse at dusk, cinematic film still".into(),
                negative: "blurry, lowres".into(),
                user_prompt: "a lighthouse at dusk".into(),
                profile: "Cinematic".into(),
                sampler: SamplerKind::Dpmpp2mKarras,
                steps: 30,
                cfg: 7.0,
                seed: 42,
                ..base.clone()
            },
        ),
        (
            "imagelab_img2img_unicode.png",
            GenerationInfo {
                prompt: "ein Kätzchen im Schnee, 猫\nzweite Zeile: mit Doppelpunkt".into(),
                negative: "unscharf".into(),
                profile: "Dark Fantasy / Grimdark".into(),
                model: "Juggernaut XL".into(),
                model_id: "stablediffusionapi/juggernautxl".into(),
                sampler: SamplerKind::EulerA,
                requested_sampler: SamplerKind::EulerA,
                steps: 25,
                cfg: 5.5,
                seed: 4_294_967_295,
                mode: Mode::Img2img,
                strength: Some(0.6),
                init_image: Some("input/photo.png".into()),
                loras: vec![LoraSpec { source: "nerijs/pixel-art-xl".into(), weight: 0.8 }],
                ..base.clone()
            },
        ),
        (
            "imagelab_quotes_plain_dpmpp.png",
            GenerationInfo {
                prompt: "a \"quoted\" word: yes".into(),
                profile: "None (raw)".into(),
                model: "C:\\models\\x, y.safetensors".into(),
                sampler: SamplerKind::Dpmpp2m,
                steps: 4,
                cfg: 1.5,
                seed: 0,
                ..base
            },
        ),
    ]
}

fn pixels(width: u32, height: u32) -> Vec<u8> {
    (0..width * height * 3).map(|i| (i * 37 % 256) as u8).collect()
}

/// Writes our fixtures; run when the writer changes, then rerun the Python script.
#[test]
#[ignore = "regenerates committed fixtures"]
fn write_imagelab_fixtures() {
    fs_err::create_dir_all(fixtures()).expect("fixture folder");
    for (name, info) in imagelab_samples() {
        let bytes =
            png_io::encode_png(info.width, info.height, &pixels(info.width, info.height), &info)
                .expect("encode");
        fs_err::write(fixtures().join(name), bytes).expect("write fixture");
    }
}

#[test]
fn committed_imagelab_fixtures_match_the_writer() {
    for (name, info) in imagelab_samples() {
        let fresh =
            png_io::encode_png(info.width, info.height, &pixels(info.width, info.height), &info)
                .expect("encode");
        let committed = png_io::scan_text_chunks(&read_fixture(name)).expect("committed");
        let written = png_io::scan_text_chunks(&fresh).expect("fresh");
        assert_eq!(
            committed.chunks, written.chunks,
            "{name}: the writer changed; regenerate the fixtures (see the module comment)"
        );
    }
}

#[test]
fn our_pngs_round_trip_exactly() {
    for (name, info) in imagelab_samples() {
        let found = recover(&read_fixture(name)).expect(name);
        assert_eq!(found.source, Source::Imagelab, "{name}");
        assert_eq!(found.generation.as_ref(), Some(&info), "{name}");
        assert_eq!(found.prompt, info.prompt);
        assert_eq!(found.seed, Some(info.seed));
        assert_eq!(found.sampler, Some(info.sampler));
        assert_eq!(found.strength, if info.mode == Mode::Img2img { info.strength } else { None });
        assert!(found.warnings.is_empty(), "{name}: {:?}", found.warnings);
        let json = serde_json::to_string(&found).expect("serialises");
        let back: imagelab::storage::metadata::Recovered =
            serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, found);
    }
}

/// What Pillow and the Python A1111 mirror read from our fixtures.
#[derive(serde::Deserialize)]
struct OutsideReading {
    pillow_text: BTreeMap<String, String>,
    pillow_chunk_types: BTreeMap<String, String>,
    a1111: BTreeMap<String, String>,
}

#[test]
fn outside_readers_see_what_we_meant() {
    let recorded: BTreeMap<String, OutsideReading> =
        serde_json::from_slice(&read_fixture("outside_reader.json")).expect("recorded json");
    for (name, info) in imagelab_samples() {
        let reading = recorded.get(name).unwrap_or_else(|| panic!("{name} not recorded"));
        // Pillow sees the exact infotext and our JSON.
        assert_eq!(
            reading.pillow_text.get(PARAMETERS_KEY),
            Some(&infotext::format(&info)),
            "{name}"
        );
        let json = reading.pillow_text.get("imagelab").expect("imagelab chunk");
        assert_eq!(serde_json::from_str::<GenerationInfo>(json).expect("our json"), info);
        let expected_type =
            if png_io::is_latin1(&infotext::format(&info)) { "tEXt" } else { "iTXt" };
        assert_eq!(
            reading.pillow_chunk_types.get(PARAMETERS_KEY).map(String::as_str),
            Some(expected_type)
        );

        // A1111's reader recovers every setting, as the strings A1111 pastes into its UI.
        let a1111 = &reading.a1111;
        let get = |key: &str| a1111.get(key).map(String::as_str);
        let (sampler, schedule) = infotext::a1111_sampler_fields(info.sampler);
        assert_eq!(get("Prompt"), Some(info.prompt.as_str()), "{name}");
        assert_eq!(get("Negative prompt"), Some(info.negative.as_str()), "{name}");
        assert_eq!(get("Steps"), Some(info.steps.to_string().as_str()));
        assert_eq!(get("Sampler"), Some(sampler));
        assert_eq!(get("Schedule type"), schedule);
        assert_eq!(get("CFG scale"), Some(infotext::format_number(info.cfg).as_str()));
        assert_eq!(get("Seed"), Some(info.seed.to_string().as_str()));
        assert_eq!(get("Size-1"), Some(info.width.to_string().as_str()));
        assert_eq!(get("Size-2"), Some(info.height.to_string().as_str()));
        assert_eq!(get("Model"), Some(info.model.as_str()));
        assert_eq!(get("Style profile"), Some(info.profile.as_str()));
        assert_eq!(get("RNG"), Some("CPU"));
        assert_eq!(get("Version"), Some(info.version.as_str()));
        let strength = (info.mode == Mode::Img2img).then_some(info.strength).flatten();
        assert_eq!(get("Denoising strength"), strength.map(infotext::format_number).as_deref());

        // Our A1111 reader agrees with the Python mirror on every field.
        let ours = infotext::parse_generation_parameters(&infotext::format(&info));
        let mut ours_map: BTreeMap<String, String> = ours.fields.into_iter().collect();
        ours_map.insert("Prompt".into(), ours.prompt);
        ours_map.insert("Negative prompt".into(), ours.negative);
        assert_eq!(&ours_map, a1111, "{name}");
    }
}

#[test]
fn foreign_samples_recorded_by_the_python_mirror_parse_the_same() {
    // The A1111-form samples: our parser must split them exactly like the mirror did.
    let recorded: BTreeMap<String, OutsideReading> =
        serde_json::from_slice(&read_fixture("outside_reader.json")).expect("recorded json");
    for name in ["a1111_sdxl_hires.png", "a1111_unicode_itxt.png", "fooocus_a1111_scheme.png"] {
        let reading = recorded.get(name).unwrap_or_else(|| panic!("{name} not recorded"));
        let text = reading.pillow_text.get(PARAMETERS_KEY).expect("parameters");
        let ours = infotext::parse_generation_parameters(text);
        let mut ours_map: BTreeMap<String, String> = ours.fields.into_iter().collect();
        ours_map.insert("Prompt".into(), ours.prompt);
        ours_map.insert("Negative prompt".into(), ours.negative);
        assert_eq!(&ours_map, &reading.a1111, "{name}");
    }
}

#[test]
fn a1111_sample() {
    let found = recover(&read_fixture("a1111_sdxl_hires.png")).expect("reads");
    assert_eq!(found.source, Source::Automatic1111);
    assert_eq!(found.prompt, "masterpiece, best quality, a castle on a hill,\n(golden hour:1.2)");
    assert_eq!(found.negative, "lowres, bad anatomy, (worst quality:1.4)");
    assert_eq!((found.steps, found.cfg, found.seed), (Some(28), Some(6.5), Some(3_141_592_653)));
    assert_eq!((found.width, found.height), (Some(832), Some(1216)));
    assert_eq!(found.sampler, Some(SamplerKind::Dpmpp2mKarras));
    assert_eq!(found.model, "sd_xl_base_1.0");
    assert_eq!(found.strength, None, "hires denoising is not img2img");
    assert!(found.extra.contains_key("Lora hashes") && found.extra.contains_key("TI hashes"));
    assert!(found.extra.contains_key("Hires upscale"));
    let text = format_human(&found);
    assert!(
        text.contains("DPM++ 2M Karras (dpmpp_2m_karras)") && text.contains("hires fix"),
        "{text}"
    );

    let unicode = recover(&read_fixture("a1111_unicode_itxt.png")).expect("reads");
    assert_eq!(unicode.prompt, "桜の木の下の猫, watercolor");
    assert_eq!(unicode.sampler, Some(SamplerKind::EulerA));
    assert_eq!(unicode.strength, Some(0.55));
}

#[test]
fn comfyui_sample() {
    let found = recover(&read_fixture("comfyui_sdxl.png")).expect("reads");
    assert_eq!(found.source, Source::Comfyui);
    assert_eq!(found.prompt, "a red fox in the snow, detailed fur");
    assert_eq!(found.negative, "blurry, watermark");
    assert_eq!((found.steps, found.cfg, found.seed), (Some(25), Some(7.0), Some(1_122_334_455)));
    assert_eq!((found.width, found.height), (Some(1024), Some(1024)));
    assert_eq!(found.sampler, Some(SamplerKind::Dpmpp2mKarras));
    assert_eq!(found.model, "sd_xl_base_1.0.safetensors");
}

#[test]
fn invokeai_sample() {
    let found = recover(&read_fixture("invokeai_sdxl.png")).expect("reads");
    assert_eq!(found.source, Source::Invokeai);
    assert_eq!(found.prompt, "a cozy cabin in the woods");
    assert_eq!(found.negative, "people");
    assert_eq!((found.steps, found.cfg, found.seed), (Some(30), Some(6.0), Some(2_024)));
    assert_eq!((found.width, found.height), (Some(1216), Some(832)));
    assert_eq!(found.sampler, Some(SamplerKind::EulerA));
    assert_eq!(found.model, "Juggernaut XL v9");
}

#[test]
fn fooocus_samples() {
    let json = recover(&read_fixture("fooocus_json_scheme.png")).expect("reads");
    assert_eq!(json.source, Source::Fooocus);
    assert_eq!(json.prompt, "a lighthouse, cinematic still, emotional, harmonious");
    assert_eq!((json.width, json.height), (Some(1152), Some(896)));
    assert_eq!((json.steps, json.cfg, json.seed), (Some(30), Some(4.0), Some(7_777_777)));
    assert_eq!(json.sampler, Some(SamplerKind::Dpmpp2mKarras));
    assert_eq!(json.model, "juggernautXL_v8Rundiffusion");
    let a1111 = recover(&read_fixture("fooocus_a1111_scheme.png")).expect("reads");
    assert_eq!(a1111.source, Source::Fooocus);
    assert_eq!(a1111.prompt, json.prompt);
    assert_eq!((a1111.width, a1111.height, a1111.seed), (json.width, json.height, json.seed));
    assert_eq!(a1111.sampler, Some(SamplerKind::Dpmpp2mKarras));
    assert!(!a1111.warnings.iter().any(|w| w.contains("RNG")), "{:?}", a1111.warnings);
}

#[test]
fn damaged_and_foreign_files_are_clear_errors() {
    let ours = read_fixture("imagelab_txt2img.png");
    // Not a PNG.
    assert!(matches!(recover(b"GIF89a..."), Err(MetadataError::UnknownFormat(_))));
    // A PNG without metadata names what it has.
    let bare = {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, 1, 1);
        encoder.set_color(png::ColorType::Rgb);
        encoder.add_text_chunk("Software".into(), "GIMP".into()).expect("text");
        encoder.write_header().expect("header").write_image_data(&[0, 0, 0]).expect("data");
        out
    };
    let err = recover(&bare).expect_err("no metadata");
    assert!(err.to_string().contains("Software"), "{err}");
    // Truncated anywhere: a result or an error, never a panic; once the JSON chunk is whole,
    // the exact settings come back with a warning about the damage.
    for cut in 0..ours.len() {
        match recover(&ours[..cut]) {
            Ok(found) => assert!(!found.warnings.is_empty(), "cut {cut}"),
            Err(err) => assert!(!err.to_string().is_empty()),
        }
    }
    // A file path that does not exist names the path last.
    let err = recover_file(&fixtures().join("missing.png")).expect_err("missing");
    assert!(err.to_string().ends_with("missing.png"), "{err}");
    let err = recover_file(&fixtures().join("outside_reader.json")).expect_err("not png");
    assert!(err.to_string().ends_with("outside_reader.json"), "{err}");
}

fn png_with_text(chunks: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 1, 1);
        encoder.set_color(png::ColorType::Rgb);
        for (key, text) in chunks {
            encoder.add_itxt_chunk((*key).into(), (*text).into()).expect("itxt");
        }
        encoder.write_header().expect("header").write_image_data(&[0, 0, 0]).expect("data");
    }
    out
}

#[test]
fn broken_sources_fall_back_with_warnings() {
    let infotext =
        "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x64, RNG: CPU";
    for (key, broken) in [
        ("imagelab", "{\"seed\": 1, \"sampler\": "),
        ("imagelab", "{\"unrelated\": true}"),
        ("invokeai_metadata", "[\"not an object\"]"),
        ("prompt", "{\"1\": {\"class_type\": \"KSampler\", \"inputs\": {\"seed\": [\"1\", 0]}}}"),
    ] {
        let found = recover(&png_with_text(&[(key, broken), ("parameters", infotext)]))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(found.source, Source::Automatic1111, "{key}");
        assert_eq!(found.seed, Some(5));
        assert!(
            found.warnings.iter().any(|w| w.contains(key) || w.contains("ComfyUI")),
            "{key}: {:?}",
            found.warnings
        );
        // Alone, the broken chunk is a clear error naming it.
        let err = recover(&png_with_text(&[(key, broken)])).expect_err(key);
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn enormous_infotext_is_read_in_bounded_time() {
    // 6 MB of prompt and a 1 MB parameter line full of unclosed quotes.
    let prompt = "word, ".repeat(1_000_000);
    let params = "Steps: 20, Sampler: Euler, Seed: 1, ".to_owned() + &"kk: \"x, ".repeat(130_000);
    let text = format!("{prompt}\n{params}");
    let started = std::time::Instant::now();
    let found = recover(&png_with_text(&[("parameters", &text)])).expect("reads");
    assert_eq!(found.steps, Some(20));
    assert_eq!(found.prompt.len(), prompt.trim_end().len());
    // Linear work: well under a second in release, a few seconds in an unoptimised test build.
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
}

#[test]
fn brace_prompts_are_infotext_not_fooocus_json() {
    let text = "{red|blue} car\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 9, Wildcard: {x}";
    let found = recover(&png_with_text(&[("parameters", text)])).expect("reads");
    assert_eq!(found.source, Source::Automatic1111);
    assert_eq!(found.prompt, "{red|blue} car");
    assert_eq!(found.seed, Some(9));
    assert!(found.warnings.iter().any(|w| w.contains("Fooocus JSON")), "{:?}", found.warnings);
}

#[test]
fn human_format_of_our_image() {
    let found = recover(&read_fixture("imagelab_img2img_unicode.png")).expect("reads");
    let text = format_human(&found);
    for expected in [
        "Source:          imagelab (exact: --from reproduces it)",
        "Prompt:          ein Kätzchen im Schnee, 猫\n                 zweite Zeile: mit Doppelpunkt",
        "Model:           Juggernaut XL",
        "Sampler:         Euler a (euler_a)  [written: Euler a]",
        "Steps: 25  CFG: 5.5  Seed: 4294967295  Size: 8x8",
        "Mode:            img2img, strength 0.6",
        "LoRA:            nerijs/pixel-art-xl (weight 0.8)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

/// What `imagelab info` prints for every tool's PNG, pinned: a change in wording or layout is
/// seen in review (tests/it/snapshots/).
#[test]
fn info_text_of_every_tool_is_pinned() {
    let mut names: Vec<String> = fs_err::read_dir(fixtures())
        .expect("fixtures")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".png"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 9, "{names:?}");
    for name in names {
        let found = recover(&read_fixture(&name)).expect("reads");
        let stem = name.trim_end_matches(".png");
        insta::assert_snapshot!(format!("info_{stem}"), format_human(&found));
    }
}
