//! The bad-input table (issue 16, part 5): hundreds of bad inputs across flags, env-var mode,
//! profiles files, init images, model folders and files, metadata files and `resume`, each run
//! through the real binary and checked for its exit code, the field or file its message must
//! name, no panic, and nothing written. Every message is pinned in a snapshot
//! (`tests/it/snapshots/it__bad_input__bad_input_table.snap`).
//!
//! Template files and server requests join the table when those features exist.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::util::{files_below, imagelab, repo_root, stderr};

/// One bad input.
struct Case {
    /// Short name, unique (the snapshot's heading).
    name: String,
    /// Arguments after `imagelab`; `--out <case folder>` is added for `generate`. Empty: the
    /// environment-variable mode.
    args: Vec<OsString>,
    /// Environment variables.
    env: Vec<(String, OsString)>,
    /// The exit code expected.
    code: i32,
    /// Every one of these must be in the message (the field, variable or file it names).
    names: Vec<String>,
}

fn os(text: &str) -> OsString {
    OsString::from(text)
}

/// Bytes that are not UTF-8.
fn bad_utf8(prefix: &str) -> OsString {
    let mut bytes = prefix.as_bytes().to_vec();
    bytes.extend_from_slice(b"\xff\xfe");
    OsString::from_vec(bytes)
}

/// The table's files: broken images, profiles, models, metadata, made once, read-only.
struct Fixtures {
    dir: tempfile::TempDir,
}

impl Fixtures {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> OsString {
        self.path(name).into_os_string()
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        let path = self.path(name);
        fs_err::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs_err::write(path, bytes).expect("write");
    }

    /// A copy of the tiny SDXL model written by diffusers, to damage.
    fn model(&self, name: &str) -> PathBuf {
        let from = repo_root().join("tests/fixtures/diffusion/sdxl_tiny");
        let to = self.path(name);
        for file in files_below(&from) {
            let target = to.join(file.strip_prefix(&from).expect("inside"));
            fs_err::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            fs_err::copy(&file, &target).expect("copy");
        }
        to
    }

    fn new() -> Self {
        let fixtures = Self { dir: tempfile::tempdir().expect("tempdir") };
        fixtures.images();
        fixtures.profiles();
        fixtures.models();
        fixtures.metadata();
        fixtures
    }

    fn images(&self) {
        let png = |width, height| {
            let mut bytes = Vec::new();
            image::RgbImage::new(width, height)
                .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
                .expect("encode");
            bytes
        };
        let good = png(64, 48);
        self.write("img/text.png", b"this is text");
        self.write("img/empty.png", b"");
        self.write("img/signature_only.png", &good[..8]);
        self.write("img/header_only.png", &good[..33]);
        // A valid header over pixel data cut short: only a full decode sees it.
        self.write("img/truncated_pixels.png", &good[..good.len() - 30]);
        let mut corrupt = good.clone();
        let idat = corrupt.windows(4).position(|w| w == b"IDAT").expect("IDAT") + 8;
        for byte in &mut corrupt[idat..idat + 6] {
            *byte ^= 0x5a;
        }
        self.write("img/corrupt_pixels.png", &corrupt);
        self.write("img/tiny.png", &png(4, 4));
        self.write("img/gif.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;");
        self.write("img/bmp.bmp", b"BM\x1e\x00\x00\x00\x00\x00\x00\x00\x1a\x00\x00\x00");
        self.write("img/jpeg_cut.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01");
        self.write("img/webp_cut.webp", b"RIFF\x24\x00\x00\x00WEBPVP8 ");
        fs_err::create_dir_all(self.path("img/a_folder.png")).expect("mkdir");
    }

    fn profiles(&self) {
        let raw = "(name: \"None (raw)\")";
        let with = |body: &str| format!("[{raw}, {body}]");
        let long = "x".repeat(20_001);
        for (name, text) in [
            ("empty", String::new()),
            ("not_ron", "{ this is not ron".to_owned()),
            ("not_a_list", "(name: \"None (raw)\")".to_owned()),
            ("numbers", "[1, 2, 3]".to_owned()),
            ("unknown_field", with("(name: \"A\", colour: \"red\")")),
            ("no_raw", "[(name: \"A\")]".to_owned()),
            ("duplicate", with("(name: \"A\"), (name: \"a\")")),
            ("empty_name", with("(name: \"  \")")),
            ("steps_zero", with("(name: \"Zero\", default_steps: 0)")),
            ("steps_huge", with("(name: \"Huge\", default_steps: 4000000000)")),
            ("steps_100000", with("(name: \"Many\", default_steps: 100000)")),
            ("steps_negative", with("(name: \"Neg\", default_steps: -5)")),
            ("steps_text", with("(name: \"Text\", default_steps: \"ten\")")),
            ("steps_overflow", with("(name: \"Big\", default_steps: 99999999999)")),
            ("cfg_huge", with("(name: \"Cfg\", default_cfg: 1e30)")),
            ("cfg_negative", with("(name: \"Cfg\", default_cfg: -1.0)")),
            ("cfg_nan", with("(name: \"Cfg\", default_cfg: NaN)")),
            ("cfg_inf", with("(name: \"Cfg\", default_cfg: inf)")),
            ("scheduler", with("(name: \"S\", default_scheduler: \"plms\")")),
            ("long_suffix", with(&format!("(name: \"Long\", prompt_suffix: \"{long}\")"))),
            ("long_negative", with(&format!("(name: \"Long\", negative_suffix: \"{long}\")"))),
            ("truncated", "[(name: \"None (raw)\"), (name: \"A\", prompt_su".to_owned()),
            ("trailing", format!("[{raw}] trailing")),
        ] {
            self.write(&format!("profiles/{name}.ron"), text.as_bytes());
        }
        self.write("profiles/not_utf8.ron", b"[(name: \"None (raw)\", prompt_suffix: \"\xff\")]");
        fs_err::create_dir_all(self.path("profiles/a_folder.ron")).expect("mkdir");
    }

    fn models(&self) {
        let edit = |model: &Path, file: &str, from: &str, to: &str| {
            let path = model.join(file);
            let text = fs_err::read_to_string(&path).expect("read");
            assert!(text.contains(from), "{file}: {from}");
            fs_err::write(&path, text.replacen(from, to, 1)).expect("write");
        };
        let truncate = |model: &Path, file: &str, keep: usize| {
            let path = model.join(file);
            let bytes = fs_err::read(&path).expect("read");
            fs_err::write(&path, &bytes[..keep.min(bytes.len())]).expect("write");
        };
        let unet = "unet/diffusion_pytorch_model.safetensors";
        let vae = "vae/diffusion_pytorch_model.safetensors";
        fs_err::create_dir_all(self.path("models/empty")).expect("mkdir");
        let m = self.model("models/index_not_json");
        fs_err::write(m.join("model_index.json"), "{ nope").expect("write");
        let m = self.model("models/index_array");
        fs_err::write(m.join("model_index.json"), "[1, 2]").expect("write");
        let m = self.model("models/no_unet");
        fs_err::remove_dir_all(m.join("unet")).expect("rm");
        let m = self.model("models/no_vae_config");
        fs_err::remove_file(m.join("vae/config.json")).expect("rm");
        let m = self.model("models/no_text_encoder_weights");
        fs_err::remove_file(m.join("text_encoder/model.safetensors")).expect("rm");
        let m = self.model("models/no_vocab");
        fs_err::remove_file(m.join("tokenizer/vocab.json")).expect("rm");
        let m = self.model("models/no_scheduler");
        fs_err::remove_file(m.join("scheduler/scheduler_config.json")).expect("rm");
        let m = self.model("models/pickle_unet");
        fs_err::rename(m.join(unet), m.join("unet/diffusion_pytorch_model.bin")).expect("mv");
        let m = self.model("models/pickle_text_encoder");
        fs_err::rename(
            m.join("text_encoder/model.safetensors"),
            m.join("text_encoder/pytorch_model.bin"),
        )
        .expect("mv");
        let m = self.model("models/truncated_unet");
        let len = fs_err::metadata(m.join(unet)).expect("meta").len();
        truncate(&m, unet, usize::try_from(len).expect("small") - 100);
        let m = self.model("models/truncated_vae_header");
        truncate(&m, vae, 200);
        let m = self.model("models/unet_seven_bytes");
        truncate(&m, unet, 7);
        let m = self.model("models/unet_header_huge");
        let mut bytes = fs_err::read(m.join(unet)).expect("read");
        bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        fs_err::write(m.join(unet), bytes).expect("write");
        let m = self.model("models/unet_header_garbage");
        let mut bytes = fs_err::read(m.join(unet)).expect("read");
        bytes[8] = b'#';
        fs_err::write(m.join(unet), bytes).expect("write");
        let m = self.model("models/unet_bad_dtype");
        let bytes = fs_err::read(m.join(unet)).expect("read");
        let header_len =
            usize::try_from(u64::from_le_bytes(bytes[..8].try_into().expect("8"))).expect("len");
        let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).expect("utf8");
        let first_dtype = header.find("\"F32\"").or_else(|| header.find("\"F16\"")).expect("dtype");
        let mut bytes = bytes.clone();
        bytes[8 + first_dtype + 1..8 + first_dtype + 4].copy_from_slice(b"Q99");
        fs_err::write(m.join(unet), bytes).expect("write");
        let m = self.model("models/vae_in_unet");
        fs_err::copy(m.join(vae), m.join(unet)).expect("swap");
        let m = self.model("models/hidden_size_mismatch");
        edit(&m, "text_encoder_2/config.json", "\"hidden_size\": 24", "\"hidden_size\": 32");
        let m = self.model("models/in_channels_mismatch");
        edit(&m, "unet/config.json", "\"in_channels\": 4", "\"in_channels\": 9");
        let m = self.model("models/vae_latents_mismatch");
        edit(&m, "vae/config.json", "\"latent_channels\": 4", "\"latent_channels\": 16");
        let m = self.model("models/unet_config_not_json");
        fs_err::write(m.join("unet/config.json"), "{\"in_channels\": ").expect("write");
        let m = self.model("models/scheduler_not_json");
        fs_err::write(m.join("scheduler/scheduler_config.json"), "nope").expect("write");
        // Single files.
        self.write("models/empty.safetensors", b"");
        self.write("models/text.safetensors", b"this is not a safetensors file");
        self.write("models/model.ckpt", b"PK\x03\x04 a pickle in a zip");
        self.write("models/model.bin", b"\x80\x02}q\x00.");
        let other = safetensors_with(&["some.random.tensor"]);
        self.write("models/other.safetensors", &other);
        let lora = safetensors_with(&["lora_unet_down_blocks_0_attentions_0.lora_down.weight"]);
        self.write("models/lora.safetensors", &lora);
        let sdxl = safetensors_with(&[
            "conditioner.embedders.0.transformer.x",
            "model.diffusion_model.input_blocks.0.0.weight",
        ]);
        self.write("models/pickles_only/model.ckpt", b"PK\x03\x04");
        let _ = sdxl;
        fs_err::create_dir_all(self.path("hub_cache_empty")).expect("mkdir");
        // A hub cache holding only model_index.json of SDXL Turbo.
        let snapshot = self
            .path("hub_cache_partial/models--stabilityai--sdxl-turbo/snapshots/0123456789abcdef");
        fs_err::create_dir_all(&snapshot).expect("mkdir");
        fs_err::copy(
            repo_root().join("tests/fixtures/diffusion/sdxl_tiny/model_index.json"),
            snapshot.join("model_index.json"),
        )
        .expect("copy");
        self.write(
            "hub_cache_partial/models--stabilityai--sdxl-turbo/refs/main",
            b"0123456789abcdef",
        );
    }

    fn metadata(&self) {
        let png = |info: Option<&str>| {
            let mut bytes = Vec::new();
            {
                let mut encoder = png::Encoder::new(&mut bytes, 2, 2);
                encoder.set_color(png::ColorType::Rgb);
                if let Some(text) = info {
                    encoder.add_itxt_chunk("imagelab".to_owned(), text.to_owned()).expect("chunk");
                }
                let mut writer = encoder.write_header().expect("header");
                writer.write_image_data(&[0; 12]).expect("data");
            }
            bytes
        };
        self.write("meta/no_metadata.png", &png(None));
        self.write("meta/garbage_imagelab.png", &png(Some("{ not json")));
        self.write("meta/imagelab_array.png", &png(Some("[1, 2, 3]")));
        self.write("meta/text.png", b"hello");
        self.write("meta/empty.png", b"");
        self.write("meta/random.bin", &(0..=255u8).cycle().take(4000).collect::<Vec<u8>>());
        let good = png(None);
        self.write("meta/truncated.png", &good[..20]);
        self.write("meta/jpeg_plain.jpg", b"\xff\xd8\xff\xd9");
        fs_err::create_dir_all(self.path("meta/a_folder.png")).expect("mkdir");
        self.write("meta/resume_file", b"x");
        fs_err::create_dir_all(self.path("meta/no_queue")).expect("mkdir");
    }
}

/// A safetensors file with one small F32 tensor per name.
fn safetensors_with(names: &[&str]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": "F32", "shape": [1], "data_offsets": [i * 4, i * 4 + 4]}),
        );
    }
    let header = serde_json::to_vec(&header).expect("json");
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(vec![0u8; names.len() * 4]);
    bytes
}

/// Builds the table.
#[allow(clippy::too_many_lines, reason = "the table is one list of cases")]
fn cases(f: &Fixtures) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: &str, args: Vec<OsString>, env: Vec<(&str, OsString)>, names: &[&str]| {
        cases.push(Case {
            name: name.to_owned(),
            args,
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            code: 2,
            names: names.iter().map(|n| (*n).to_owned()).collect(),
        });
    };
    let gen_args = |extra: &[&str]| -> Vec<OsString> {
        let mut args = vec![os("generate"), os("--backend"), os("mock"), os("--prompt"), os("x")];
        args.extend(extra.iter().map(|a| os(a)));
        args
    };
    let gen_with = |extra: &[&str], path: OsString| -> Vec<OsString> {
        let mut args = gen_args(extra);
        args.push(path);
        args
    };

    // ── Flags ─────────────────────────────────────────────────────────────────────────────
    for (flag, value, names) in [
        ("--width", "0", &["width"][..]),
        ("--width", "8", &["width"]),
        ("--width", "15", &["width"]),
        ("--width", "17", &["width"]),
        ("--width", "1001", &["width"]),
        ("--width", "4097", &["width"]),
        ("--width", "8192", &["width"]),
        ("--width", "-8", &["--width", "-8"]),
        ("--width", "-1024", &["--width"]),
        ("--width", "abc", &["--width"]),
        ("--width", "64.5", &["--width"]),
        ("--width", "1e3", &["--width"]),
        ("--width", "", &["--width"]),
        ("--width", "99999999999", &["--width"]),
        ("--height", "0", &["height"]),
        ("--height", "12", &["height"]),
        ("--height", "4104", &["height"]),
        ("--height", "-64", &["--height", "-64"]),
        ("--height", "tall", &["--height"]),
        ("--steps", "0", &["steps"]),
        ("--steps", "501", &["steps"]),
        ("--steps", "100000", &["steps"]),
        ("--steps", "4000000000", &["steps"]),
        ("--steps", "4294967296", &["--steps"]),
        ("--steps", "-1", &["--steps", "-1"]),
        ("--steps", "1.5", &["--steps"]),
        ("--steps", "ten", &["--steps"]),
        ("--cfg", "-1", &["cfg"]),
        ("--cfg", "-0.1", &["cfg"]),
        ("--cfg", "50.5", &["cfg"]),
        ("--cfg", "1e30", &["cfg"]),
        ("--cfg", "NaN", &["cfg"]),
        ("--cfg", "inf", &["cfg"]),
        ("--cfg", "-inf", &["cfg"]),
        ("--cfg", "seven", &["--cfg"]),
        ("--cfg", "", &["--cfg"]),
        ("--batch", "0", &["batch"]),
        ("--batch", "65", &["batch"]),
        ("--batch", "1000000", &["batch"]),
        ("--batch", "-2", &["--batch", "-2"]),
        ("--batch", "two", &["--batch"]),
        ("--seed", "-1", &["--seed", "-1"]),
        ("--seed", "18446744073709551616", &["--seed"]),
        ("--seed", "abc", &["--seed"]),
        ("--strength", "1.5", &["strength"]),
        ("--strength", "-0.1", &["strength"]),
        ("--strength", "NaN", &["strength"]),
        ("--strength", "strong", &["--strength"]),
        ("--scheduler", "plms", &["--scheduler", "plms"]),
        ("--scheduler", "nonsense", &["--scheduler"]),
        ("--scheduler", "", &["--scheduler"]),
        ("--schedule-type", "linear", &["--schedule-type"]),
        ("--schedule-type", "", &["--schedule-type"]),
        ("--profile", "Nope", &["profile", "Nope"]),
        ("--profile", "", &["profile"]),
        ("--profile", "Cinematic!", &["profile"]),
        ("--model", "no such model", &["model", "no such model"]),
        ("--model", "", &["model"]),
        ("--model", "/nonexistent/model/folder", &["model", "/nonexistent/model/folder"]),
        ("--device", "tpu", &["--device", "tpu"]),
        ("--device", "cuda:x", &["--device"]),
        ("--device", "cuda:-1", &["--device"]),
        ("--device", "", &["--device"]),
        ("--dtype", "f64", &["--dtype", "f64"]),
        ("--dtype", "int8", &["--dtype"]),
        ("--lora", "style.safetensors:heavy", &["--lora"]),
        ("--lora", "style.safetensors:inf", &["--lora"]),
        ("--cfg", "-NaN", &["cfg"]),
        ("--strength", "-inf", &["strength"]),
    ] {
        add(&format!("flag {flag} {value:?}"), gen_args(&[flag, value]), vec![], names);
    }
    for (value, names) in [("torch", &["--backend", "torch"][..]), ("", &["--backend"])] {
        let mut args = gen_args(&[]);
        args[2] = os(value);
        add(&format!("flag --backend {value:?}"), args, vec![], names);
    }
    add(
        "flag both sweeps",
        gen_args(&["--all-profiles", "--all-models"]),
        vec![],
        &["--all-profiles", "--all-models"],
    );
    add(
        "flag karras with euler_a",
        gen_args(&["--scheduler", "euler_a", "--schedule-type", "karras"]),
        vec![],
        &["schedule_type"],
    );
    add(
        "flag karras with ddim",
        gen_args(&["--scheduler", "ddim", "--schedule-type", "exponential"]),
        vec![],
        &["schedule_type"],
    );
    add(
        "flag seed overflows with the batch",
        gen_args(&["--seed", "18446744073709551615", "--batch", "2"]),
        vec![],
        &["seed"],
    );
    let long = "x".repeat(20_001);
    let mut too_long = gen_args(&[]);
    too_long[4] = os(&long);
    add("flag prompt too long", too_long, vec![], &["prompt: longer than"]);
    add("flag negative too long", gen_args(&["--negative", &long]), vec![], &["negative"]);
    let mut near_limit = gen_args(&["--profile", "Cinematic"]);
    near_limit[4] = os(&"x".repeat(19_990));
    add("flag suffix makes the prompt too long", near_limit, vec![], &["prompt", "Cinematic"]);
    add("flag unknown", gen_args(&["--frobnicate"]), vec![], &["--frobnicate"]);
    add("flag width without value", gen_args(&["--width"]), vec![], &["--width"]);
    add("flag steps without value", gen_args(&["--steps"]), vec![], &["--steps"]);
    add("flag stray value", gen_args(&["stray"]), vec![], &["stray"]);
    add("command unknown", vec![os("frobnicate")], vec![], &["frobnicate"]);
    add(
        "candle lora unknown",
        {
            let mut args = gen_args(&["--lora", "style.safetensors"]);
            args[2] = os("candle");
            args
        },
        vec![],
        &["lora", "style.safetensors"],
    );
    for (name, value) in
        [("out is a file", "meta/resume_file"), ("out below a file", "meta/resume_file/sub")]
    {
        let mut args =
            vec![os("generate"), os("--backend"), os("mock"), os("--prompt"), os("x"), os("--out")];
        args.push(f.arg(value));
        add(&format!("flag {name}"), args, vec![], &["output", "resume_file"]);
    }

    // ── Init images ───────────────────────────────────────────────────────────────────────
    for (file, names) in [
        ("img/missing.png", &["init_image", "missing.png"][..]),
        ("img/text.png", &["init_image", "text.png"]),
        ("img/empty.png", &["init_image", "empty.png"]),
        ("img/signature_only.png", &["init_image", "signature_only.png"]),
        ("img/header_only.png", &["init_image", "header_only.png"]),
        ("img/truncated_pixels.png", &["init_image", "truncated_pixels.png"]),
        ("img/corrupt_pixels.png", &["init_image", "corrupt_pixels.png"]),
        ("img/tiny.png", &["init_image", "4x4", "tiny.png"]),
        ("img/gif.gif", &["init_image", "gif.gif"]),
        ("img/bmp.bmp", &["init_image", "bmp.bmp"]),
        ("img/jpeg_cut.jpg", &["init_image", "jpeg_cut.jpg"]),
        ("img/webp_cut.webp", &["init_image", "webp_cut.webp"]),
        ("img/a_folder.png", &["init_image", "a_folder.png"]),
    ] {
        add(&format!("init image {file}"), gen_with(&["--init-image"], f.arg(file)), vec![], names);
    }
    add(
        "init image with a bad strength",
        {
            let mut args = gen_with(&["--init-image"], f.arg("img/tiny.png"));
            args.extend([os("--strength"), os("2")]);
            args
        },
        vec![],
        &["strength"],
    );

    // ── Profiles files ────────────────────────────────────────────────────────────────────
    for (file, names) in [
        ("empty", &["empty.ron"][..]),
        ("not_ron", &["not_ron.ron", ":1:"]),
        ("not_a_list", &["not_a_list.ron"]),
        ("numbers", &["numbers.ron"]),
        ("unknown_field", &["unknown_field.ron", "colour"]),
        ("no_raw", &["no_raw.ron", "None (raw)"]),
        ("duplicate", &["duplicate.ron", "twice"]),
        ("empty_name", &["empty_name.ron", "empty name"]),
        ("steps_zero", &["steps_zero.ron", "Zero", "default_steps"]),
        ("steps_huge", &["steps_huge.ron", "Huge", "default_steps", "4000000000"]),
        ("steps_100000", &["steps_100000.ron", "Many", "default_steps"]),
        ("steps_negative", &["steps_negative.ron"]),
        ("steps_text", &["steps_text.ron"]),
        ("steps_overflow", &["steps_overflow.ron"]),
        ("cfg_huge", &["cfg_huge.ron", "default_cfg"]),
        ("cfg_negative", &["cfg_negative.ron", "default_cfg"]),
        ("cfg_nan", &["cfg_nan.ron", "default_cfg"]),
        ("cfg_inf", &["cfg_inf.ron", "default_cfg"]),
        ("scheduler", &["scheduler.ron", "plms"]),
        ("long_suffix", &["long_suffix.ron", "prompt_suffix"]),
        ("long_negative", &["long_negative.ron", "negative_suffix"]),
        ("truncated", &["truncated.ron"]),
        ("trailing", &["trailing.ron"]),
        ("not_utf8", &["not_utf8.ron"]),
        ("a_folder", &["a_folder.ron"]),
        ("missing", &["missing.ron"]),
    ] {
        let path = f.arg(&format!("profiles/{file}.ron"));
        add(
            &format!("profiles file {file}"),
            gen_args(&[]),
            vec![("IMAGELAB_PROFILES", path)],
            names,
        );
    }

    // ── Model folders and files (candle backend: checked while planning) ─────────────────
    let candle_model = |model: OsString| -> Vec<OsString> {
        let mut args =
            vec![os("generate"), os("--backend"), os("candle"), os("--device"), os("cpu")];
        args.extend([os("--prompt"), os("x"), os("--width"), os("64"), os("--height"), os("64")]);
        args.extend([os("--steps"), os("1"), os("--model"), model]);
        args
    };
    let offline = |cache: &str| {
        vec![("HF_HUB_OFFLINE", os("1")), ("HF_HUB_CACHE", f.arg(cache)), ("HF_HOME", f.arg(cache))]
    };
    for (model, names) in [
        ("models/empty", &["model", "model_index.json", "empty"][..]),
        ("models/index_not_json", &["model", "model_index.json"]),
        ("models/index_array", &["model", "model_index.json"]),
        ("models/no_unet", &["model", "unet/"]),
        ("models/no_vae_config", &["model", "vae/config.json"]),
        ("models/no_text_encoder_weights", &["model", "text_encoder/"]),
        ("models/no_vocab", &["model", "tokenizer/vocab.json"]),
        ("models/no_scheduler", &["model", "scheduler/scheduler_config.json"]),
        ("models/pickle_unet", &["model", "pickle", "diffusion_pytorch_model.bin"]),
        ("models/pickle_text_encoder", &["model", "pickle", "pytorch_model.bin"]),
        (
            "models/truncated_unet",
            &["model", "truncated_unet", "diffusion_pytorch_model.safetensors"],
        ),
        ("models/truncated_vae_header", &["model", "truncated_vae_header", "vae"]),
        ("models/unet_seven_bytes", &["model", "unet_seven_bytes"]),
        ("models/unet_header_huge", &["model", "unet_header_huge"]),
        ("models/unet_header_garbage", &["model", "unet_header_garbage"]),
        ("models/unet_bad_dtype", &["model", "unet_bad_dtype", "Q99"]),
        ("models/vae_in_unet", &["model", "conv_in.weight", "vae_in_unet"]),
        ("models/hidden_size_mismatch", &["model", "token_embedding", "text_encoder_2"]),
        ("models/in_channels_mismatch", &["model", "conv_in.weight", "in_channels_mismatch"]),
        (
            "models/vae_latents_mismatch",
            &["model", "decoder.conv_in.weight", "vae_latents_mismatch"],
        ),
        ("models/unet_config_not_json", &["model", "unet/config.json"]),
        ("models/scheduler_not_json", &["model", "scheduler_config.json"]),
        ("models/empty.safetensors", &["model", "empty.safetensors"]),
        ("models/text.safetensors", &["model", "text.safetensors"]),
        ("models/model.ckpt", &["model", "model.ckpt"]),
        ("models/model.bin", &["model", "model.bin"]),
        ("models/other.safetensors", &["model", "other.safetensors"]),
        ("models/lora.safetensors", &["model", "lora.safetensors"]),
        ("models/pickles_only", &["model", "pickle", "model.ckpt"]),
    ] {
        add(
            &format!("model {model}"),
            candle_model(f.arg(model)),
            offline("hub_cache_empty"),
            names,
        );
    }
    add(
        "model hub id not cached offline",
        candle_model(os("SDXL Turbo")),
        offline("hub_cache_empty"),
        &["model", "SDXL Turbo", "prefetch"],
    );
    add(
        "model unlisted hub id offline",
        candle_model(os("someone/some-model")),
        offline("hub_cache_empty"),
        &["model", "someone/some-model"],
    );
    add(
        "model partly cached hub id offline",
        candle_model(os("SDXL Turbo")),
        offline("hub_cache_partial"),
        &["model", "stabilityai/sdxl-turbo", "prefetch"],
    );
    add(
        "model HF_HUB_OFFLINE=maybe",
        candle_model(os("SDXL Turbo")),
        vec![("HF_HUB_OFFLINE", os("maybe"))],
        &["HF_HUB_OFFLINE", "boolean"],
    );
    add(
        "model lora from the catalog, uncached offline",
        candle_model(os("Pixel Art XL")),
        offline("hub_cache_empty"),
        &["model", "Pixel Art XL", "prefetch"],
    );

    // ── Environment-variable mode ─────────────────────────────────────────────────────────
    let env_case = |pairs: Vec<(&'static str, OsString)>| -> Vec<(&'static str, OsString)> {
        let mut env = vec![("IMAGELAB_BACKEND", os("mock"))];
        if !pairs.iter().any(|(k, _)| *k == "PROMPT" || *k == "HEADLESS") {
            env.push(("PROMPT", os("x")));
        }
        env.extend(pairs);
        env
    };
    for (var, value, names) in [
        ("WIDTH", "wide", &["WIDTH"][..]),
        ("WIDTH", "-8", &["WIDTH"]),
        ("WIDTH", "0", &["width"]),
        ("WIDTH", "1001", &["width"]),
        ("HEIGHT", "4097", &["height"]),
        ("HEIGHT", "1.5", &["HEIGHT"]),
        ("STEPS", "0", &["steps"]),
        ("STEPS", "abc", &["STEPS"]),
        ("STEPS", "100000", &["steps"]),
        ("STEPS", "-3", &["STEPS"]),
        ("GUIDANCE", "-1", &["cfg"]),
        ("GUIDANCE", "NaN", &["cfg"]),
        ("GUIDANCE", "1e30", &["cfg"]),
        ("GUIDANCE", "lots", &["GUIDANCE"]),
        ("BATCH_SIZE", "0", &["batch"]),
        ("BATCH_SIZE", "abc", &["BATCH_SIZE"]),
        ("BATCH_SIZE", "65", &["batch"]),
        ("SEED", "-5", &["SEED"]),
        ("SEED", "x", &["SEED"]),
        ("SCHEDULER", "plms", &["SCHEDULER"]),
        ("SCHEDULE_TYPE", "linear", &["SCHEDULE_TYPE"]),
        ("MODE", "video", &["MODE"]),
        ("MODE", "img2img", &["INIT_IMAGE_PATH"]),
        ("IMG2IMG_STRENGTH", "2", &["strength"]),
        ("IMG2IMG_STRENGTH", "abc", &["IMG2IMG_STRENGTH"]),
        ("RUN_ALL_PROFILES", "maybe", &["RUN_ALL_PROFILES"]),
        ("RUN_ALL_MODELS", "2", &["RUN_ALL_MODELS"]),
        ("IMAGELAB_JSON", "perhaps", &["IMAGELAB_JSON"]),
        ("STYLE_PROFILE", "Nope", &["profile", "Nope"]),
        ("MODEL_KEY", "nope", &["model", "nope"]),
        ("IMAGELAB_DEVICE", "tpu", &["IMAGELAB_DEVICE"]),
        ("IMAGELAB_DTYPE", "f64", &["IMAGELAB_DTYPE"]),
        ("IMAGELAB_STOP_GRACE_S", "-1", &["IMAGELAB_STOP_GRACE_S"]),
        ("IMAGELAB_STOP_GRACE_S", "soon", &["IMAGELAB_STOP_GRACE_S"]),
        ("IMAGELAB_MOCK_STEP_MS", "fast", &["IMAGELAB_MOCK_STEP_MS"]),
    ] {
        add(&format!("env {var}={value}"), vec![], env_case(vec![(var, os(value))]), names);
    }
    add(
        "env IMAGELAB_BACKEND=torch",
        vec![],
        vec![("PROMPT", os("x")), ("IMAGELAB_BACKEND", os("torch"))],
        &["IMAGELAB_BACKEND"],
    );
    add(
        "env IMAGELAB_CPU_ISA=avx10 with the candle backend",
        vec![],
        vec![
            ("PROMPT", os("x")),
            ("IMAGELAB_BACKEND", os("candle")),
            ("IMAGELAB_CPU_ISA", os("avx10")),
        ],
        &["IMAGELAB_CPU_ISA", "avx512, avx2, portable"],
    );
    add(
        "env IMAGELAB_CPU_CONV=fft with the candle backend",
        vec![],
        vec![
            ("PROMPT", os("x")),
            ("IMAGELAB_BACKEND", os("candle")),
            ("IMAGELAB_CPU_CONV", os("fft")),
        ],
        &["IMAGELAB_CPU_CONV", "auto, im2col, winograd"],
    );
    add(
        "env both sweeps",
        vec![],
        env_case(vec![("RUN_ALL_PROFILES", os("1")), ("RUN_ALL_MODELS", os("yes"))]),
        &["RUN_ALL_PROFILES", "RUN_ALL_MODELS"],
    );
    add(
        "env HEADLESS=maybe",
        vec![],
        vec![("HEADLESS", os("maybe")), ("IMAGELAB_BACKEND", os("mock"))],
        &["HEADLESS"],
    );
    add(
        "env HEADLESS=maybe with a prompt",
        vec![],
        env_case(vec![("HEADLESS", os("maybe")), ("PROMPT", os("x"))]),
        &["HEADLESS"],
    );
    add(
        "env INIT_IMAGE_PATH missing",
        vec![],
        env_case(vec![("INIT_IMAGE_PATH", f.arg("img/missing.png"))]),
        &["init_image", "missing.png"],
    );
    add(
        "env INIT_IMAGE_PATH bad pixels",
        vec![],
        env_case(vec![("INIT_IMAGE_PATH", f.arg("img/truncated_pixels.png"))]),
        &["init_image", "truncated_pixels.png"],
    );
    add(
        "env IMAGELAB_PROFILES broken",
        vec![],
        env_case(vec![("IMAGELAB_PROFILES", f.arg("profiles/steps_huge.ron"))]),
        &["steps_huge.ron", "default_steps"],
    );
    add(
        "env IMAGELAB_OUTPUT_DIR is a file",
        vec![],
        vec![
            ("PROMPT", os("x")),
            ("IMAGELAB_BACKEND", os("mock")),
            ("IMAGELAB_OUTPUT_DIR", f.arg("meta/resume_file")),
        ],
        &["output", "resume_file"],
    );
    for var in [
        "PROMPT",
        "NEGATIVE_PROMPT",
        "RUN_ALL_PROFILES",
        "IMAGELAB_OUTPUT_DIR",
        "MODEL_KEY",
        "STYLE_PROFILE",
        "WIDTH",
        "INSTANCE_ID",
        "IMAGELAB_PROFILES",
        "HF_HOME",
        "HEADLESS",
        "SCHEDULER",
    ] {
        let mut env = env_case(vec![]);
        env.retain(|(k, _)| *k != var);
        env.push((var, bad_utf8("a")));
        add(&format!("env {var} not UTF-8"), vec![], env, &[var, "UTF-8"]);
    }
    add(
        "env not UTF-8 with a command too",
        gen_args(&[]),
        vec![("IMAGELAB_DEVICE", bad_utf8("cpu"))],
        &["IMAGELAB_DEVICE", "UTF-8"],
    );

    // ── Metadata files (`info`, `generate --from`) ────────────────────────────────────────
    for file in [
        "meta/missing.png",
        "meta/no_metadata.png",
        "meta/garbage_imagelab.png",
        "meta/imagelab_array.png",
        "meta/text.png",
        "meta/empty.png",
        "meta/random.bin",
        "meta/truncated.png",
        "meta/jpeg_plain.jpg",
        "meta/a_folder.png",
    ] {
        let name = Path::new(file).file_name().and_then(|n| n.to_str()).expect("name");
        add(&format!("info {file}"), vec![os("info"), f.arg(file)], vec![], &[name]);
        add(&format!("from {file}"), gen_with(&["--from"], f.arg(file)), vec![], &["--from", name]);
    }
    add(
        "info json of a missing file",
        vec![os("info"), os("--json"), f.arg("meta/missing.png")],
        vec![],
        &["missing.png"],
    );

    // ── resume ────────────────────────────────────────────────────────────────────────────
    add(
        "resume a missing folder",
        vec![os("resume"), f.arg("meta/missing_dir")],
        vec![],
        &["RUN_DIR", "missing_dir"],
    );
    add(
        "resume a file",
        vec![os("resume"), f.arg("meta/resume_file")],
        vec![],
        &["RUN_DIR", "resume_file"],
    );
    add(
        "resume a folder with no queue",
        vec![os("resume"), f.arg("meta/no_queue")],
        vec![],
        &["RUN_DIR", "no_queue"],
    );
    add(
        "resume with a bad backend",
        vec![os("resume"), os("--backend"), os("torch"), f.arg("meta/no_queue")],
        vec![],
        &["--backend"],
    );
    add(
        "resume with a bad device",
        vec![os("resume"), os("--device"), os("tpu"), f.arg("meta/no_queue")],
        vec![],
        &["--device"],
    );
    cases
}

/// What one run printed and whether it kept to the rules.
struct Outcome {
    name: String,
    message: String,
    problems: Vec<String>,
}

fn run_case(case: &Case, out: &Path, fixtures: &Path) -> Outcome {
    let mut command = imagelab();
    let is_generate = case.args.first().is_some_and(|a| a == "generate");
    command.args(&case.args);
    if is_generate && !case.args.iter().any(|a| a == "--out") {
        command.arg("--out").arg(out);
    }
    if case.args.is_empty() && !case.env.iter().any(|(k, _)| k == "IMAGELAB_OUTPUT_DIR") {
        command.env("IMAGELAB_OUTPUT_DIR", out);
    }
    for (key, value) in &case.env {
        command.env(key, value);
    }
    let output = command.output().expect("runs");
    let message = stderr(&output);
    let mut problems = Vec::new();
    if output.status.code() != Some(case.code) {
        problems.push(format!("exit {:?}, expected {}", output.status.code(), case.code));
    }
    if message.contains("panicked") || output.status.code() == Some(101) {
        problems.push("panicked".to_owned());
    }
    for name in &case.names {
        if !message.contains(name.as_str()) {
            problems.push(format!("the message does not name {name:?}"));
        }
    }
    if out.exists() {
        problems.push(format!("wrote {}", out.display()));
    }
    let shown = message.replace(&fixtures.display().to_string(), "<fixtures>");
    let shown = shown.replace(&out.display().to_string(), "<out>");
    Outcome { name: case.name.clone(), message: shown, problems }
}

#[test]
fn bad_input_table() {
    let fixtures = Fixtures::new();
    let cases = cases(&fixtures);
    assert!(cases.len() >= 200, "{} cases", cases.len());
    let mut seen = std::collections::HashSet::new();
    for case in &cases {
        assert!(seen.insert(case.name.clone()), "two cases named {}", case.name);
    }
    let before: BTreeMap<PathBuf, u64> = files_below(fixtures.dir.path())
        .into_iter()
        .map(|p| {
            let len = fs_err::metadata(&p).map(|m| m.len()).unwrap_or_default();
            (p, len)
        })
        .collect();
    let outs = tempfile::tempdir().expect("tempdir");
    // Two runs at a time: the table is several hundred processes.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for worker in 0..2 {
            let (next, results, cases, outs, fixtures) =
                (&next, &results, &cases, &outs, &fixtures);
            std::thread::Builder::new()
                .name(format!("bad-input-{worker}"))
                .spawn_scoped(scope, move || {
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(case) = cases.get(index) else { break };
                        let out = outs.path().join(format!("out-{index}"));
                        let outcome = run_case(case, &out, fixtures.dir.path());
                        results.lock().expect("lock").push((index, outcome));
                    }
                })
                .expect("thread");
        }
    });
    let mut results = results.into_inner().expect("lock");
    results.sort_by_key(|(index, _)| *index);
    let failures: Vec<String> = results
        .iter()
        .filter(|(_, outcome)| !outcome.problems.is_empty())
        .map(|(_, o)| format!("{}: {}\n  {}", o.name, o.problems.join("; "), o.message.trim()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let after: BTreeMap<PathBuf, u64> = files_below(fixtures.dir.path())
        .into_iter()
        .map(|p| {
            let len = fs_err::metadata(&p).map(|m| m.len()).unwrap_or_default();
            (p, len)
        })
        .collect();
    assert_eq!(before, after, "a case wrote into the fixtures");
    let mut snapshot = String::new();
    for (_, outcome) in &results {
        let _ = writeln!(snapshot, "$ {}\n{}", outcome.name, outcome.message.trim_end());
    }
    insta::assert_snapshot!("bad_input_table", snapshot);
}
