//! Issue 11, item 3: LoRAs merged at load against diffusers' `load_lora_weights` +
//! `fuse_lora(lora_scale=w)` (`tools/reference/make_lora_refs.py`): one LoRA and two at different
//! weights (one negative), in kohya names (SGM and diffusers block names) and in peft names, on
//! the diffusers folder and on the single-file checkpoint; refusals by adapter type.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use imagelab::diffusion::lora::{LoraReport, LoraToApply};
use imagelab::diffusion::pipeline::{DiffusionPipeline, PipelineParts};
use imagelab::models::lora::LoraTarget;
use serde_json::Value;

use crate::refs::{check_run, fixtures, get, reference, runs};

/// `tests/fixtures/diffusion/lora/<file>`.
pub fn lora_file(file: &str) -> PathBuf {
    fixtures().join("lora").join(file)
}

/// The parts of a recorded run's base model: the folder, or the single file with its configs
/// (as diffusers loaded it).
fn base_parts(base: &str) -> PipelineParts {
    match base {
        "folder" => PipelineParts::open(&fixtures().join("sdxl_tiny_3lvl"), None, false),
        _ => PipelineParts::open(
            &fixtures().join("single_file/sdxl_tiny.f16.safetensors"),
            Some(&fixtures().join("single_file/configs/sdxl_tiny")),
            false,
        ),
    }
    .expect("base parts")
}

/// The LoRAs of a recorded run in one naming (`peft` or `kohya`).
fn run_loras(run: &Value, naming: &str) -> Vec<LoraToApply> {
    run["loras"]
        .as_array()
        .expect("loras")
        .iter()
        .map(|lora| LoraToApply {
            path: lora_file(lora["files"][naming].as_str().expect("file")),
            weight: lora["weight"].as_f64().expect("weight") as f32,
        })
        .collect()
}

fn load(base: &str, loras: &[LoraToApply]) -> (DiffusionPipeline, Vec<LoraReport>) {
    let (parts, reports) = base_parts(base).with_loras(loras).expect("LoRAs merge");
    let pipeline = DiffusionPipeline::from_parts(parts, &Device::Cpu, DType::F32).expect("loads");
    (pipeline, reports)
}

/// Every recorded run — no LoRA, LoRA a at 0.8, a at 0.8 with b at −0.5 — on the folder and on
/// the single file, with the LoRAs in peft names and in kohya names, within 1e-4 of diffusers.
#[test]
fn merged_loras_match_diffusers_fuse_lora() {
    let refs = reference("lora");
    for (key, run) in runs("lora") {
        let (base, _) = key.split_once('/').expect("base/case");
        for naming in ["peft", "kohya"] {
            let loras = run_loras(&run, naming);
            let (pipeline, reports) = load(base, &loras);
            let what = format!("{key} ({naming})");
            check_run(&what, &pipeline, &refs, &key, &run, 1e-4);
            for report in &reports {
                assert!(report.unmatched.is_empty(), "{what}: unmatched {:?}", report.unmatched);
            }
            if key.ends_with("a_0.8") && naming == "kohya" {
                // lora_a: every attention, feed-forward, proj and resnet layer and sampler
                // conv of the UNet (SGM names), and both text encoders.
                let modules = &reports[0].modules;
                assert!(modules[&LoraTarget::Unet] > 50, "{modules:?}");
                assert!(modules[&LoraTarget::TextEncoder(0)] > 0, "{modules:?}");
                assert!(modules[&LoraTarget::TextEncoder(1)] > 0, "{modules:?}");
            }
        }
    }
}

/// The text encoders really change: `encode_prompt` with `lora_a` fused, against diffusers'.
#[test]
fn merged_lora_changes_the_text_encoders_as_diffusers() {
    let refs = reference("lora");
    for file in ["lora_a.peft.safetensors", "lora_a.kohya_sgm.safetensors"] {
        let loras = [LoraToApply { path: lora_file(file), weight: 0.8 }];
        let (pipeline, reports) = load("folder", &loras);
        assert!(reports[0].unmatched.is_empty(), "{file}: {:?}", reports[0].unmatched);
        let embeddings = pipeline
            .encode_prompt(
                "a photo of an astronaut riding a horse on mars",
                "",
                imagelab::diffusion::tokenizer::LongPromptMode::Chunk,
            )
            .expect("encode");
        crate::refs::assert_close(
            &format!("{file} prompt_embeds"),
            &embeddings.prompt,
            get(&refs, "folder/a_0.8.prompt_embeds"),
            1e-4,
        );
        crate::refs::assert_close(
            &format!("{file} pooled"),
            embeddings.pooled.as_ref().expect("pooled"),
            get(&refs, "folder/a_0.8.pooled"),
            1e-4,
        );
    }
}

/// A safetensors file with these tensors (f32 zeros of the given shapes) and metadata.
pub fn write_safetensors(path: &Path, tensors: &[(&str, &[usize])], metadata: &[(&str, &str)]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    if !metadata.is_empty() {
        let map: serde_json::Map<String, Value> =
            metadata.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect();
        header.insert("__metadata__".to_owned(), Value::Object(map));
    }
    let text = serde_json::to_vec(&Value::Object(header)).expect("json");
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&text);
    bytes.resize(bytes.len() + offset, 0);
    fs_err::write(path, bytes).expect("write");
}

/// Tensor names and shapes of a made-up file.
type Tensors = Vec<(String, Vec<usize>)>;

/// LoHa, LoKr, DoRA (kohya and peft), OFT and a Flux LoRA are refused before anything loads,
/// naming what they are; so is a LoRA for another base model, naming the module.
#[test]
fn unsupported_adapters_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let module = "lora_unet_down_blocks_1_attentions_0_proj_in";
    let cases: Vec<(&str, Tensors, &str)> = vec![
        ("loha", vec![(format!("{module}.hada_w1_a"), vec![4, 2])], "LoHa"),
        ("lokr", vec![(format!("{module}.lokr_w1"), vec![2, 2])], "LoKr"),
        (
            "dora_kohya",
            vec![
                (format!("{module}.lora_down.weight"), vec![2, 4]),
                (format!("{module}.lora_up.weight"), vec![4, 2]),
                (format!("{module}.dora_scale"), vec![1, 4]),
            ],
            "DoRA",
        ),
        (
            "dora_peft",
            vec![("unet.down_blocks.1.attentions.0.proj_in.lora_magnitude_vector".into(), vec![4])],
            "DoRA",
        ),
        ("oft", vec![(format!("{module}.oft_blocks"), vec![2, 2, 2])], "OFT"),
        (
            "flux",
            vec![("lora_unet_double_blocks_0_img_attn_proj.lora_down.weight".into(), vec![2, 4])],
            "Flux",
        ),
        (
            "sd15_on_sdxl",
            vec![
                (
                    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight".into(),
                    vec![2, 320],
                ),
                (
                    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight".into(),
                    vec![320, 2],
                ),
            ],
            "another base model",
        ),
    ];
    for (name, tensors, expected) in cases {
        let path = dir.path().join(format!("{name}.safetensors"));
        let shapes: Vec<(&str, &[usize])> =
            tensors.iter().map(|(n, s)| (n.as_str(), s.as_slice())).collect();
        write_safetensors(&path, &shapes, &[]);
        let err = base_parts("folder")
            .with_loras(&[LoraToApply { path: path.clone(), weight: 1.0 }])
            .err()
            .unwrap_or_else(|| panic!("{name} refused"))
            .to_string();
        assert!(err.contains(expected), "{name}: {err}");
        assert!(err.contains(&format!("{name}.safetensors")), "{name} names the file: {err}");
    }
}

/// A module of the right name with the wrong shape is refused naming the module and both
/// shapes; a LoRA with one module the model lacks still merges the rest and reports it.
#[test]
fn mismatched_shapes_are_refused_and_unknown_modules_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let module = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q";
    let wrong = dir.path().join("wrong.safetensors");
    write_safetensors(
        &wrong,
        &[
            (&format!("{module}.lora_A.weight"), &[2, 7]),
            (&format!("{module}.lora_B.weight"), &[7, 2]),
        ],
        &[],
    );
    let err = base_parts("folder")
        .with_loras(&[LoraToApply { path: wrong, weight: 1.0 }])
        .expect_err("refused")
        .to_string();
    assert!(err.contains("to_q") && err.contains("[7, 2]"), "{err}");
    let partial = dir.path().join("partial.safetensors");
    let known = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k";
    let unknown = "unet.down_blocks.7.attentions.0.transformer_blocks.0.attn1.to_k";
    write_safetensors(
        &partial,
        &[
            (&format!("{known}.lora_A.weight"), &[2, 16]),
            (&format!("{known}.lora_B.weight"), &[16, 2]),
            (&format!("{unknown}.lora_A.weight"), &[2, 16]),
            (&format!("{unknown}.lora_B.weight"), &[16, 2]),
        ],
        &[],
    );
    let (_, reports) = base_parts("folder")
        .with_loras(&[LoraToApply { path: partial, weight: 1.0 }])
        .expect("merges what fits");
    assert_eq!(reports[0].modules.get(&LoraTarget::Unet), Some(&1));
    assert_eq!(reports[0].unmatched, vec![unknown.to_owned()]);
}

/// A1111's "addnet" hash of a LoRA, computed here on its own: SHA-256 of the bytes after the
/// safetensors header, first 12 hex digits.
fn addnet_short_hash(path: &Path) -> String {
    use sha2::Digest;
    let bytes = fs_err::read(path).expect("lora");
    let header = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let start = 8 + usize::try_from(header).expect("fits");
    let digest = sha2::Sha256::digest(&bytes[start..]);
    digest[..6].iter().fold(String::new(), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// An A1111 models folder whose `models/Lora` holds `lora_a` (kohya, SGM names).
fn webui_with_lora_a(root: &Path) -> PathBuf {
    let webui = root.join("webui");
    let lora_dir = webui.join("models/Lora");
    fs_err::create_dir_all(&lora_dir).expect("dir");
    fs_err::copy(lora_file("lora_a.kohya_sgm.safetensors"), lora_dir.join("lora_a.safetensors"))
        .expect("copy");
    webui
}

/// The binary on the candle backend: `lora_a` of the models folder named by an A1111 prompt
/// tag at 0.8, `lora_b` given with `--lora FILE:-0.5` — the latent handed to the VAE within
/// 1e-4 of diffusers' `load_lora_weights` + `fuse_lora` (run `folder/a_0.8_b_-0.5`); the PNG
/// says it as A1111 writes it (`<lora:name:w>` in the prompt, `Lora hashes` with the addnet
/// hash); `--from` that PNG runs the same LoRAs again.
#[test]
fn the_cli_merges_tagged_and_flagged_loras_as_diffusers() {
    use crate::util::{imagelab, parameters_of, pngs_below, stderr};
    let root = tempfile::tempdir().expect("tempdir");
    let webui = webui_with_lora_a(root.path());
    let key = "folder/a_0.8_b_-0.5";
    let run = runs("lora")[key].clone();
    let prompt = run["prompt"].as_str().expect("prompt");
    let lora_b = lora_file("lora_b.kohya.safetensors");
    let out = root.path().join("out");
    let output = imagelab()
        .args(["generate", "--backend", "candle", "--device", "cpu", "--save-latent"])
        .arg("--models-dir")
        .arg(&webui)
        .arg("--model")
        .arg(fixtures().join("sdxl_tiny_3lvl"))
        .args(["--prompt", &format!("{prompt} <lora:lora_a:0.8>")])
        .arg("--lora")
        .arg(format!("{}:-0.5", lora_b.display()))
        .args(["--steps", "4", "--cfg", "5", "--seed", "42", "--width", "64", "--height", "64"])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let pngs = pngs_below(&out);
    assert_eq!(pngs.len(), 1);
    let latent = |png: &Path| {
        let file = png.with_extension("latent");
        candle_core::safetensors::load(&file, &Device::Cpu).expect("latent")["latent_tensor"]
            .clone()
    };
    let refs = reference("lora");
    let theirs = (get(&refs, &format!("{key}.latents")) / 0.13025).expect("unscaled");
    let ours = latent(&pngs[0]);
    crate::refs::assert_close("CLI with two LoRAs", &ours, &theirs, 1e-4);

    let params = parameters_of(&pngs[0]);
    let first_line = params.lines().next().expect("prompt line");
    assert_eq!(first_line, format!("{prompt} <lora:lora_b.kohya:-0.5> <lora:lora_a:0.8>"));
    let hashes = format!(
        "Lora hashes: \"lora_b.kohya: {}, lora_a: {}\"",
        addnet_short_hash(&lora_b),
        addnet_short_hash(&lora_file("lora_a.kohya_sgm.safetensors"))
    );
    assert!(params.contains(&hashes), "{hashes}\n{params}");

    // `--from` the PNG: the same LoRAs, the same latent.
    let again = root.path().join("again");
    let output = imagelab()
        .args(["generate", "--backend", "candle", "--device", "cpu", "--save-latent"])
        .arg("--models-dir")
        .arg(&webui)
        .arg("--from")
        .arg(&pngs[0])
        .arg("--model")
        .arg(fixtures().join("sdxl_tiny_3lvl"))
        .arg("--out")
        .arg(&again)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let rerun = pngs_below(&again);
    assert_eq!(parameters_of(&rerun[0]).lines().next(), Some(first_line));
    crate::refs::assert_close("--from with two LoRAs", &latent(&rerun[0]), &ours, 1e-6);
}

/// A PNG with only A1111's text (tags, no `Lora weights`): `--from` loads the tagged LoRA found
/// in the LoRA folder by its name and leaves out, with a note naming it, one that is not there;
/// `info` lists both.
#[test]
fn a1111_lora_tags_read_back_by_name_and_a_missing_one_is_named() {
    use crate::util::{imagelab, parameters_of, pngs_below, stderr, stdout};
    let root = tempfile::tempdir().expect("tempdir");
    let webui = webui_with_lora_a(root.path());
    let png = root.path().join("a1111.png");
    let text = "a castle, <lora:lora_a:0.7> <lora:not_here:0.3>\nSteps: 4, Sampler: Euler, \
                CFG scale: 5, Seed: 7, Size: 64x64, Model: sd_xl_base_1.0, Lora hashes: \
                \"lora_a: 0123456789ab, not_here: ba9876543210\"";
    let file = fs_err::File::create(&png).expect("png");
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 1, 1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.add_text_chunk("parameters".to_owned(), text.to_owned()).expect("text");
    let mut writer = encoder.write_header().expect("header");
    writer.write_image_data(&[0, 0, 0]).expect("pixels");
    writer.finish().expect("finish");

    let info = imagelab().arg("info").arg(&png).output().expect("runs");
    let listing = stdout(&info);
    assert!(listing.contains("lora_a (weight 0.7)"), "{listing}");
    assert!(listing.contains("not_here (weight 0.3)"), "{listing}");

    let out = root.path().join("out");
    let output = imagelab()
        .args(["generate", "--backend", "mock", "--models-dir"])
        .arg(&webui)
        .arg("--from")
        .arg(&png)
        .arg("--model")
        .arg(fixtures().join("sdxl_tiny_3lvl"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let notes = stderr(&output);
    assert!(notes.contains("\"not_here\"") && notes.contains("left out"), "{notes}");
    let params = parameters_of(&pngs_below(&out)[0]);
    let first_line = params.lines().next().expect("prompt");
    assert_eq!(first_line, "a castle <lora:lora_a:0.7>");
}
