//! Style profiles: suffixes appended to the prompt and the negative prompt, plus optional
//! defaults. They ship in `profiles.ron` at the repository root (REFERENCE §1); styles imported
//! from AUTOMATIC1111 and Fooocus (`imagelab profiles import`) live in a user profiles file
//! beside it, merged after the shipped ones.
//!
//! A suffix may say where the prompt goes with `{prompt}` (A1111's rule, which without a
//! placeholder is the same `, suffix` join as ours); imported Fooocus styles keep Fooocus' rule.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::storage::styles::{self, ImportedStyle, StyleSemantics, StylesError, StylesFormat};
use crate::vocab::{RAW_PROFILE, SamplerKind};

/// The user profiles file's name, beside the shipped `profiles.ron`.
pub const USER_PROFILES_FILE: &str = "profiles.user.ron";

/// One style profile as written in `profiles.ron`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The name users pick, e.g. `Cinematic`.
    pub name: String,
    /// Appended to the prompt as `, <suffix>`.
    #[serde(default)]
    pub prompt_suffix: String,
    /// Appended to the negative prompt as `, <suffix>`.
    #[serde(default)]
    pub negative_suffix: String,
    /// Steps used when the user left steps unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_steps: Option<u32>,
    /// Sampler used when the user left the sampler unset (CLI or GUI name, as a string).
    #[serde(
        default,
        deserialize_with = "sampler_name",
        serialize_with = "sampler_cli_name",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_scheduler: Option<SamplerKind>,
    /// CFG used when the user left CFG unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_cfg: Option<f32>,
    /// Whose rules place the prompt: A1111's (the default; also ours) or Fooocus'.
    #[serde(default, skip_serializing_if = "is_a1111")]
    pub rules: StyleSemantics,
    /// Where an imported style came from (`A1111 styles.csv: styles.csv`); `None` for the
    /// lab's own profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_a1111(rules: &StyleSemantics) -> bool {
    *rules == StyleSemantics::A1111
}

impl Profile {
    /// A profile with only a name and suffixes (no defaults, A1111 rules, not imported).
    pub fn new(name: &str, prompt_suffix: &str, negative_suffix: &str) -> Self {
        Self {
            name: name.to_owned(),
            prompt_suffix: prompt_suffix.to_owned(),
            negative_suffix: negative_suffix.to_owned(),
            default_steps: None,
            default_scheduler: None,
            default_cfg: None,
            rules: StyleSemantics::A1111,
            imported_from: None,
        }
    }

    /// The prompt with this profile applied: `{prompt}` in the suffix marks where the prompt
    /// goes, else the suffix is appended as `, suffix` without stray commas (A1111's
    /// `merge_prompts`); imported Fooocus styles follow Fooocus (see [`styles`]).
    pub fn apply_prompt(&self, prompt: &str) -> String {
        match self.rules {
            StyleSemantics::A1111 => styles::a1111_merge(&self.prompt_suffix, prompt),
            StyleSemantics::Fooocus => {
                styles::fooocus_apply(&self.prompt_suffix, &self.negative_suffix, prompt, "").0
            }
        }
    }

    /// The negative prompt with this profile's negative suffix applied (same rules).
    pub fn apply_negative(&self, negative: &str) -> String {
        match self.rules {
            StyleSemantics::A1111 => styles::a1111_merge(&self.negative_suffix, negative),
            StyleSemantics::Fooocus => {
                styles::fooocus_apply(&self.prompt_suffix, &self.negative_suffix, "", negative).1
            }
        }
    }

    /// Whether this profile came from another tool's styles file.
    pub fn is_imported(&self) -> bool {
        self.imported_from.is_some()
    }
}

/// Reads a sampler from its CLI or GUI name, so `profiles.ron` can say `"dpmpp_2m_karras"` or
/// `"DPM++ 2M Karras"`.
fn sampler_name<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<SamplerKind>, D::Error> {
    let name: Option<String> = Option::deserialize(de)?;
    name.map(|name| SamplerKind::parse(&name).map_err(serde::de::Error::custom)).transpose()
}

/// Writes the sampler by its CLI name, which [`sampler_name`] reads back.
#[allow(
    clippy::ref_option,
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's serialize_with passes the field by reference"
)]
fn sampler_cli_name<S: serde::Serializer>(
    sampler: &Option<SamplerKind>,
    out: S,
) -> Result<S::Ok, S::Error> {
    match sampler {
        Some(kind) => out.serialize_some(kind.cli_name()),
        None => out.serialize_none(),
    }
}

/// Why a profiles file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfilesError {
    /// The file could not be read.
    #[error("cannot read style profiles: {0}")]
    Io(#[from] std::io::Error),
    /// The RON text is malformed; line and column are 1-based.
    #[error("style profiles {file}:{line}:{column}: {message}")]
    Syntax {
        /// The file (or `<built-in>`).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A styles file to import cannot be read as A1111's or Fooocus'.
    #[error("styles file {file}: {source}")]
    Styles {
        /// The file.
        file: String,
        /// What is wrong with it.
        source: StylesError,
    },
    /// The content is well-formed but not usable.
    #[error("style profiles {file}: {message}")]
    Invalid {
        /// The file (or `<built-in>`).
        file: String,
        /// What is wrong.
        message: String,
    },
}

/// The ordered set of profiles the lab offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Profiles {
    profiles: Vec<Profile>,
}

/// The profiles file shipped with the lab, compiled in so the binary works from any folder.
pub const BUILTIN_PROFILES_RON: &str = include_str!("../../profiles.ron");

/// Parses a RON list of profiles; `file` names it in errors. Names must be non-empty and unique
/// (case-insensitively); defaults must be in range.
fn parse_list(text: &str, file: &str) -> Result<Vec<Profile>, ProfilesError> {
    let profiles: Vec<Profile> = ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
        .from_str(text)
        .map_err(|err| ProfilesError::Syntax {
            file: file.to_owned(),
            line: err.span.start.line,
            column: err.span.start.col,
            message: err.code.to_string(),
        })?;
    let invalid = |message: String| ProfilesError::Invalid { file: file.to_owned(), message };
    let mut seen = std::collections::HashSet::new();
    for profile in &profiles {
        if profile.name.trim().is_empty() {
            return Err(invalid("a profile has an empty name".into()));
        }
        if !seen.insert(profile.name.to_lowercase()) {
            return Err(invalid(format!("profile {:?} is defined twice", profile.name)));
        }
        if profile.default_steps == Some(0) {
            return Err(invalid(format!("profile {:?}: default_steps is 0", profile.name)));
        }
        if let Some(cfg) = profile.default_cfg
            && !(cfg.is_finite() && cfg >= 0.0)
        {
            return Err(invalid(format!(
                "profile {:?}: default_cfg {cfg} is not ≥ 0",
                profile.name
            )));
        }
    }
    Ok(profiles)
}

/// What `imagelab profiles import` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The styles file's format.
    pub format: StylesFormat,
    /// The user profiles file written.
    pub user_file: PathBuf,
    /// Styles new to the user file, in the file's order.
    pub added: Vec<String>,
    /// Styles that replaced a same-named imported style.
    pub updated: Vec<String>,
    /// Styles whose name is also a shipped profile's: the imported one is used.
    pub overriding: Vec<String>,
    /// Rows skipped, duplicates, repairs, refused names.
    pub warnings: Vec<String>,
}

/// The header of the user profiles file.
const USER_FILE_HEADER: &str = "// Style profiles imported by `imagelab profiles import` (A1111 styles.csv, Fooocus style\n\
// JSON), merged after profiles.ron: a profile named like a shipped one replaces it. Same format\n\
// as profiles.ron, plus `rules` (A1111 or Fooocus: how `{prompt}` places the prompt) and\n\
// `imported_from`. Edit freely; a broken file is reported, never overwritten.\n";

impl ImportedStyle {
    /// This style as a profile of ours.
    fn to_profile(&self, origin: &str) -> Profile {
        Profile {
            rules: self.semantics,
            imported_from: Some(origin.to_owned()),
            ..Profile::new(&self.name, &self.prompt, &self.negative)
        }
    }
}

/// Imports the styles of `styles_file` (A1111 `styles.csv` or Fooocus style JSON) into the user
/// profiles file `user_file`, creating it or merging into it: a style named like one already
/// imported replaces it, new ones are appended. `shipped` are the lab's own profiles (to say
/// which imported names take their place). The file is written whole and renamed into place.
///
/// # Errors
/// The styles file is unreadable, too large or invalid; the user file exists but is broken
/// (it is never overwritten then); the write fails. Nothing is written on error.
pub fn import_styles(
    styles_file: &Path,
    user_file: &Path,
    shipped: &Profiles,
) -> Result<ImportReport, ProfilesError> {
    let file_name = styles_file.display().to_string();
    let size = fs_err::metadata(styles_file)?.len();
    if size > styles::MAX_STYLES_FILE_BYTES as u64 {
        return Err(ProfilesError::Styles {
            file: file_name,
            source: StylesError::TooLarge(usize::try_from(size).unwrap_or(usize::MAX)),
        });
    }
    let bytes = fs_err::read(styles_file)?;
    let parsed = styles::parse_styles(&bytes)
        .map_err(|source| ProfilesError::Styles { file: file_name.clone(), source })?;
    let mut existing = if user_file.is_file() {
        let text = fs_err::read_to_string(user_file)?;
        parse_list(&text, &user_file.display().to_string())?
    } else {
        Vec::new()
    };
    let tool = match parsed.format {
        StylesFormat::A1111Csv => "A1111 styles.csv",
        StylesFormat::FooocusJson => "Fooocus style JSON",
    };
    let short_name = styles_file
        .file_name()
        .map_or_else(|| file_name.clone(), |name| name.to_string_lossy().into_owned());
    let origin = format!("{tool}: {short_name}");
    let mut report = ImportReport {
        format: parsed.format,
        user_file: user_file.to_owned(),
        added: Vec::new(),
        updated: Vec::new(),
        overriding: Vec::new(),
        warnings: parsed.warnings,
    };
    for style in &parsed.styles {
        if style.name.trim().eq_ignore_ascii_case(RAW_PROFILE) {
            report.warnings.push(format!(
                "style {:?} is not imported: {RAW_PROFILE:?} always leaves the prompt untouched",
                style.name
            ));
            continue;
        }
        let profile = style.to_profile(&origin);
        if let Some(slot) = existing.iter_mut().find(|p| p.name.eq_ignore_ascii_case(&style.name)) {
            *slot = profile;
            report.updated.push(style.name.clone());
        } else {
            existing.push(profile);
            report.added.push(style.name.clone());
        }
        if shipped.get(&style.name).is_some_and(|p| !p.is_imported()) {
            report.overriding.push(style.name.clone());
        }
    }
    write_user_file(user_file, &existing)?;
    Ok(report)
}

/// Writes the user profiles file whole, through a temporary file renamed into place.
fn write_user_file(path: &Path, profiles: &[Profile]) -> Result<(), ProfilesError> {
    let body =
        ron::ser::to_string_pretty(profiles, ron::ser::PrettyConfig::default()).map_err(|err| {
            ProfilesError::Invalid {
                file: path.display().to_string(),
                message: format!("cannot be written: {err}"),
            }
        })?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs_err::create_dir_all(dir)?;
    }
    let temp = path.with_extension("ron.tmp");
    fs_err::write(&temp, format!("{USER_FILE_HEADER}{body}\n"))?;
    fs_err::rename(&temp, path)?;
    Ok(())
}

impl Profiles {
    /// Parses RON text; `file` names it in errors.
    ///
    /// # Errors
    /// Syntax errors carry line and column; duplicate or empty names and a missing
    /// `None (raw)` are refused.
    pub fn parse(text: &str, file: &str) -> Result<Self, ProfilesError> {
        let profiles = parse_list(text, file)?;
        if !profiles.iter().any(|p| p.name.eq_ignore_ascii_case(RAW_PROFILE)) {
            return Err(ProfilesError::Invalid {
                file: file.to_owned(),
                message: format!("the {RAW_PROFILE:?} profile is missing"),
            });
        }
        Ok(Self { profiles })
    }

    /// Merges a user profiles file's list: a profile named like one here (case-insensitively)
    /// replaces it in place, the others follow in their order.
    ///
    /// # Errors
    /// The list redefines `None (raw)`.
    pub fn merge_user(&mut self, user: Vec<Profile>, file: &str) -> Result<(), ProfilesError> {
        for profile in user {
            if profile.name.trim().eq_ignore_ascii_case(RAW_PROFILE) {
                return Err(ProfilesError::Invalid {
                    file: file.to_owned(),
                    message: format!("{RAW_PROFILE:?} cannot be redefined"),
                });
            }
            match self.profiles.iter_mut().find(|p| p.name.eq_ignore_ascii_case(&profile.name)) {
                Some(slot) => *slot = profile,
                None => self.profiles.push(profile),
            }
        }
        Ok(())
    }

    /// Reads a profiles file.
    ///
    /// # Errors
    /// See [`Profiles::parse`]; I/O errors name the path.
    pub fn load(path: &Path) -> Result<Self, ProfilesError> {
        let text = fs_err::read_to_string(path)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The profiles compiled into the binary (the repository's `profiles.ron`).
    ///
    /// # Panics
    /// Only if the shipped file is broken, which a unit test rules out.
    #[allow(clippy::expect_used, reason = "the shipped file is checked by a unit test")]
    pub fn builtin() -> Self {
        Self::parse(BUILTIN_PROFILES_RON, "profiles.ron (built in)")
            .expect("the shipped profiles.ron is valid (tested)")
    }

    /// Loads `path` when given (the front end's `IMAGELAB_PROFILES`), else `./profiles.ron`
    /// when present, else the built-in copy; then merges the user profiles file at `user_path`
    /// when it exists (see [`Profiles::merge_user`]).
    ///
    /// # Errors
    /// A file that exists but is broken is an error, never silently replaced.
    pub fn discover(path: Option<&Path>, user_path: Option<&Path>) -> Result<Self, ProfilesError> {
        let mut profiles = Self::shipped(path)?;
        if let Some(user) = user_path.filter(|user| user.is_file()) {
            let file = user.display().to_string();
            let list = parse_list(&fs_err::read_to_string(user)?, &file)?;
            profiles.merge_user(list, &file)?;
        }
        Ok(profiles)
    }

    /// The lab's own profiles: `path`, else `./profiles.ron`, else the built-in copy.
    ///
    /// # Errors
    /// A file that exists but is broken.
    pub fn shipped(path: Option<&Path>) -> Result<Self, ProfilesError> {
        if let Some(path) = path {
            return Self::load(path);
        }
        let local = Path::new("profiles.ron");
        if local.is_file() {
            return Self::load(local);
        }
        Ok(Self::builtin())
    }

    /// All profiles in file order.
    pub fn all(&self) -> &[Profile] {
        &self.profiles
    }

    /// Looks a profile up by name, case-insensitively.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        let name = name.trim();
        self.profiles.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Every profile name, for error messages and menus.
    pub fn names(&self) -> Vec<&str> {
        self.profiles.iter().map(|p| p.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_has_every_reference_profile() {
        let profiles = Profiles::builtin();
        for name in [
            "Photoreal",
            "Cinematic",
            "Anime / Vibrant",
            "Soft Illustration",
            "R-Rated",
            "Pencil Sketch",
            "Black & White",
            "35mm Film",
            "Rotoscoping",
            "Watercolor",
            "Hyper-Realistic Portrait",
            "ISOTOPIA Sci-Fi Blueprint",
            "Dark Fantasy / Grimdark",
            "Pixar-ish Soft CG",
            "Pixel Art / Isometric Game",
            "Low-Poly 3D / PS1",
            "Product Render / Industrial",
            "Isometric Tech Diagram",
            "Retro Comic / Halftone",
            "Vaporwave / Synthwave",
            "Children's Book Illustration",
            "Ink & Screentone Manga",
            "Analog Horror / VHS",
            "Architectural Visualization",
            "Tim Burton",
            "Frank Frazetta",
            "Ralph Bakshi",
            "H.R. Giger",
            RAW_PROFILE,
        ] {
            let profile = profiles.get(name).unwrap_or_else(|| panic!("missing profile {name}"));
            if name != RAW_PROFILE {
                assert!(!profile.prompt_suffix.is_empty(), "{name} has no prompt suffix");
                assert!(!profile.negative_suffix.is_empty(), "{name} has no negative suffix");
            }
        }
        let giger = profiles.get("H.R. Giger").expect("giger");
        assert_eq!(
            giger.prompt_suffix,
            "biomechanical surrealism, organic machinery, alien architecture, dark monochrome tones, intricate details"
        );
    }

    #[test]
    fn suffixes_join_without_stray_commas() {
        let profile = Profile::new("X", "film grain", "");
        assert_eq!(profile.apply_prompt("a cat"), "a cat, film grain");
        assert_eq!(profile.apply_prompt("  "), "film grain");
        assert_eq!(profile.apply_negative("blurry"), "blurry");
        assert_eq!(profile.apply_negative(""), "");
    }

    #[test]
    fn broken_file_reports_line_and_column() {
        let text = "[\n  (name: \"None (raw)\"),\n  (name: \"A\", prompt_suffix: 12),\n]";
        match Profiles::parse(text, "p.ron") {
            Err(ProfilesError::Syntax { line, column, .. }) => {
                assert_eq!(line, 3);
                assert!(column > 1, "column {column}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn duplicate_and_missing_raw_are_refused() {
        let dup = "[(name: \"None (raw)\"), (name: \"A\"), (name: \"a\")]";
        assert!(matches!(Profiles::parse(dup, "p"), Err(ProfilesError::Invalid { .. })));
        let no_raw = "[(name: \"A\")]";
        assert!(matches!(Profiles::parse(no_raw, "p"), Err(ProfilesError::Invalid { .. })));
    }

    #[test]
    fn placeholders_and_fooocus_rules() {
        let a1111 = Profile::new("A", "cinematic, {prompt}, grain", "{prompt}, cartoon");
        assert_eq!(a1111.apply_prompt("a fox"), "cinematic, a fox, grain");
        assert_eq!(a1111.apply_negative("blurry"), "blurry, cartoon");
        let fooocus = Profile {
            rules: StyleSemantics::Fooocus,
            ..Profile::new("F", "film still {prompt}\nvignette", "anime")
        };
        assert_eq!(fooocus.apply_prompt("a fox"), "film still a fox, vignette");
        // Fooocus puts the style's negative first.
        assert_eq!(fooocus.apply_negative("blurry"), "anime, blurry");
    }

    #[test]
    fn import_merges_into_the_user_file_and_discover_reads_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = dir.path().join("styles.csv");
        fs_err::write(
            &csv,
            "name,prompt,negative_prompt\nCinematic,\"epic {prompt}\",cgi\nNew,x,\n",
        )
        .expect("csv");
        let user = dir.path().join("conf").join(USER_PROFILES_FILE);
        let shipped = Profiles::builtin();
        let report = import_styles(&csv, &user, &shipped).expect("imports");
        assert_eq!(report.format, StylesFormat::A1111Csv);
        assert_eq!(report.added, vec!["Cinematic", "New"]);
        assert_eq!(report.overriding, vec!["Cinematic"]);
        let merged = Profiles::discover(None, Some(&user)).expect("merged");
        let cinematic = merged.get("Cinematic").expect("imported replaces shipped");
        assert_eq!(cinematic.apply_prompt("a fox"), "epic a fox");
        assert!(cinematic.is_imported());
        assert_eq!(merged.all().len(), shipped.all().len() + 1);
        // Importing again updates instead of duplicating; a Fooocus file adds its own.
        let json = dir.path().join("fooocus.json");
        fs_err::write(
            &json,
            r#"[{"name": "sai-anime", "prompt": "anime {prompt}"},
            {"name": "None (raw)", "prompt": "x"}]"#,
        )
        .expect("json");
        let again = import_styles(&csv, &user, &shipped).expect("again");
        assert_eq!(again.updated, vec!["Cinematic", "New"]);
        let fooocus = import_styles(&json, &user, &shipped).expect("fooocus");
        assert_eq!(fooocus.added, vec!["SAI Anime"]);
        assert!(
            fooocus.warnings.iter().any(|w| w.contains("None (raw)")),
            "{:?}",
            fooocus.warnings
        );
        let merged = Profiles::discover(None, Some(&user)).expect("merged");
        assert_eq!(merged.get("SAI Anime").map(|p| p.rules), Some(StyleSemantics::Fooocus));
        assert_eq!(merged.all().len(), shipped.all().len() + 2);
    }

    #[test]
    fn broken_inputs_write_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = dir.path().join(USER_PROFILES_FILE);
        let bad = dir.path().join("bad.csv");
        fs_err::write(&bad, "title,prompt\na,b\n").expect("csv");
        let err = import_styles(&bad, &user, &Profiles::builtin()).expect_err("no name column");
        assert!(err.to_string().contains("bad.csv") && err.to_string().contains("name"), "{err}");
        assert!(!user.exists());
        // A broken user file is reported and left alone.
        fs_err::write(&user, "[ (name: ").expect("broken");
        let good = dir.path().join("good.csv");
        fs_err::write(&good, "name,prompt\nA,b\n").expect("csv");
        let err = import_styles(&good, &user, &Profiles::builtin()).expect_err("broken user file");
        assert!(matches!(err, ProfilesError::Syntax { .. }), "{err}");
        assert_eq!(fs_err::read_to_string(&user).expect("kept"), "[ (name: ");
        assert!(Profiles::discover(None, Some(&user)).is_err());
    }
}
