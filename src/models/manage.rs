//! `imagelab models list|prefetch|verify` as library functions returning data (serde structs
//! for `--json`) plus plain-text formatting for people.
//!
//! Verify checks blobs as the hub names them: LFS blobs by the sha256 of their content, small
//! git-stored files by their git blob sha1 (`sha1("blob <len>\0" + data)`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::catalog::{Catalog, CatalogEntry, EntryKind, UnknownModel};
use super::hub::{
    DownloadEvent, HubConfig, PlanProblem, WeightVariant, download_repo, list_files, plan_pipeline,
    split_hub_key,
};
use super::layout::is_safetensors_file;

/// How much of a model the cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CacheState {
    /// Every needed file is in the current snapshot.
    Cached,
    /// Some files are there, some are missing (or a download was interrupted).
    Partial,
    /// Nothing of the repo is cached.
    NotDownloaded,
    /// A file of the user's models folders, usable.
    Local,
    /// A file of the user's models folders that cannot be used (see the listing's `note`).
    Refused,
}

/// One catalog entry as `models list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ModelListing {
    /// Catalog display name.
    pub display_name: String,
    /// Hub repo id.
    pub hub_id: String,
    /// `pipeline` or `lora`.
    pub kind: String,
    /// Cache state.
    pub state: CacheState,
    /// Bytes of the repo's blobs on disk (interrupted `.part`/`.incomplete` files included).
    pub size_on_disk_bytes: u64,
    /// Commit of the snapshot in use.
    pub revision: Option<String>,
    /// Needed repo files not in the snapshot (first problem only for layout errors).
    pub missing: Vec<String>,
    /// Interrupted downloads waiting to be resumed.
    pub incomplete_downloads: usize,
    /// Why a local file is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Every file of the user's models folders (`--models-dir`): checkpoints, LoRAs and VAEs by
/// name (what they are read from their headers), then the files refused, with the reason.
pub fn list_local(catalog: &Catalog) -> Vec<ModelListing> {
    let library = catalog.library();
    let usable = library.all().map(|model| ModelListing {
        display_name: model.name.clone(),
        hub_id: model.path.display().to_string(),
        kind: model.kind.label(),
        state: CacheState::Local,
        size_on_disk_bytes: model.bytes,
        revision: None,
        missing: Vec::new(),
        incomplete_downloads: 0,
        note: None,
    });
    let refused = library.refused.iter().map(|file| ModelListing {
        display_name: file
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        hub_id: file.path.display().to_string(),
        kind: "refused".to_owned(),
        state: CacheState::Refused,
        size_on_disk_bytes: fs_err::metadata(&file.path).map_or(0, |m| m.len()),
        revision: None,
        missing: Vec::new(),
        incomplete_downloads: 0,
        note: Some(file.reason.clone()),
    });
    usable.chain(refused).collect()
}

/// Lists every catalog entry with its cache state and size, reading only the cache.
pub fn list_models(
    catalog: &Catalog,
    config: &HubConfig,
    prefer: WeightVariant,
) -> Vec<ModelListing> {
    catalog.entries().iter().map(|entry| list_entry(entry, config, prefer)).collect()
}

/// The repo of an entry and the one file of it that is used, if the entry names one (a LoRA's
/// file, or a checkpoint named as `org/name/file.safetensors`).
fn repo_and_file(entry: &CatalogEntry) -> (String, Option<String>) {
    let (repo, file) = split_hub_key(&entry.hub_id);
    let file = match &entry.kind {
        EntryKind::Lora { file, .. } => Some(file.clone()),
        EntryKind::Pipeline | EntryKind::Vae => file.map(str::to_owned),
    };
    (repo.to_owned(), file)
}

/// What an entry still needs from its current snapshot (`None`: no snapshot).
fn missing_for(
    entry: &CatalogEntry,
    snapshot: Option<&Path>,
    prefer: WeightVariant,
) -> Vec<String> {
    let (_, file) = repo_and_file(entry);
    match (snapshot, file, &entry.kind) {
        (None, Some(file), _) => vec![file],
        (None, None, EntryKind::Vae) => vec!["config.json".to_owned()],
        (None, None, _) => vec!["model_index.json".to_owned()],
        (Some(dir), Some(file), _) => {
            if dir.join(&file).is_file() {
                Vec::new()
            } else {
                vec![file]
            }
        }
        (Some(dir), None, EntryKind::Vae) => {
            let listing = list_files(dir);
            let wanted = ["config.json", "diffusion_pytorch_model.safetensors"];
            let has_weights = listing
                .iter()
                .any(|f| f.starts_with("diffusion_pytorch_model") && is_safetensors_file(f));
            wanted
                .iter()
                .filter(|f| !(listing.contains(**f) || f.ends_with(".safetensors") && has_weights))
                .map(|f| (*f).to_owned())
                .collect()
        }
        (Some(dir), None, _) => missing_pipeline_files(dir, prefer),
    }
}

fn list_entry(entry: &CatalogEntry, config: &HubConfig, prefer: WeightVariant) -> ModelListing {
    let (repo_id, _) = repo_and_file(entry);
    let repo = config.repo(&repo_id);
    let (size_on_disk_bytes, incomplete_downloads) = blob_usage(&repo.dir.join("blobs"));
    let kind = match entry.kind {
        EntryKind::Pipeline => "pipeline",
        EntryKind::Lora { .. } => "lora",
        EntryKind::Vae => "vae",
    };
    let snapshot = repo.current_snapshot();
    let missing = missing_for(entry, snapshot.as_ref().map(|(_, dir)| dir.as_path()), prefer);
    let state = if snapshot.is_none() && size_on_disk_bytes == 0 {
        CacheState::NotDownloaded
    } else if missing.is_empty() && incomplete_downloads == 0 {
        CacheState::Cached
    } else {
        CacheState::Partial
    };
    ModelListing {
        display_name: entry.display_name.clone(),
        hub_id: entry.hub_id.clone(),
        kind: kind.to_owned(),
        state,
        size_on_disk_bytes,
        revision: snapshot.map(|(revision, _)| revision),
        missing,
        incomplete_downloads,
        note: None,
    }
}

/// Needed files absent from a snapshot (a single-file repo counts as complete with one
/// top-level `.safetensors`).
fn missing_pipeline_files(snapshot: &Path, prefer: WeightVariant) -> Vec<String> {
    let listing = list_files(snapshot);
    if !listing.contains("model_index.json") {
        let has_single = listing.iter().any(|f| !f.contains('/') && is_safetensors_file(f));
        return if has_single { Vec::new() } else { vec!["model_index.json".to_owned()] };
    }
    let index = fs_err::read_to_string(snapshot.join("model_index.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    let Some(index) = index else { return vec!["model_index.json (unreadable)".to_owned()] };
    // Report every missing file, not only the first: plan repeatedly, pretending each found
    // gap is filled.
    let mut assumed = listing;
    let mut missing = Vec::new();
    for _ in 0..64 {
        match plan_pipeline(&index, &assumed, prefer) {
            Ok(_) => break,
            Err(PlanProblem::Missing(file)) => {
                assumed.insert(file.clone());
                missing.push(file);
            }
            Err(PlanProblem::PickleOnly { component, .. }) => {
                missing.push(format!("{component}/*.safetensors (only pickle weights cached)"));
                break;
            }
            Err(PlanProblem::BadIndex) => {
                missing.push("model_index.json (not an object)".to_owned());
                break;
            }
        }
    }
    missing
}

/// (bytes of all blobs, count of interrupted downloads) in a `blobs/` folder.
#[allow(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "hf-hub's own lower-case suffixes"
)]
fn blob_usage(blobs: &Path) -> (u64, usize) {
    let Ok(entries) = fs_err::read_dir(blobs) else { return (0, 0) };
    let mut bytes = 0;
    let mut incomplete = 0;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".lock") {
            continue;
        }
        if name.ends_with(".part") || name.ends_with(".incomplete") {
            incomplete += 1;
        }
        bytes += entry.metadata().map_or(0, |m| m.len());
    }
    (bytes, incomplete)
}

/// `models list` for people: one line per model.
pub fn format_listing(listings: &[ModelListing]) -> String {
    let mut out = String::new();
    for item in listings {
        let state = match item.state {
            CacheState::Cached => "cached",
            CacheState::Partial => "partial",
            CacheState::NotDownloaded => "not downloaded",
            CacheState::Local => "local",
            CacheState::Refused => "refused",
        };
        let _ = write!(
            out,
            "{:<28} {:<14} {:>10}  {}",
            item.display_name,
            state,
            human_bytes(item.size_on_disk_bytes),
            item.hub_id
        );
        if item.state == CacheState::Partial && !item.missing.is_empty() {
            let _ = write!(out, "  (missing: {})", item.missing.join(", "));
        }
        if item.incomplete_downloads > 0 {
            let _ =
                write!(out, "  ({} interrupted download(s), resumable)", item.incomplete_downloads);
        }
        if item.state == CacheState::Local {
            let _ = write!(out, "  [{}]", item.kind);
        }
        if let Some(note) = &item.note {
            let _ = write!(out, "  ({note})");
        }
        out.push('\n');
    }
    out
}

/// Bytes in binary units (`6.9 GiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// What `models prefetch` did for one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchOutcome {
    /// Catalog display name (or the hub id given).
    pub display_name: String,
    /// Hub repo id.
    pub hub_id: String,
    /// Files downloaded now.
    pub files_downloaded: usize,
    /// Bytes downloaded now.
    pub bytes_downloaded: u64,
    /// The error, when this model failed (the others still ran).
    pub error: Option<String>,
}

/// A prefetch that cannot start: nothing was downloaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefetchError {
    /// A name that is no model.
    #[error(transparent)]
    Unknown(#[from] UnknownModel),
    /// A local path: there is nothing to download.
    #[error("{0:?} is a local path; only hub models can be prefetched")]
    LocalPath(String),
}

/// Downloads what each named model needs (`names` empty or `["all"]` = the whole catalog).
/// Keeps going after a failure; each outcome says what happened.
///
/// # Errors
/// An unknown name (before anything is downloaded); the message lists valid names.
pub fn prefetch(
    catalog: &Catalog,
    names: &[String],
    config: &HubConfig,
    prefer: WeightVariant,
    progress: &mut dyn FnMut(&str, &DownloadEvent),
) -> Result<Vec<PrefetchOutcome>, PrefetchError> {
    let all = names.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case("all"));
    let mut targets: Vec<(String, String, Option<String>)> = if all {
        catalog.entries().iter().map(target_of).collect()
    } else {
        names
            .iter()
            .map(|name| match catalog.resolve(name) {
                Ok(model) => match &model.source {
                    super::catalog::ModelSource::Hub(id) => {
                        let (repo, file_in_key) = split_hub_key(id);
                        let file = match &model.kind {
                            EntryKind::Lora { file, .. } => Some(file.clone()),
                            EntryKind::Pipeline | EntryKind::Vae => file_in_key.map(str::to_owned),
                        };
                        Ok((model.display_name.clone(), repo.to_owned(), file))
                    }
                    _ => Err(PrefetchError::LocalPath(name.clone())),
                },
                Err(err) => Err(err.into()),
            })
            .collect::<Result<_, _>>()?
    };
    // A catalog LoRA entry (Pixel Art XL) runs on its base: fetch the base too.
    if !all {
        let bases: Vec<CatalogEntry> = names
            .iter()
            .filter_map(|name| catalog.find(name))
            .filter_map(|entry| match &entry.kind {
                EntryKind::Lora { base, .. } if !base.is_empty() => catalog.find(base).cloned(),
                _ => None,
            })
            .collect();
        for base in &bases {
            let target = target_of(base);
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
    }
    let mut outcomes = Vec::new();
    for (display_name, hub_id, file) in targets {
        let result = download_repo(&hub_id, file.as_deref(), config, prefer, &mut |event| {
            progress(&display_name, event);
        });
        let (files_downloaded, bytes_downloaded, error) = match result {
            Ok((files, bytes)) => (files, bytes, None),
            Err(err) => {
                tracing::warn!(model = %display_name, error = %err, "prefetch failed");
                (0, 0, Some(err.to_string()))
            }
        };
        outcomes.push(PrefetchOutcome {
            display_name,
            hub_id,
            files_downloaded,
            bytes_downloaded,
            error,
        });
    }
    Ok(outcomes)
}

fn target_of(entry: &CatalogEntry) -> (String, String, Option<String>) {
    let (repo, file) = repo_and_file(entry);
    (entry.display_name.clone(), repo, file)
}

/// `models prefetch` for people.
pub fn format_prefetch(outcomes: &[PrefetchOutcome]) -> String {
    let mut out = String::new();
    for item in outcomes {
        let _ = match &item.error {
            None => writeln!(
                out,
                "{}: {} file(s), {} downloaded",
                item.display_name,
                item.files_downloaded,
                human_bytes(item.bytes_downloaded)
            ),
            Some(error) => writeln!(out, "{}: FAILED: {error}", item.display_name),
        };
    }
    out
}

/// The state of one snapshot file after verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum FileStatus {
    /// The blob's content hashes to its name.
    Ok,
    /// The snapshot link points to no blob.
    Missing,
    /// The blob's content does not match its name.
    Corrupt {
        /// The hash the blob is named by.
        expected: String,
        /// The hash of its content.
        actual: String,
    },
    /// Not a link to a hash-named blob (a copied file); nothing to compare with.
    Unchecked,
}

/// One snapshot file's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheck {
    /// Snapshot commit.
    pub revision: String,
    /// Path inside the repo.
    pub repo_file: String,
    /// Size in bytes (0 when missing).
    pub bytes: u64,
    /// Result.
    pub status: FileStatus,
}

/// One repo's verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoVerification {
    /// Catalog display name.
    pub display_name: String,
    /// Hub repo id.
    pub hub_id: String,
    /// Every file of every snapshot.
    pub files: Vec<FileCheck>,
    /// Needed files absent from the current snapshot.
    pub missing_needed: Vec<String>,
}

impl RepoVerification {
    /// True when nothing is missing or corrupt.
    pub fn is_healthy(&self) -> bool {
        self.missing_needed.is_empty()
            && self.files.iter().all(|f| matches!(f.status, FileStatus::Ok | FileStatus::Unchecked))
    }
}

/// Verifies every cached catalog repo (repos not in the cache are skipped).
/// `progress` gets each repo file before it is hashed.
pub fn verify(
    catalog: &Catalog,
    config: &HubConfig,
    prefer: WeightVariant,
    progress: &mut dyn FnMut(&str, &str),
) -> Vec<RepoVerification> {
    let mut reports = Vec::new();
    for entry in catalog.entries() {
        let (repo_id, _) = repo_and_file(entry);
        let repo = config.repo(&repo_id);
        if !repo.dir.is_dir() {
            continue;
        }
        let mut hashed: BTreeMap<PathBuf, FileStatus> = BTreeMap::new();
        let mut files = Vec::new();
        for (revision, snapshot) in repo.snapshots() {
            for repo_file in snapshot_entries(&snapshot) {
                progress(&entry.display_name, &repo_file);
                let path = snapshot.join(&repo_file);
                let (bytes, status) = check_snapshot_file(&path, &mut hashed);
                files.push(FileCheck { revision: revision.clone(), repo_file, bytes, status });
            }
        }
        let snapshot = repo.current_snapshot();
        let missing_needed =
            missing_for(entry, snapshot.as_ref().map(|(_, dir)| dir.as_path()), prefer);
        reports.push(RepoVerification {
            display_name: entry.display_name.clone(),
            hub_id: entry.hub_id.clone(),
            files,
            missing_needed,
        });
    }
    reports
}

/// Every entry (file or link, dangling included) under a snapshot, relative, `/`-separated.
fn snapshot_entries(snapshot: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![snapshot.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs_err::read_dir(&dir) else { continue };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
            if path.is_dir() && !is_link {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(snapshot) {
                let parts: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.insert(parts.join("/"));
            }
        }
    }
    out
}

fn check_snapshot_file(
    path: &Path,
    hashed: &mut BTreeMap<PathBuf, FileStatus>,
) -> (u64, FileStatus) {
    let Ok(target) = fs_err::read_link(path) else {
        let bytes = fs_err::metadata(path).map_or(0, |m| m.len());
        return (bytes, FileStatus::Unchecked);
    };
    let blob = path.parent().map_or_else(|| target.clone(), |parent| parent.join(&target));
    let Ok(meta) = fs_err::metadata(&blob) else { return (0, FileStatus::Missing) };
    let blob = fs_err::canonicalize(&blob).unwrap_or(blob);
    if let Some(status) = hashed.get(&blob) {
        return (meta.len(), status.clone());
    }
    let name =
        blob.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let status = match hash_blob(&blob, &name, meta.len()) {
        Ok(Some(actual)) if actual == name => FileStatus::Ok,
        Ok(Some(actual)) => FileStatus::Corrupt { expected: name, actual },
        Ok(None) => FileStatus::Unchecked,
        Err(_) => FileStatus::Missing,
    };
    hashed.insert(blob, status.clone());
    (meta.len(), status)
}

/// The hash a blob should be named by: sha256 for 64-hex names, git blob sha1 for 40-hex.
fn hash_blob(path: &Path, name: &str, len: u64) -> std::io::Result<Option<String>> {
    let is_hex = name.chars().all(|c| c.is_ascii_hexdigit());
    if !is_hex || !(name.len() == 64 || name.len() == 40) {
        return Ok(None);
    }
    let mut file = fs_err::File::open(path)?;
    let mut buffer = vec![0_u8; 1 << 20];
    if name.len() == 64 {
        let mut hasher = sha2::Sha256::new();
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        return Ok(Some(to_hex(&hasher.finalize())));
    }
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {len}\0").as_bytes());
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(Some(to_hex(&hasher.finalize())))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The sha256 of `data` in lower-case hex: the name of an LFS blob in the hub cache.
pub fn sha256_hex(data: &[u8]) -> String {
    to_hex(&sha2::Sha256::digest(data))
}

/// The git blob id of `data` (`sha1("blob <len>\0" + data)`): the name of a small non-LFS
/// blob in the hub cache.
pub fn git_blob_sha1(data: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", data.len()).as_bytes());
    hasher.update(data);
    to_hex(&hasher.finalize())
}

/// `models verify` for people: problems first, then a summary per repo.
pub fn format_verify(reports: &[RepoVerification]) -> String {
    let mut out = String::new();
    if reports.is_empty() {
        out.push_str("no catalog model is in the cache\n");
    }
    for report in reports {
        let checked = report.files.iter().filter(|f| f.status == FileStatus::Ok).count();
        let verdict = if report.is_healthy() { "ok" } else { "PROBLEMS" };
        let _ = writeln!(
            out,
            "{} ({}): {verdict}, {checked} file(s) verified",
            report.display_name, report.hub_id
        );
        for file in &report.files {
            match &file.status {
                FileStatus::Missing => {
                    let _ = writeln!(out, "  missing blob: {} ({})", file.repo_file, file.revision);
                }
                FileStatus::Corrupt { expected, actual } => {
                    let _ = writeln!(
                        out,
                        "  corrupt: {} ({}) hashes to {actual}, expected {expected}; delete the blob and prefetch again",
                        file.repo_file, file.revision
                    );
                }
                FileStatus::Ok | FileStatus::Unchecked => {}
            }
        }
        for missing in &report.missing_needed {
            let _ = writeln!(out, "  not downloaded: {missing}");
        }
    }
    out
}

/// SHA-1 (FIPS 180-4), only to check git blob names; not used for security.
struct Sha1 {
    state: [u32; 5],
    pending: Vec<u8>,
    length_bytes: u64,
}

impl Sha1 {
    fn new() -> Self {
        Self {
            state: [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0],
            pending: Vec::with_capacity(64),
            length_bytes: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.length_bytes += data.len() as u64;
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == 64 {
                let block = std::mem::take(&mut self.pending);
                self.compress(&block);
            }
        }
        let mut chunks = data.chunks_exact(64);
        for block in &mut chunks {
            self.compress(block);
        }
        self.pending.extend_from_slice(chunks.remainder());
    }

    #[allow(clippy::many_single_char_names, reason = "the names of FIPS 180-4")]
    fn compress(&mut self, block: &[u8]) {
        let mut w = [0_u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = self.state;
        for (i, &word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..20 => ((b & c) | (!b & d), 0x5A82_7999),
                20..40 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..60 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6_u32),
            };
            let next =
                a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = next;
        }
        for (s, v) in self.state.iter_mut().zip([a, b, c, d, e]) {
            *s = s.wrapping_add(v);
        }
    }

    fn finalize(mut self) -> [u8; 20] {
        let bit_length = self.length_bytes.wrapping_mul(8);
        let mut tail = vec![0x80_u8];
        let used = (self.length_bytes % 64) as usize;
        let zeros = if used < 56 { 55 - used } else { 119 - used };
        tail.extend(std::iter::repeat_n(0_u8, zeros));
        tail.extend_from_slice(&bit_length.to_be_bytes());
        let length_bytes = self.length_bytes;
        self.update(&tail);
        self.length_bytes = length_bytes;
        let mut out = [0_u8; 20];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha1_hex(data: &[u8]) -> String {
        let mut hasher = Sha1::new();
        hasher.update(data);
        to_hex(&hasher.finalize())
    }

    #[test]
    fn sha1_matches_reference_vectors() {
        // FIPS 180 examples and `git hash-object` of "hello\n".
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            sha1_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(sha1_hex(b"blob 6\0hello\n"), "ce013625030ba8dba906f756967f9e9ca394464a");
        let million_a = vec![b'a'; 1_000_000];
        let mut split = Sha1::new();
        split.update(&million_a[..12_345]);
        split.update(&million_a[12_345..]);
        assert_eq!(to_hex(&split.finalize()), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(6_938_078_334), "6.5 GiB");
    }
}
