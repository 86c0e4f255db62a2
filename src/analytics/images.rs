//! The images the analysis counts: every image the jobs logs beneath the logs folders list
//! (every instance's `jobs*.log`), and the favourites joined to them — by path (symlinks
//! resolved), by the settings embedded in a copy, or by content — or, when the logs do not
//! know an image, read from its own metadata (ours or another tool's).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::AnalyticsError;
use super::inputs::FavoriteRef;
use super::values::ImageSettings;
use crate::models::catalog::Catalog;
use crate::storage::favorites::FAVORITES_FILE;
use crate::storage::jobs_log::{self, DamagedLine, JobRecord};
use crate::storage::metadata::{GenerationInfo, MetadataError, Recovered, Source, recover};

/// Where an image's settings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A jobs-log line.
    Log,
    /// The image's own metadata (the logs do not list it), written by this tool.
    Metadata(Source),
}

/// One image of the population.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Absolute path (symlinks resolved where the file exists).
    pub path: PathBuf,
    /// How reports name it: relative to the folder holding its log, or the path given.
    pub shown: String,
    /// Its seed, when known.
    pub seed: Option<u64>,
    /// The prompt as sent (profile applied).
    pub prompt: String,
    /// What it is grouped by.
    pub settings: ImageSettings,
    /// Where the settings come from.
    pub origin: Origin,
    /// Its sweep folder relative to the output root (logged images of sweeps).
    pub run_dir: Option<String>,
}

/// How a favourite was joined to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// Its path is one a jobs log lists.
    Path,
    /// A symlink to a file a jobs log lists.
    Symlink,
    /// A copy whose embedded settings (prompt, seed, model, profile…) match a logged image.
    Metadata,
    /// A copy with the same bytes as a logged image.
    Content,
    /// Not in any log: analysed from its own metadata.
    OwnMetadata,
}

impl MatchedBy {
    /// The name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::Symlink => "symlink",
            Self::Metadata => "metadata",
            Self::Content => "content",
            Self::OwnMetadata => "own_metadata",
        }
    }
}

/// A favourite joined to an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FavoriteMatch {
    /// The favourite as given.
    pub given: String,
    /// Index into [`Population::images`].
    pub image: usize,
    /// How.
    pub matched_by: MatchedBy,
}

/// A favourite that matched nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    /// The favourite as given.
    pub given: String,
    /// Why.
    pub reason: String,
}

/// The favourites after matching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matched {
    /// One per distinct image, in the order given.
    pub favorites: Vec<FavoriteMatch>,
    /// Those that matched nothing.
    pub unmatched: Vec<Unmatched>,
    /// Favourites naming an image another favourite already named (counted once).
    pub duplicates: Vec<String>,
}

/// Every image the logs list, plus the favourites read from their own metadata.
#[derive(Debug)]
pub struct Population {
    images: Vec<Image>,
    by_path: HashMap<PathBuf, usize>,
    by_seed_and_prompt: HashMap<(u64, String), Vec<usize>>,
    sizes: Option<Vec<Option<u64>>>,
    hashes: HashMap<usize, Option<[u8; 32]>>,
    roots: Vec<PathBuf>,
    starred_roots: Vec<PathBuf>,
    log_files: Vec<PathBuf>,
    damaged: Vec<DamagedLine>,
    notes: Vec<String>,
    catalog: Catalog,
}

impl Population {
    /// An empty population (no logs).
    pub fn empty() -> Self {
        Self {
            images: Vec::new(),
            by_path: HashMap::new(),
            by_seed_and_prompt: HashMap::new(),
            sizes: None,
            hashes: HashMap::new(),
            roots: Vec::new(),
            starred_roots: Vec::new(),
            log_files: Vec::new(),
            damaged: Vec::new(),
            notes: Vec::new(),
            catalog: Catalog::builtin(),
        }
    }

    /// A population of these images (no logs read).
    pub fn from_images(images: Vec<Image>) -> Self {
        let mut population = Self::empty();
        for image in images {
            population.push(image);
        }
        population
    }

    /// Reads every `jobs*.log` beneath each folder (recursively; symlinked folders are not
    /// followed), each folder holding one being an output root whose log paths are relative to
    /// it. Damaged lines are skipped and kept in [`Population::damaged`].
    ///
    /// # Errors
    /// A folder that is not one, or cannot be listed.
    pub fn from_log_dirs(dirs: &[PathBuf]) -> Result<Self, AnalyticsError> {
        let mut population = Self::empty();
        for dir in dirs {
            if !dir.is_dir() {
                return Err(AnalyticsError::NotAFolder { flag: "--logs", path: dir.clone() });
            }
            let found = walk(dir, &mut population.notes)?;
            if found.logs.is_empty() {
                population.notes.push(format!("no jobs*.log beneath {}", dir.display()));
            }
            for root in found.starred {
                if !population.starred_roots.contains(&root) {
                    population.starred_roots.push(root);
                }
            }
            for (root, files) in found.logs {
                if population.roots.contains(&root) {
                    continue;
                }
                let contents = jobs_log::read_all(&root)?;
                population.log_files.extend(files);
                population.damaged.extend(contents.damaged);
                for record in &contents.records {
                    population.add_record(&root, record);
                }
                population.roots.push(root);
            }
        }
        Ok(population)
    }

    fn add_record(&mut self, root: &Path, record: &JobRecord) {
        let settings = ImageSettings::from_record(record);
        for (index, relative) in record.paths.iter().enumerate() {
            let key = path_key(&root.join(relative));
            if self.by_path.contains_key(&key) {
                continue;
            }
            let seed = record.seeds.get(index).copied();
            self.push(Image {
                path: key,
                shown: relative.clone(),
                seed,
                prompt: record.prompt.clone(),
                settings: settings.clone(),
                origin: Origin::Log,
                run_dir: record.run_dir.clone(),
            });
        }
    }

    fn push(&mut self, image: Image) -> usize {
        let index = self.images.len();
        self.by_path.insert(image.path.clone(), index);
        if let Some(seed) = image.seed {
            self.by_seed_and_prompt.entry((seed, image.prompt.clone())).or_default().push(index);
        }
        self.images.push(image);
        index
    }

    /// Every image: the logged ones, then those read from their own metadata.
    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// The folders holding jobs logs (output roots).
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The folders holding a `favorites.txt`.
    pub fn starred_roots(&self) -> &[PathBuf] {
        &self.starred_roots
    }

    /// The log files read.
    pub fn log_files(&self) -> &[PathBuf] {
        &self.log_files
    }

    /// Log lines skipped, with why.
    pub fn damaged(&self) -> &[DamagedLine] {
        &self.damaged
    }

    /// What the reader noticed (a logs folder without logs).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Joins every favourite to an image; a favourite the logs do not know and whose file has
    /// settings of its own becomes a new image of the population.
    pub fn match_all(&mut self, favorites: &[FavoriteRef]) -> Matched {
        let mut matched = Matched::default();
        let mut seen = std::collections::HashSet::new();
        for favorite in favorites {
            match self.match_one(favorite) {
                Ok((image, matched_by)) => {
                    if seen.insert(image) {
                        matched.favorites.push(FavoriteMatch {
                            given: favorite.given.clone(),
                            image,
                            matched_by,
                        });
                    } else {
                        matched.duplicates.push(favorite.given.clone());
                    }
                }
                Err(reason) => {
                    matched.unmatched.push(Unmatched { given: favorite.given.clone(), reason });
                }
            }
        }
        matched
    }

    fn match_one(&mut self, favorite: &FavoriteRef) -> Result<(usize, MatchedBy), String> {
        for candidate in &favorite.candidates {
            if let Some(&image) = self.by_path.get(&path_key(candidate)) {
                let link = fs_err::symlink_metadata(candidate)
                    .is_ok_and(|meta| meta.file_type().is_symlink());
                let how = match (&self.images[image].origin, link) {
                    (Origin::Metadata(_), _) => MatchedBy::OwnMetadata,
                    (Origin::Log, true) => MatchedBy::Symlink,
                    (Origin::Log, false) => MatchedBy::Path,
                };
                return Ok((image, how));
            }
        }
        let Some(file) = favorite.candidates.iter().find(|candidate| candidate.is_file()) else {
            return Err("no such file, and no jobs log lists it".to_owned());
        };
        let bytes = fs_err::read(file).map_err(|err| err.to_string())?;
        match read_metadata(&bytes) {
            Ok(recovered) => {
                if let Some(info) = &recovered.generation
                    && let Some(image) = self.find_by_generation(info, &bytes)
                {
                    return Ok((image, MatchedBy::Metadata));
                }
                if let Some(image) = self.find_by_content(&bytes, None) {
                    return Ok((image, MatchedBy::Content));
                }
                let image = self.push(Image {
                    path: path_key(file),
                    shown: favorite.given.clone(),
                    seed: recovered.seed,
                    prompt: recovered.prompt.clone(),
                    settings: ImageSettings::from_recovered(&recovered, &self.catalog),
                    origin: Origin::Metadata(recovered.source),
                    run_dir: None,
                });
                Ok((image, MatchedBy::OwnMetadata))
            }
            Err(err) => match self.find_by_content(&bytes, None) {
                Some(image) => Ok((image, MatchedBy::Content)),
                None => Err(format!(
                    "no jobs log lists it, no logged image has its content, and its own metadata \
                     cannot be read ({})",
                    root_cause(&err)
                )),
            },
        }
    }

    /// A logged image made with these settings: same seed and prompt, same model and profile;
    /// among several, the one with the same steps, CFG, size and sampler, then the same bytes,
    /// then the first (same settings and seed make the same image).
    fn find_by_generation(&mut self, info: &GenerationInfo, bytes: &[u8]) -> Option<usize> {
        let found = self.by_seed_and_prompt.get(&(info.seed, info.prompt.clone()))?;
        let same_model = |image: &Image| {
            let settings = &image.settings;
            let model_matches = settings.model_id.as_deref() == Some(info.model_id.as_str())
                || settings.model.as_deref() == Some(info.model.as_str());
            model_matches && settings.profile.as_deref() == Some(info.profile.as_str())
        };
        let candidates: Vec<usize> = found
            .iter()
            .copied()
            .filter(|&index| self.images[index].origin == Origin::Log)
            .filter(|&index| same_model(&self.images[index]))
            .collect();
        let exact: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&index| {
                let settings = &self.images[index].settings;
                settings.steps == Some(info.steps)
                    && settings.cfg == Some(info.cfg)
                    && settings.width == Some(info.width)
                    && settings.height == Some(info.height)
                    && settings.scheduler.as_deref() == Some(info.sampler.cli_name())
            })
            .collect();
        let pool = if exact.is_empty() { candidates } else { exact };
        match pool.as_slice() {
            [] => None,
            [only] => Some(*only),
            several => {
                let several = several.to_vec();
                self.find_by_content(bytes, Some(&several)).or(several.first().copied())
            }
        }
    }

    /// A logged image with exactly these bytes (only files of the same size are hashed), among
    /// `within` when given.
    fn find_by_content(&mut self, bytes: &[u8], within: Option<&[usize]>) -> Option<usize> {
        let sizes = self.sizes.get_or_insert_with(|| {
            self.images
                .iter()
                .map(|image| match image.origin {
                    Origin::Log => fs_err::metadata(&image.path).ok().map(|meta| meta.len()),
                    Origin::Metadata(_) => None,
                })
                .collect()
        });
        let wanted_len = u64::try_from(bytes.len()).ok()?;
        let same_size: Vec<usize> = match within {
            Some(indices) => indices
                .iter()
                .copied()
                .filter(|&index| sizes.get(index).copied().flatten() == Some(wanted_len))
                .collect(),
            None => sizes
                .iter()
                .enumerate()
                .filter(|(_, size)| **size == Some(wanted_len))
                .map(|(index, _)| index)
                .collect(),
        };
        if same_size.is_empty() {
            return None;
        }
        let wanted: [u8; 32] = Sha256::digest(bytes).into();
        for index in same_size {
            let path = &self.images[index].path;
            let hash = *self.hashes.entry(index).or_insert_with(|| {
                fs_err::read(path).ok().map(|data| Sha256::digest(&data).into())
            });
            if hash == Some(wanted) {
                return Some(index);
            }
        }
        None
    }
}

/// The settings in an image file's own metadata (every format the metadata readers know).
fn read_metadata(bytes: &[u8]) -> Result<Recovered, MetadataError> {
    recover(bytes)
}

fn root_cause(err: &MetadataError) -> String {
    match err {
        MetadataError::InFile { source, .. } => root_cause(source),
        other => other.to_string(),
    }
}

/// What a walk below a logs folder found.
#[derive(Debug, Default)]
struct Found {
    /// Folders holding `jobs*.log`, with those files.
    logs: Vec<(PathBuf, Vec<PathBuf>)>,
    /// Folders holding `favorites.txt`.
    starred: Vec<PathBuf>,
}

#[allow(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "the lab writes these names itself, lower-case"
)]
fn is_log_name(name: &str) -> bool {
    name.starts_with("jobs") && name.ends_with(".log")
}

/// Folders holding logs or stars beneath `dir`. The folder itself must be readable; a
/// sub-folder that is not is skipped with a note.
fn walk(dir: &Path, notes: &mut Vec<String>) -> Result<Found, AnalyticsError> {
    let mut found = Found::default();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        let mut logs = Vec::new();
        let mut starred = false;
        let entries = match fs_err::read_dir(&folder) {
            Ok(entries) => entries,
            Err(err) if folder.as_path() != dir => {
                notes.push(format!("skipped a folder that cannot be read: {err}"));
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Ok(kind) = entry.file_type() else { continue };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() && is_log_name(&name) {
                logs.push(entry.path());
            } else if kind.is_file() && name == FAVORITES_FILE {
                starred = true;
            }
        }
        let key = path_key(&folder);
        if !logs.is_empty() {
            logs.sort();
            found.logs.push((key.clone(), logs));
        }
        if starred {
            found.starred.push(key);
        }
    }
    found.logs.sort();
    found.starred.sort();
    Ok(found)
}

/// One key per file: absolute, symlinks resolved when the file exists, else `.` and `..`
/// removed as written.
pub fn path_key(path: &Path) -> PathBuf {
    if let Ok(canonical) = fs_err::canonicalize(path) {
        return canonical;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_dots_and_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("a.png");
        fs_err::write(&real, b"x").expect("write");
        let via_dots = dir.path().join("sub/../a.png");
        assert_eq!(path_key(&via_dots), path_key(&real));
        let missing = dir.path().join("gone/../b.png");
        assert_eq!(path_key(&missing), path_key(dir.path()).join("b.png"));
        #[cfg(unix)]
        {
            let link = dir.path().join("link.png");
            std::os::unix::fs::symlink(&real, &link).expect("symlink");
            assert_eq!(path_key(&link), path_key(&real));
        }
    }
}
