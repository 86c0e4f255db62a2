//! Style profiles: suffixes appended to the prompt and the negative prompt, plus optional
//! defaults. They ship in `profiles.ron` at the repository root (REFERENCE §1).

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::vocab::{RAW_PROFILE, SamplerKind};

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
    #[serde(default)]
    pub default_steps: Option<u32>,
    /// Sampler used when the user left the sampler unset (CLI or GUI name, as a string).
    #[serde(default, deserialize_with = "sampler_name")]
    pub default_scheduler: Option<SamplerKind>,
    /// CFG used when the user left CFG unset.
    #[serde(default)]
    pub default_cfg: Option<f32>,
}

impl Profile {
    /// The prompt with this profile's suffix appended, without stray commas.
    pub fn apply_prompt(&self, prompt: &str) -> String {
        join_suffix(prompt, &self.prompt_suffix)
    }

    /// The negative prompt with this profile's negative suffix appended.
    pub fn apply_negative(&self, negative: &str) -> String {
        join_suffix(negative, &self.negative_suffix)
    }
}

/// Reads a sampler from its CLI or GUI name, so `profiles.ron` can say `"dpmpp_2m_karras"` or
/// `"DPM++ 2M Karras"`.
fn sampler_name<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<SamplerKind>, D::Error> {
    let name: Option<String> = Option::deserialize(de)?;
    name.map(|name| SamplerKind::parse(&name).map_err(serde::de::Error::custom)).transpose()
}

fn join_suffix(text: &str, suffix: &str) -> String {
    let text = text.trim();
    let suffix = suffix.trim();
    match (text.is_empty(), suffix.is_empty()) {
        (_, true) => text.to_owned(),
        (true, false) => suffix.to_owned(),
        (false, false) => format!("{text}, {suffix}"),
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

impl Profiles {
    /// Parses RON text; `file` names it in errors.
    ///
    /// # Errors
    /// Syntax errors carry line and column; duplicate or empty names and a missing
    /// `None (raw)` are refused.
    pub fn parse(text: &str, file: &str) -> Result<Self, ProfilesError> {
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
            // The same limits as the flags: a profile's defaults are user input too.
            if let Some(steps) = profile.default_steps
                && let Err(err) = super::validate_steps("default_steps", steps)
            {
                return Err(invalid(format!("profile {:?}: {err}", profile.name)));
            }
            if let Some(cfg) = profile.default_cfg
                && let Err(err) = super::validate_cfg("default_cfg", cfg)
            {
                return Err(invalid(format!("profile {:?}: {err}", profile.name)));
            }
            for (field, text) in [
                ("name", &profile.name),
                ("prompt_suffix", &profile.prompt_suffix),
                ("negative_suffix", &profile.negative_suffix),
            ] {
                if let Err(err) = super::validate_text(field, text) {
                    return Err(invalid(format!("profile {:?}: {err}", profile.name)));
                }
            }
        }
        if !seen.contains(&RAW_PROFILE.to_lowercase()) {
            return Err(invalid(format!("the {RAW_PROFILE:?} profile is missing")));
        }
        Ok(Self { profiles })
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
    /// when present, else the built-in copy.
    ///
    /// # Errors
    /// A file that exists but is broken is an error, never silently replaced.
    pub fn discover(path: Option<&Path>) -> Result<Self, ProfilesError> {
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
        let profile = Profile {
            name: "X".into(),
            prompt_suffix: "film grain".into(),
            negative_suffix: String::new(),
            default_steps: None,
            default_scheduler: None,
            default_cfg: None,
        };
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
}
