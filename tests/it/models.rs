//! Models as users have them: a fake Hugging Face cache written exactly the way the hub
//! clients write it (hash-named blobs, relative snapshot symlinks, `refs/main`), resolved
//! offline by hub id and by catalog name; missing, unsafe and broken weights refused clearly.

use std::collections::HashMap;
use std::path::PathBuf;

use imagelab::models::checkpoint::CheckpointArchitecture;
use imagelab::models::hub::{
    HubConfig, ResolvedModel, ResolvedPipeline, WeightVariant, resolve_cached, resolve_model,
    resolve_pipeline,
};
use imagelab::models::layout::{CheckpointFamily, Layout, detect_layout};
use imagelab::models::manage::{
    CacheState, FileStatus, format_listing, format_verify, git_blob_sha1, list_models, prefetch,
    sha256_hex, verify,
};
use imagelab::models::{Catalog, ModelError};

const SDXL_ID: &str = "stabilityai/stable-diffusion-xl-base-1.0";
const REVISION: &str = "462165984030d82259a11f4367a4eed129e94a7b";

/// A tiny but valid safetensors file with these tensor names (F32, 2 elements each).
fn tiny_safetensors(names: &[&str]) -> Vec<u8> {
    let data = [0_u8; 8];
    let tensors: HashMap<String, safetensors::tensor::TensorView<'_>> = names
        .iter()
        .map(|name| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data)
                    .expect("view");
            ((*name).to_owned(), view)
        })
        .collect();
    safetensors::serialize(&tensors, None).expect("serialize")
}

/// The files of a diffusers SDXL repo (`model_index.json` as diffusers 0.42.1 writes it).
fn sdxl_repo_files() -> Vec<(String, Vec<u8>)> {
    let model_index = fs_err::read(imagelab_fixture("sdxl_model_index.json")).expect("fixture");
    let mut files = vec![("model_index.json".to_owned(), model_index)];
    let json = |text: &str| text.as_bytes().to_vec();
    files.push((
        "scheduler/scheduler_config.json".into(),
        json(r#"{"_class_name":"EulerDiscreteScheduler"}"#),
    ));
    for tokenizer in ["tokenizer", "tokenizer_2"] {
        files.push((format!("{tokenizer}/vocab.json"), json(r#"{"a</w>":0}"#)));
        files.push((format!("{tokenizer}/merges.txt"), json("#version: 0.2\n")));
        files.push((format!("{tokenizer}/tokenizer_config.json"), json("{}")));
    }
    for (component, stem) in [
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
        ("text_encoder_2", "model"),
    ] {
        files.push((format!("{component}/config.json"), json("{}")));
        files.push((
            format!("{component}/{stem}.safetensors"),
            tiny_safetensors(&[&format!("{component}.conv_in.weight"), "conv_in.bias"]),
        ));
    }
    // Like the real repo: the UNet also ships an fp16 variant (the VAE here does not), and a
    // pickle copy that must never be chosen.
    files.push((
        "unet/diffusion_pytorch_model.fp16.safetensors".into(),
        tiny_safetensors(&["conv_in.weight"]),
    ));
    files.push(("unet/diffusion_pytorch_model.bin".into(), b"pickle".to_vec()));
    files
}

fn imagelab_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name)
}

/// A hub cache in a temp dir, written as hf-hub and `huggingface_hub` write it.
struct FakeHub {
    _dir: tempfile::TempDir,
    config: HubConfig,
}

impl FakeHub {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let config = HubConfig::offline_at(dir.path().join("hub"));
        Self { _dir: dir, config }
    }

    fn repo_dir(&self, repo_id: &str) -> PathBuf {
        self.config.cache_dir.join(format!("models--{}", repo_id.replace('/', "--")))
    }

    /// Adds a snapshot: LFS files (`.safetensors`, `.bin`) are blobs named by sha256, small
    /// files by their git blob sha1; snapshot entries are relative symlinks to the blobs.
    fn add_snapshot(
        &self,
        repo_id: &str,
        revision: &str,
        files: &[(String, Vec<u8>)],
        set_main: bool,
    ) -> PathBuf {
        let repo = self.repo_dir(repo_id);
        let snapshot = repo.join("snapshots").join(revision);
        fs_err::create_dir_all(repo.join("blobs")).expect("blobs");
        for (repo_file, data) in files {
            let lfs = repo_file.ends_with(".safetensors") || repo_file.ends_with(".bin");
            let blob_name = if lfs { sha256_hex(data) } else { git_blob_sha1(data) };
            fs_err::write(repo.join("blobs").join(&blob_name), data).expect("blob");
            let link = snapshot.join(repo_file);
            fs_err::create_dir_all(link.parent().expect("parent")).expect("snapshot dirs");
            let depth = repo_file.matches('/').count() + 2;
            let target = "../".repeat(depth) + "blobs/" + &blob_name;
            std::os::unix::fs::symlink(target, &link).expect("symlink");
        }
        if set_main {
            fs_err::create_dir_all(repo.join("refs")).expect("refs");
            fs_err::write(repo.join("refs/main"), revision).expect("ref");
        }
        snapshot
    }

    fn blob_of(&self, repo_id: &str, data: &[u8]) -> PathBuf {
        self.repo_dir(repo_id).join("blobs").join(sha256_hex(data))
    }
}

fn resolve_key(
    hub: &FakeHub,
    key: &str,
    prefer: WeightVariant,
) -> Result<ResolvedPipeline, ModelError> {
    let model = Catalog::builtin().resolve(key).expect("catalog key");
    resolve_pipeline(&model, &hub.config, prefer, &mut |_| {})
}

#[test]
fn offline_cache_resolves_by_hub_id_and_by_catalog_name() {
    let hub = FakeHub::new();
    let snapshot = hub.add_snapshot(SDXL_ID, REVISION, &sdxl_repo_files(), true);
    let by_name = resolve_key(&hub, "SDXL Base 1.0", WeightVariant::Fp16).expect("by name");
    let by_id = resolve_key(&hub, SDXL_ID, WeightVariant::Fp16).expect("by id");
    assert_eq!(by_name, by_id);
    assert_eq!(by_name.root, snapshot);
    assert_eq!(by_name.revision.as_deref(), Some(REVISION));
    let names: Vec<&str> = by_name.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "vae"]
    );
    let unet = by_name.component("unet").expect("unet");
    assert_eq!(unet.weights, [snapshot.join("unet/diffusion_pytorch_model.fp16.safetensors")]);
    assert_eq!(unet.variant.as_deref(), Some("fp16"));
    assert_eq!(unet.file("config.json"), Some(snapshot.join("unet/config.json").as_path()));
    let vae = by_name.component("vae").expect("vae");
    assert_eq!(
        vae.weights,
        [snapshot.join("vae/diffusion_pytorch_model.safetensors")],
        "fp16 absent: full precision"
    );
    assert!(
        by_name
            .components
            .iter()
            .flat_map(|c| &c.files)
            .all(|f| f.is_file() && !f.to_string_lossy().ends_with(".bin"))
    );

    let full = resolve_key(&hub, "SDXL Base 1.0", WeightVariant::Full).expect("full precision");
    assert_eq!(
        full.component("unet").expect("unet").weights,
        [snapshot.join("unet/diffusion_pytorch_model.safetensors")]
    );
}

#[test]
fn offline_missing_weight_names_the_file_and_the_fetch_commands() {
    let hub = FakeHub::new();
    let files: Vec<_> = sdxl_repo_files()
        .into_iter()
        .filter(|(f, _)| f != "vae/diffusion_pytorch_model.safetensors")
        .collect();
    hub.add_snapshot(SDXL_ID, REVISION, &files, true);
    let err = resolve_key(&hub, "SDXL Base 1.0", WeightVariant::Fp16).expect_err("missing vae");
    assert!(matches!(err, ModelError::MissingOffline { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("vae/diffusion_pytorch_model.safetensors"), "{message}");
    assert!(message.contains("imagelab models prefetch \"SDXL Base 1.0\""), "{message}");
    assert!(
        message.contains(&format!(
            "huggingface-cli download {SDXL_ID} vae/diffusion_pytorch_model.safetensors"
        )),
        "{message}"
    );
    assert!(message.contains("HF_HUB_OFFLINE"), "{message}");

    let absent = resolve_key(&hub, "SDXL Turbo", WeightVariant::Fp16).expect_err("not cached");
    assert!(absent.to_string().contains("model_index.json of stabilityai/sdxl-turbo"), "{absent}");
}

#[test]
fn without_refs_main_the_newest_snapshot_is_used() {
    let hub = FakeHub::new();
    let snapshot = hub.add_snapshot(SDXL_ID, REVISION, &sdxl_repo_files(), false);
    let resolved =
        resolve_cached(SDXL_ID, SDXL_ID, &hub.config, WeightVariant::Full).expect("from snapshots");
    assert_eq!(resolved.root, snapshot);
}

#[test]
fn pickle_only_repo_and_files_are_refused_with_the_reason() {
    let hub = FakeHub::new();
    let files: Vec<_> = sdxl_repo_files()
        .into_iter()
        .filter(|(f, _)| !(f.starts_with("unet/") && f.ends_with(".safetensors")))
        .collect();
    hub.add_snapshot(SDXL_ID, REVISION, &files, true);
    let message =
        resolve_key(&hub, SDXL_ID, WeightVariant::Fp16).expect_err("pickle only").to_string();
    assert!(message.contains("unet/diffusion_pytorch_model.bin"), "{message}");
    assert!(message.contains("can run arbitrary code"), "{message}");

    let folder = tempfile::tempdir().expect("tmp");
    fs_err::write(folder.path().join("model.ckpt"), b"pickle").expect("write");
    let err = detect_layout(folder.path()).expect_err("ckpt folder");
    assert!(matches!(err, ModelError::UnsafeWeights { .. }), "{err:?}");
    let err = detect_layout(&folder.path().join("model.ckpt")).expect_err("ckpt file");
    assert!(err.to_string().contains("model.ckpt"), "{err}");
}

#[test]
fn truncated_weights_are_a_clear_error_and_verify_reports_them() {
    let hub = FakeHub::new();
    let files = sdxl_repo_files();
    hub.add_snapshot(SDXL_ID, REVISION, &files, true);
    let (_, unet_fp16) = files
        .iter()
        .find(|(f, _)| f == "unet/diffusion_pytorch_model.fp16.safetensors")
        .expect("file");
    let blob = hub.blob_of(SDXL_ID, unet_fp16);
    fs_err::write(&blob, &unet_fp16[..unet_fp16.len() - 3]).expect("truncate");

    let err = resolve_key(&hub, SDXL_ID, WeightVariant::Fp16).expect_err("truncated");
    assert!(matches!(err, ModelError::InvalidSafetensors { .. }), "{err:?}");
    assert!(err.to_string().contains("diffusion_pytorch_model.fp16.safetensors"), "{err}");

    let reports = verify(&Catalog::builtin(), &hub.config, WeightVariant::Fp16, &mut |_, _| {});
    assert_eq!(reports.len(), 1, "only cached catalog repos are verified");
    let report = &reports[0];
    assert!(!report.is_healthy());
    let status =
        |name: &str| &report.files.iter().find(|f| f.repo_file == name).expect(name).status;
    assert!(matches!(
        status("unet/diffusion_pytorch_model.fp16.safetensors"),
        FileStatus::Corrupt { .. }
    ));
    assert_eq!(
        *status("unet/diffusion_pytorch_model.safetensors"),
        FileStatus::Ok,
        "sha256-named LFS blob"
    );
    assert_eq!(*status("model_index.json"), FileStatus::Ok, "git-sha1-named blob");
    assert!(
        format_verify(&reports).contains("corrupt: unet/diffusion_pytorch_model.fp16.safetensors")
    );

    fs_err::remove_file(&blob).expect("remove blob");
    let reports = verify(&Catalog::builtin(), &hub.config, WeightVariant::Fp16, &mut |_, _| {});
    let missing = reports[0]
        .files
        .iter()
        .find(|f| f.repo_file == "unet/diffusion_pytorch_model.fp16.safetensors")
        .expect("entry");
    assert_eq!(missing.status, FileStatus::Missing, "dangling snapshot link");
}

/// A real tiny SDXL single file (written by diffusers' conversion script).
fn tiny_checkpoint() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/diffusion/single_file/sdxl_tiny.f16.safetensors");
    fs_err::read(path).expect("fixture")
}

fn resolve_any(hub: &HubConfig, key: &str) -> Result<ResolvedModel, ModelError> {
    let model = Catalog::builtin().resolve(key).expect("resolves");
    resolve_model(&model, hub, WeightVariant::Fp16, &mut |_| {})
}

/// Issue 11: a repo or folder holding one checkpoint resolves to that file, recognised from its
/// header (`EpicRealism XL` and `Anime Illust Diffusion XL` are published this way); a LoRA or a
/// local file is detected from its tensor names, never its file name.
#[test]
fn single_file_checkpoints_resolve_to_their_file_and_loras_are_detected() {
    let hub = FakeHub::new();
    let checkpoint = tiny_checkpoint();
    let epic = "AiAF/epicrealismXL-vx1Finalkiss_Checkpoint_SDXL";
    hub.add_snapshot(
        epic,
        REVISION,
        &[
            ("epicrealism.safetensors".to_owned(), checkpoint.clone()),
            ("README.md".to_owned(), b"# EpicRealism".to_vec()),
        ],
        true,
    );
    let resolved = resolve_any(&hub.config, "EpicRealism XL").expect("single file");
    let ResolvedModel::SingleFile { file, revision, info } = &resolved else {
        panic!("a single file: {resolved:?}")
    };
    assert!(file.ends_with("epicrealism.safetensors"), "{file:?}");
    assert_eq!(revision.as_deref(), Some(REVISION));
    assert_eq!(info.architecture, CheckpointArchitecture::SdxlBase);
    // The pipeline-only resolver says what it found.
    let err = resolve_key(&hub, "EpicRealism XL", WeightVariant::Fp16).expect_err("no folder");
    assert!(err.to_string().contains("single-file SDXL checkpoint"), "{err}");

    let lora = Catalog::builtin().resolve("Pixel Art XL").expect("catalog");
    let err =
        resolve_pipeline(&lora, &hub.config, WeightVariant::Fp16, &mut |_| {}).expect_err("lora");
    assert!(
        err.to_string().contains("LoRA") && err.to_string().ends_with("pixel-art-xl.safetensors"),
        "{err}"
    );

    let folder = tempfile::tempdir().expect("tmp");
    let file = folder.path().join("model.safetensors");
    fs_err::write(&file, &checkpoint).expect("write");
    assert_eq!(
        detect_layout(&file).expect("layout"),
        Layout::SingleFile(file.clone(), CheckpointFamily::Sdxl)
    );
    let lora_file = folder.path().join("style.safetensors");
    fs_err::write(
        &lora_file,
        tiny_safetensors(&["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"]),
    )
    .expect("write");
    assert_eq!(detect_layout(&lora_file).expect("layout"), Layout::Lora(lora_file.clone()));
    let local = resolve_any(&hub.config, &file.display().to_string()).expect("local file");
    assert_eq!(local.path(), file);
    // A local folder holding one checkpoint resolves to it too.
    let alone = tempfile::tempdir().expect("tmp");
    fs_err::write(alone.path().join("only.safetensors"), &checkpoint).expect("write");
    let found = resolve_any(&hub.config, &alone.path().display().to_string()).expect("folder");
    assert!(found.path().ends_with("only.safetensors"));
    // Something that is not SD is refused, naming what it looks like.
    let flux = folder.path().join("flux.safetensors");
    fs_err::write(
        &flux,
        tiny_safetensors(&[
            "double_blocks.0.img_attn.qkv.weight",
            "single_blocks.0.linear1.weight",
        ]),
    )
    .expect("write");
    let err = resolve_any(&hub.config, &flux.display().to_string()).expect_err("flux");
    assert!(err.to_string().contains("Flux.1"), "{err}");
}

/// Online, a single-file repo costs one download: its checkpoint (not the README, not a pickle);
/// a repo with several checkpoints means its newest, and `org/name/file.safetensors` names another.
#[test]
fn online_single_file_repos_download_only_their_checkpoint() {
    let checkpoint = tiny_checkpoint();
    let repo = "Eugeoter/anime_illust_diffusion_xl";
    let files = vec![
        ("aidxl.safetensors".to_owned(), checkpoint.clone()),
        ("README.md".to_owned(), b"# AIDXL".to_vec()),
        ("aidxl.ckpt".to_owned(), b"pickle".to_vec()),
    ];
    let server = start_fake_hub(repo, files);
    let hub = FakeHub::new();
    let online = HubConfig {
        offline: false,
        endpoint: server.endpoint.clone(),
        retries: 0,
        ..hub.config.clone()
    };
    let resolved = resolve_any(&online, "Anime Illust Diffusion XL").expect("online");
    assert!(resolved.path().ends_with("aidxl.safetensors"));
    assert_eq!(fs_err::read(resolved.path()).expect("file"), checkpoint);
    let requests = server.requests.lock().expect("log").clone();
    let downloads: Vec<&String> = requests.iter().filter(|r| r.contains("/resolve/")).collect();
    assert!(downloads.iter().all(|r| r.contains("aidxl.safetensors")), "{downloads:#?}");
    // Offline afterwards, from the cache; listed as cached; prefetch has nothing left to fetch.
    assert_eq!(resolve_any(&hub.config, "Anime Illust Diffusion XL").expect("offline"), resolved);
    let listings = list_models(&Catalog::builtin(), &hub.config, WeightVariant::Fp16);
    let aidxl = listings.iter().find(|l| l.hub_id == repo).expect("listed");
    assert_eq!(aidxl.state, CacheState::Cached, "{aidxl:?}");
    let outcomes = prefetch(
        &Catalog::builtin(),
        &["Anime Illust Diffusion XL".to_owned()],
        &online,
        WeightVariant::Fp16,
        &mut |_, _| {},
    )
    .expect("prefetch");
    assert_eq!((outcomes[0].files_downloaded, outcomes[0].error.as_deref()), (0, None));

    let several = "someone/two-checkpoints";
    let server = start_fake_hub(
        several,
        vec![
            ("model_v9.safetensors".to_owned(), checkpoint.clone()),
            ("model_v10.safetensors".to_owned(), checkpoint.clone()),
        ],
    );
    let online = HubConfig {
        offline: false,
        endpoint: server.endpoint.clone(),
        retries: 0,
        ..hub.config.clone()
    };
    // Versions side by side: the newest by version order (v10 after v9, not before it as text
    // would put it), and only that one downloaded.
    let newest = resolve_any(&online, several).expect("the newest");
    assert!(newest.path().ends_with("model_v10.safetensors"), "{:?}", newest.path());
    let downloads = |server: &FakeHubServer| -> Vec<String> {
        let requests = server.requests.lock().expect("log").clone();
        requests.into_iter().filter(|r| r.contains("/resolve/")).collect()
    };
    assert!(downloads(&server).iter().all(|r| r.contains("model_v10.safetensors")));
    // Offline, the cache answers the same way.
    assert_eq!(resolve_any(&hub.config, several).expect("offline newest"), newest);
    // Another one is named as org/name/file.
    let named = resolve_any(&online, &format!("{several}/model_v9.safetensors")).expect("named");
    assert!(named.path().ends_with("model_v9.safetensors"));
    assert!(downloads(&server).iter().any(|r| r.contains("model_v9.safetensors")));
}

#[test]
fn local_diffusers_folder_resolves_and_names_missing_files() {
    let folder = tempfile::tempdir().expect("tmp");
    for (repo_file, data) in sdxl_repo_files() {
        let path = folder.path().join(&repo_file);
        fs_err::create_dir_all(path.parent().expect("parent")).expect("dirs");
        fs_err::write(path, data).expect("write");
    }
    let hub = FakeHub::new();
    let model = Catalog::builtin().resolve(&folder.path().display().to_string()).expect("path");
    let resolved =
        resolve_pipeline(&model, &hub.config, WeightVariant::Full, &mut |_| {}).expect("folder");
    assert_eq!(resolved.root, folder.path());
    assert_eq!(resolved.revision, None);
    fs_err::remove_file(folder.path().join("tokenizer_2/merges.txt")).expect("remove");
    let err = resolve_pipeline(&model, &hub.config, WeightVariant::Full, &mut |_| {})
        .expect_err("missing");
    assert!(
        err.to_string().starts_with("tokenizer_2/merges.txt is missing from the model folder"),
        "{err}"
    );
}

#[test]
fn list_reports_cached_partial_and_absent_models_with_sizes() {
    let hub = FakeHub::new();
    let files = sdxl_repo_files();
    hub.add_snapshot(SDXL_ID, REVISION, &files, true);
    let partial: Vec<_> = files.iter().filter(|(f, _)| !f.starts_with("vae/")).cloned().collect();
    hub.add_snapshot("stabilityai/sdxl-turbo", REVISION, &partial, true);
    fs_err::write(hub.repo_dir("stabilityai/sdxl-turbo").join("blobs/abc.part"), [0_u8; 10])
        .expect("part");

    let listings = list_models(&Catalog::builtin(), &hub.config, WeightVariant::Fp16);
    let by_name = |name: &str| listings.iter().find(|l| l.display_name == name).expect(name);
    let base = by_name("SDXL Base 1.0");
    assert_eq!(base.state, CacheState::Cached);
    let distinct_blobs: std::collections::BTreeSet<&Vec<u8>> =
        files.iter().map(|(_, d)| d).collect();
    let expected_bytes: u64 = distinct_blobs.iter().map(|d| d.len() as u64).sum();
    assert_eq!(base.size_on_disk_bytes, expected_bytes, "identical files share one blob");
    let turbo = by_name("SDXL Turbo");
    assert_eq!(turbo.state, CacheState::Partial);
    assert_eq!(turbo.missing, ["vae/config.json", "vae/diffusion_pytorch_model.safetensors"]);
    assert_eq!(turbo.incomplete_downloads, 1);
    assert_eq!(by_name("RealVis XL V5.0").state, CacheState::NotDownloaded);
    let text = format_listing(&listings);
    assert!(text.contains("not downloaded") && text.contains("missing: vae/config.json"), "{text}");
    insta::assert_snapshot!("models_list", text);
    let json = serde_json::to_value(&listings).expect("json");
    assert_eq!(json[0]["state"], "cached");
}

#[test]
fn prefetch_offline_reports_each_model_and_refuses_unknown_names() {
    let hub = FakeHub::new();
    let names = vec!["SDXL Turbo".to_owned(), "Pixel Art XL".to_owned()];
    let outcomes =
        prefetch(&Catalog::builtin(), &names, &hub.config, WeightVariant::Fp16, &mut |_, _| {})
            .expect("known names");
    // Pixel Art XL runs on SDXL Base 1.0: its base is fetched too.
    assert_eq!(outcomes.len(), 3, "keeps going after a failure");
    assert_eq!(outcomes[2].display_name, "SDXL Base 1.0");
    assert!(
        outcomes.iter().all(|o| o.error.as_deref().is_some_and(|e| e.contains("HF_HUB_OFFLINE")))
    );
    let err = prefetch(
        &Catalog::builtin(),
        &["nope".to_owned()],
        &hub.config,
        WeightVariant::Fp16,
        &mut |_, _| {},
    )
    .expect_err("unknown")
    .to_string();
    assert!(err.contains("SDXL Base 1.0"), "{err}");
    let everything =
        prefetch(&Catalog::builtin(), &[], &hub.config, WeightVariant::Fp16, &mut |_, _| {})
            .expect("all");
    assert_eq!(everything.len(), Catalog::builtin().entries().len());
}

#[test]
fn blob_names_match_the_hub_conventions() {
    // `git hash-object` of "hello\n", and sha256 of "abc" (FIPS 180-2).
    assert_eq!(git_blob_sha1(b"hello\n"), "ce013625030ba8dba906f756967f9e9ca394464a");
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

/// A local stand-in for huggingface.co speaking the part of the protocol hf-hub 0.4 uses:
/// `GET /api/models/<id>/revision/main` (file list + commit) and ranged
/// `GET /<id>/resolve/main/<file>` answers with `etag`/`x-linked-etag`, `x-repo-commit` and
/// `content-range`. Every request line and its Range header are recorded.
struct FakeHubServer {
    endpoint: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn start_fake_hub(repo_id: &'static str, files: Vec<(String, Vec<u8>)>) -> FakeHubServer {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&requests);
    let files: HashMap<String, Vec<u8>> = files.into_iter().collect();
    std::thread::Builder::new()
        .name("fake-hub".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request_line = String::new();
                reader.read_line(&mut request_line).expect("request");
                let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let mut range = None;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).expect("header");
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':')
                        && name.eq_ignore_ascii_case("range")
                    {
                        range = Some(value.trim().to_owned());
                    }
                }
                log.lock().expect("log").push(format!("{path} {}", range.clone().unwrap_or_default()));
                let (status, headers, body) = if path == format!("/api/models/{repo_id}/revision/main") {
                    let siblings: Vec<_> = files.keys().map(|f| serde_json::json!({"rfilename": f})).collect();
                    let body = serde_json::json!({"sha": REVISION, "siblings": siblings}).to_string();
                    ("200 OK", String::new(), body.into_bytes())
                } else if let Some(data) = path.strip_prefix(&format!("/{repo_id}/resolve/main/")).and_then(|f| files.get(f)) {
                    let spec = range.unwrap_or_else(|| "bytes=0-".to_owned());
                    let (start, end) = spec.trim_start_matches("bytes=").split_once('-').expect("range");
                    let start: usize = start.parse().expect("start");
                    let end: usize = if end.is_empty() { data.len() - 1 } else { end.parse().expect("end") };
                    let lfs = path.ends_with(".safetensors") || path.ends_with(".bin");
                    let etag = if lfs { format!("x-linked-etag: \"{}\"\r\n", sha256_hex(data)) } else { String::new() };
                    let headers = format!(
                        "{etag}etag: \"{}\"\r\nx-repo-commit: {REVISION}\r\ncontent-range: bytes {start}-{end}/{}\r\n",
                        git_blob_sha1(data),
                        data.len()
                    );
                    ("206 Partial Content", headers, data[start..=end].to_vec())
                } else {
                    ("404 Not Found", String::new(), b"not found".to_vec())
                };
                let head = format!("HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
            }
        })
        .expect("server thread");
    FakeHubServer { endpoint, requests }
}

#[test]
fn online_fetch_downloads_only_needed_safetensors_and_resumes_partial_blobs() {
    let files = sdxl_repo_files();
    let server = start_fake_hub(SDXL_ID, files.clone());
    let hub = FakeHub::new();
    let online = HubConfig {
        offline: false,
        endpoint: server.endpoint.clone(),
        retries: 0,
        ..hub.config.clone()
    };

    // An interrupted earlier download of the VAE weights: the first 10 bytes in `<etag>.part`.
    let (_, vae) =
        files.iter().find(|(f, _)| f == "vae/diffusion_pytorch_model.safetensors").expect("vae");
    let blobs = hub.repo_dir(SDXL_ID).join("blobs");
    fs_err::create_dir_all(&blobs).expect("blobs");
    fs_err::write(blobs.join(format!("{}.part", sha256_hex(vae))), &vae[..10]).expect("part");

    let mut events = Vec::new();
    let model = Catalog::builtin().resolve("SDXL Base 1.0").expect("catalog");
    let resolved =
        resolve_pipeline(&model, &online, WeightVariant::Fp16, &mut |e| events.push(e.clone()))
            .expect("online");
    let unet = resolved.component("unet").expect("unet");
    assert_eq!(unet.variant.as_deref(), Some("fp16"));
    assert_eq!(resolved.revision.as_deref(), Some(REVISION));

    let requests = server.requests.lock().expect("log").clone();
    let downloads: Vec<&String> =
        requests.iter().filter(|r| r.contains("/resolve/") && !r.ends_with("bytes=0-0")).collect();
    assert!(requests.iter().all(|r| !r.contains(".bin")), "{requests:#?}");
    assert!(
        requests.iter().all(|r| !r.contains("unet/diffusion_pytorch_model.safetensors")),
        "fp16 chosen: {requests:#?}"
    );
    assert!(
        downloads.iter().any(|r| r.ends_with("vae/diffusion_pytorch_model.safetensors bytes=10-")),
        "resumed: {downloads:#?}"
    );
    let vae_path = &resolved.component("vae").expect("vae").weights[0];
    assert_eq!(&fs_err::read(vae_path).expect("vae"), vae, "resumed file is whole");
    assert!(events.iter().any(|e| matches!(e, imagelab::models::hub::DownloadEvent::Finished { repo_file } if repo_file == "unet/diffusion_pytorch_model.fp16.safetensors")));

    // Second run: everything cached, only the file list is asked for.
    let before = requests.len();
    resolve_pipeline(&model, &online, WeightVariant::Fp16, &mut |_| {}).expect("again");
    let again = server.requests.lock().expect("log")[before..].to_vec();
    assert!(again.iter().all(|r| r.starts_with("/api/")), "{again:#?}");

    // What hf-hub wrote is a cache the offline path and verify read as Python's.
    let offline =
        resolve_pipeline(&model, &hub.config, WeightVariant::Fp16, &mut |_| {}).expect("offline");
    assert_eq!(offline, resolved);
    let reports = verify(&Catalog::builtin(), &hub.config, WeightVariant::Fp16, &mut |_, _| {});
    assert!(reports[0].is_healthy(), "{reports:#?}");
    assert!(reports[0].files.iter().all(|f| f.status == FileStatus::Ok), "{reports:#?}");
}

#[test]
fn prefetch_online_fetches_a_lora_file_and_lists_it_cached() {
    let lora = tiny_safetensors(&["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"]);
    let files = vec![
        ("pixel-art-xl.safetensors".to_owned(), lora.clone()),
        ("README.md".to_owned(), b"# Pixel Art XL".to_vec()),
        ("pixel-art-xl.ckpt".to_owned(), b"pickle".to_vec()),
    ];
    let server = start_fake_hub("nerijs/pixel-art-xl", files);
    let hub = FakeHub::new();
    let online = HubConfig {
        offline: false,
        endpoint: server.endpoint.clone(),
        retries: 0,
        ..hub.config.clone()
    };
    let mut progress = Vec::new();
    let outcomes = prefetch(
        &Catalog::builtin(),
        &["Pixel Art XL".to_owned()],
        &online,
        WeightVariant::Fp16,
        &mut |name, e| {
            progress.push((name.to_owned(), e.clone()));
        },
    )
    .expect("known name");
    assert_eq!(outcomes[0].error, None);
    assert_eq!(
        (outcomes[0].files_downloaded, outcomes[0].bytes_downloaded),
        (1, lora.len() as u64)
    );
    // Its base is fetched after it (this fake hub does not have it).
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[1].display_name, "SDXL Base 1.0");
    assert!(outcomes[1].error.is_some());
    assert!(progress.iter().all(|(name, _)| name == "Pixel Art XL" || name == "SDXL Base 1.0"));
    let requests = server.requests.lock().expect("log").clone();
    assert!(
        requests.iter().all(|r| !r.contains(".ckpt") && !r.contains("README")),
        "{requests:#?}"
    );
    let listings = list_models(&Catalog::builtin(), &hub.config, WeightVariant::Fp16);
    let pixel = listings.iter().find(|l| l.display_name == "Pixel Art XL").expect("listed");
    assert_eq!(pixel.state, CacheState::Cached);
    assert_eq!(pixel.kind, "lora");
}

/// Reference: `tools/reference/model_variant_files.py` asks diffusers 0.42.1's
/// `variant_compatible_siblings` which weight files it loads from each listing; our plan must
/// choose the same files (exact set equality). Where diffusers refuses `variant="fp16"`
/// because no file has it, imagelab deliberately falls back to full precision.
#[test]
fn weight_choice_matches_diffusers() {
    use imagelab::models::hub::plan_pipeline;
    let cases: Vec<serde_json::Value> = serde_json::from_str(
        &fs_err::read_to_string(imagelab_fixture("variant_files.json")).expect("fixture"),
    )
    .expect("json");
    let model_index: serde_json::Value = serde_json::from_slice(
        &fs_err::read(imagelab_fixture("sdxl_model_index.json")).expect("fixture"),
    )
    .expect("json");
    assert_eq!(cases.len(), 6);
    for case in cases {
        let listing: std::collections::BTreeSet<String> = case["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| f.as_str().expect("name").to_owned())
            .collect();
        let prefer =
            if case["variant"].is_null() { WeightVariant::Full } else { WeightVariant::Fp16 };
        let chosen = |prefer| -> Vec<String> {
            let plan = plan_pipeline(&model_index, &listing, prefer).expect("plan");
            let mut files: Vec<String> = plan
                .into_iter()
                .filter(|c| {
                    c.name.starts_with("unet")
                        || c.name.starts_with("vae")
                        || c.name.starts_with("text_encoder")
                })
                .flat_map(|c| c.files)
                .filter(|f| !f.ends_with("/config.json"))
                .collect();
            files.sort();
            files
        };
        match case["expected"].as_array() {
            Some(expected) => {
                let expected: Vec<&str> =
                    expected.iter().map(|f| f.as_str().expect("name")).collect();
                assert_eq!(chosen(prefer), expected, "case {}", case["case"]);
            }
            None => assert_eq!(
                chosen(prefer),
                chosen(WeightVariant::Full),
                "fallback in case {}",
                case["case"]
            ),
        }
    }
}

/// `--vae` with a hub VAE repo (as madebyollin/sdxl-vae-fp16-fix: a diffusers VAE at the root,
/// plus a lone-file copy and a pickle): only `config.json` and the chosen weights are fetched,
/// and the resolved path is the snapshot folder, offline afterwards too.
#[test]
fn a_hub_vae_repo_fetches_only_its_config_and_weights() {
    let vae = tiny_safetensors(&[
        "decoder.up_blocks.0.resnets.0.conv1.weight",
        "encoder.down_blocks.0.resnets.0.conv1.weight",
    ]);
    let repo = "madebyollin/sdxl-vae-fp16-fix";
    let files = vec![
        (
            "config.json".to_owned(),
            br#"{"_class_name": "AutoencoderKL", "force_upcast": false}"#.to_vec(),
        ),
        ("diffusion_pytorch_model.safetensors".to_owned(), vae.clone()),
        ("diffusion_pytorch_model.bin".to_owned(), b"pickle".to_vec()),
        ("sdxl.vae.safetensors".to_owned(), vae.clone()),
        ("README.md".to_owned(), b"# fp16 fix".to_vec()),
    ];
    let server = start_fake_hub(repo, files);
    let hub = FakeHub::new();
    let online = HubConfig {
        offline: false,
        endpoint: server.endpoint.clone(),
        retries: 0,
        ..hub.config.clone()
    };
    let model = Catalog::builtin().resolve_vae(repo).expect("a hub id");
    let resolved =
        resolve_model(&model, &online, WeightVariant::Fp16, &mut |_| {}).expect("online");
    let ResolvedModel::Vae { path, revision } = &resolved else { panic!("a VAE: {resolved:?}") };
    assert!(
        path.join("config.json").is_file()
            && path.join("diffusion_pytorch_model.safetensors").is_file()
    );
    assert_eq!(revision.as_deref(), Some(REVISION));
    let requests = server.requests.lock().expect("log").clone();
    let downloads: Vec<&String> = requests.iter().filter(|r| r.contains("/resolve/")).collect();
    assert!(
        downloads.iter().all(|r| r.contains("config.json") || r.contains("diffusion_pytorch_model.safetensors")),
        "{downloads:#?}"
    );
    assert_eq!(
        resolve_model(&model, &hub.config, WeightVariant::Fp16, &mut |_| {}).expect("offline"),
        resolved
    );
    // One file of the repo, named.
    let named =
        Catalog::builtin().resolve_vae(&format!("{repo}/sdxl.vae.safetensors")).expect("named");
    let file = resolve_model(&named, &online, WeightVariant::Fp16, &mut |_| {}).expect("file");
    assert!(file.path().ends_with("sdxl.vae.safetensors"));
}

/// Issue 11: a hub LoRA resolves through the cache like other hub files — a repo id alone
/// (its one `.safetensors`) or a catalog LoRA entry (its named file): only that file is
/// downloaded, the header must read as a LoRA, and offline afterwards it resolves the same.
#[test]
fn a_hub_lora_downloads_only_its_file() {
    let lora = tiny_safetensors(&["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"]);
    let repo = "someone/tiny-lora";
    let files = vec![
        ("tiny-lora.safetensors".to_owned(), lora.clone()),
        ("README.md".to_owned(), b"# a LoRA".to_vec()),
        ("tiny-lora.ckpt".to_owned(), b"pickle".to_vec()),
    ];
    let server = start_fake_hub(repo, files);
    let hub = FakeHub::new();
    let online = HubConfig {
        offline: false,
        endpoint: server.endpoint.clone(),
        retries: 0,
        ..hub.config.clone()
    };
    let model = Catalog::builtin().resolve_lora(repo).expect("a hub id");
    let resolved =
        resolve_model(&model, &online, WeightVariant::Fp16, &mut |_| {}).expect("online");
    let ResolvedModel::Lora { file, revision } = &resolved else { panic!("a LoRA: {resolved:?}") };
    assert!(file.ends_with("tiny-lora.safetensors") && file.is_file(), "{file:?}");
    assert_eq!(revision.as_deref(), Some(REVISION));
    let requests = server.requests.lock().expect("log").clone();
    let downloads: Vec<&String> = requests.iter().filter(|r| r.contains("/resolve/")).collect();
    assert!(downloads.iter().all(|r| r.contains("tiny-lora.safetensors")), "{downloads:#?}");
    assert_eq!(
        resolve_model(&model, &hub.config, WeightVariant::Fp16, &mut |_| {}).expect("offline"),
        resolved
    );
    // Not in the cache, offline: the fetch command is named.
    let pixel = Catalog::builtin().resolve_lora("Pixel Art XL").expect("catalog LoRA");
    let err = resolve_model(&pixel, &hub.config, WeightVariant::Fp16, &mut |_| {})
        .expect_err("not cached");
    assert!(err.to_string().contains("pixel-art-xl.safetensors"), "{err}");
    // A name that is no LoRA anywhere is refused, listing the LoRAs there are.
    let unknown = Catalog::builtin().resolve_lora("no_such_lora").expect_err("unknown");
    assert!(unknown.to_string().contains("Pixel Art XL"), "{unknown}");
}
