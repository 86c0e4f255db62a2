//! One request recovered from any tool's image metadata (PNG, JPEG or WebP): which parser
//! applies, and the result.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::containers::{self, ImageText};
use super::png_io::{IMAGELAB_KEY, PARAMETERS_KEY, PngText};
use super::{
    GenerationInfo, a1111, comfyui, fooocus, infotext, invokeai, invokeai_legacy, novelai,
};
use crate::vocab::{LoraSpec, Mode, SamplerKind};

/// Which tool wrote the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// This lab (the `imagelab` JSON chunk): exact.
    Imagelab,
    /// AUTOMATIC1111's infotext (also Forge, SD.Next and the many tools that write it).
    Automatic1111,
    /// ComfyUI's `prompt` graph.
    Comfyui,
    /// InvokeAI's `invokeai_metadata`.
    Invokeai,
    /// Fooocus (its JSON scheme or its A1111 scheme).
    Fooocus,
    /// NovelAI (`Comment` JSON with `Description`, `Software`, `Source`).
    Novelai,
}

impl Source {
    /// The tool's name as people write it.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Imagelab => "imagelab",
            Self::Automatic1111 => "AUTOMATIC1111",
            Self::Comfyui => "ComfyUI",
            Self::Invokeai => "InvokeAI",
            Self::Fooocus => "Fooocus",
            Self::Novelai => "NovelAI",
        }
    }
}

/// The settings recovered from an image, as one request (REFERENCE §8 `imagelab info`).
///
/// Fields another tool did not write are `None` (numbers) or empty (text); what could not be
/// mapped to our settings is in `extra` and explained in `warnings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovered {
    /// Which tool wrote the metadata.
    pub source: Source,
    /// Prompt as the tool encoded it.
    pub prompt: String,
    /// Negative prompt (empty when none).
    pub negative: String,
    /// Seed.
    pub seed: Option<u64>,
    /// Denoising steps.
    pub steps: Option<u32>,
    /// CFG scale.
    pub cfg: Option<f32>,
    /// Width in pixels.
    pub width: Option<u32>,
    /// Height in pixels.
    pub height: Option<u32>,
    /// Our sampler, when the tool's sampler has an equivalent here.
    pub sampler: Option<SamplerKind>,
    /// The sampler's name as the tool wrote it.
    pub sampler_name: String,
    /// The schedule type / scheduler as the tool wrote it (empty when none).
    pub scheduler: String,
    /// Model (checkpoint) name as the tool wrote it.
    pub model: String,
    /// img2img strength (`None` for txt2img).
    pub strength: Option<f32>,
    /// Our style profile (our images only).
    pub profile: Option<String>,
    /// LoRA adapters with their weights, where the tool records them.
    pub loras: Vec<LoraSpec>,
    /// Our complete request, for our own images: re-running it reproduces the image exactly.
    pub generation: Option<GenerationInfo>,
    /// Every other setting the tool wrote, by its own key.
    pub extra: BTreeMap<String, String>,
    /// What could not be read or mapped, and what a re-run here will do differently.
    pub warnings: Vec<String>,
}

impl Recovered {
    /// An empty record for a source; parsers fill it in.
    pub fn new(source: Source) -> Self {
        Self {
            source,
            prompt: String::new(),
            negative: String::new(),
            seed: None,
            steps: None,
            cfg: None,
            width: None,
            height: None,
            sampler: None,
            sampler_name: String::new(),
            scheduler: String::new(),
            model: String::new(),
            strength: None,
            profile: None,
            loras: Vec::new(),
            generation: None,
            extra: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// txt2img, or img2img when a strength was recovered.
    pub fn mode(&self) -> Mode {
        if self.strength.is_some() { Mode::Img2img } else { Mode::Txt2img }
    }

    /// Everything from our own JSON chunk (exact).
    pub fn from_generation_info(info: GenerationInfo) -> Self {
        let (sampler_name, schedule) = super::infotext::a1111_sampler_fields(info.sampler);
        let mut recovered = Self::new(Source::Imagelab);
        recovered.prompt.clone_from(&info.prompt);
        recovered.negative.clone_from(&info.negative);
        recovered.seed = Some(info.seed);
        recovered.steps = Some(info.steps);
        recovered.cfg = Some(info.cfg);
        recovered.width = Some(info.width);
        recovered.height = Some(info.height);
        recovered.sampler = Some(info.sampler);
        sampler_name.clone_into(&mut recovered.sampler_name);
        schedule.unwrap_or_default().clone_into(&mut recovered.scheduler);
        recovered.model =
            if info.model.is_empty() { info.model_id.clone() } else { info.model.clone() };
        recovered.strength = if info.mode == Mode::Img2img { info.strength } else { None };
        recovered.profile = Some(info.profile.clone());
        recovered.loras.clone_from(&info.loras);
        recovered.generation = Some(info);
        recovered
    }

    pub(crate) fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }
}

/// Why no settings could be recovered.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// Not a PNG, JPEG or WebP.
    #[error("{0}; settings are read from PNG, JPEG and WebP metadata")]
    UnknownFormat(containers::ContainerError),
    /// An image without any metadata we know.
    #[error("no generation metadata found (texts found: {keywords}){damage}")]
    NoMetadata {
        /// The keywords of the texts that are there (PNG chunks, EXIF/XMP fields), or `none`.
        keywords: String,
        /// What was damaged in the file (`; …` per problem), or empty: a truncated file may
        /// have lost its metadata.
        damage: String,
    },
    /// The file is larger than any image this reads.
    #[error("the file is {bytes} bytes, over the {MAX_IMAGE_FILE_BYTES}-byte limit: {path}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The metadata is there but could not be read.
    #[error("the {chunk:?} chunk cannot be read: {reason}")]
    Unreadable {
        /// The chunk's keyword.
        chunk: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be read.
    #[error("cannot read the image: {source}: {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Recovery from a file failed.
    #[error("{source}: {path}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: Box<MetadataError>,
    },
}

/// Largest file [`recover_file`] reads (an SDXL PNG is a few MB).
pub const MAX_IMAGE_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// Recovers the settings from a PNG, JPEG or WebP file's bytes, whichever tool wrote them.
///
/// The container's texts come from [`containers::read_image_text`] (PNG text chunks, EXIF
/// `UserComment`, XMP, stealth bits), named as PNG chunks name them. Order: our JSON (exact);
/// InvokeAI's `invokeai_metadata`; ComfyUI's `prompt` graph; InvokeAI 2.x's `sd-metadata`, then
/// its `Dream` line; NovelAI's `Comment`; `parameters` as Fooocus JSON, Fooocus' A1111 scheme,
/// or A1111 infotext. When a better source is broken, the next one is used and a warning says
/// so.
///
/// # Errors
/// Not a PNG, JPEG or WebP; no known metadata; or the only metadata there is unreadable.
pub fn recover(bytes: &[u8]) -> Result<Recovered, MetadataError> {
    let text = containers::read_image_text(bytes).map_err(MetadataError::UnknownFormat)?;
    recover_from_image_text(&text)
}

/// Reads a file and recovers its settings (see [`recover`]).
///
/// # Errors
/// The file cannot be read or is over [`MAX_IMAGE_FILE_BYTES`], or [`recover`] fails; the
/// error names the file.
pub fn recover_file(path: &Path) -> Result<Recovered, MetadataError> {
    let io_error = |source| MetadataError::Io { path: path.to_owned(), source };
    let bytes = fs_err::metadata(path).map_err(io_error)?.len();
    if bytes > MAX_IMAGE_FILE_BYTES {
        return Err(MetadataError::TooLarge { path: path.to_owned(), bytes });
    }
    let bytes = fs_err::read(path).map_err(io_error)?;
    recover(&bytes)
        .map_err(|err| MetadataError::InFile { path: path.to_owned(), source: Box::new(err) })
}

/// Recovers the settings from an image's texts (see [`recover`]); the image size stands in
/// where a tool records none (NovelAI, as A1111 reads it).
///
/// # Errors
/// No known metadata, or the only metadata there is unreadable.
pub fn recover_from_image_text(text: &ImageText) -> Result<Recovered, MetadataError> {
    recover_with_size(&text.to_png_text(), text.size)
}

/// Recovers the settings from already decoded PNG text chunks (see [`recover`]).
///
/// # Errors
/// No known metadata, or the only metadata there is unreadable.
pub fn recover_from_chunks(text: &PngText) -> Result<Recovered, MetadataError> {
    recover_with_size(text, None)
}

fn recover_with_size(
    text: &PngText,
    image_size: Option<(u32, u32)>,
) -> Result<Recovered, MetadataError> {
    let mut pending_warnings = text.warnings.clone();
    let mut last_error = None;

    if let Some(json) = text.get(IMAGELAB_KEY) {
        match parse_generation_info(json) {
            Ok(info) => return Ok(finish(Recovered::from_generation_info(info), pending_warnings)),
            Err(err) => {
                pending_warnings
                    .push(format!("imagelab chunk is not valid ({err}); read the next source"));
                last_error = Some(unreadable(IMAGELAB_KEY, err));
            }
        }
    }
    if let Some(json) = text.get(invokeai::METADATA_KEY) {
        match invokeai::recover_from_metadata(json) {
            Ok(found) => return Ok(finish(found, pending_warnings)),
            Err(reason) => {
                pending_warnings.push(format!("invokeai_metadata unreadable: {reason}"));
                last_error = Some(unreadable(invokeai::METADATA_KEY, reason));
            }
        }
    }
    if let Some(json) = text.get(comfyui::PROMPT_KEY) {
        let found = comfyui::recover_from_prompt(json).and_then(|found| {
            if found.prompt.is_empty() && found.seed.is_none() {
                Err(format!("yields neither a prompt nor a seed ({})", found.warnings.join("; ")))
            } else {
                Ok(found)
            }
        });
        match found {
            Ok(found) => return Ok(finish(found, pending_warnings)),
            Err(reason) => {
                pending_warnings.push(format!("ComfyUI prompt graph unreadable: {reason}"));
                last_error = Some(unreadable(comfyui::PROMPT_KEY, reason));
            }
        }
    }
    if let Some(found) = recover_legacy(text, image_size, &mut pending_warnings, &mut last_error) {
        return Ok(finish(found, pending_warnings));
    }
    if let Some(parameters) = text.get(PARAMETERS_KEY) {
        let scheme = text.get(fooocus::SCHEME_KEY);
        // Infotext always parses (at worst into a prompt), so `parameters` never fails: JSON
        // that is not Fooocus' object is read as infotext with a warning.
        let json =
            fooocus::looks_like_json(parameters).then(|| fooocus::recover_from_json(parameters));
        let found = match json {
            Some(Ok(found)) => found,
            other => {
                if let Some(Err(reason)) = other {
                    pending_warnings.push(format!(
                        "parameters looks like Fooocus JSON but is not ({reason}); read as A1111 \
                         infotext"
                    ));
                }
                let parsed = infotext::parse_generation_parameters(parameters);
                if scheme.is_some() || fooocus::is_fooocus_infotext(&parsed) {
                    let mut found = a1111::recover_from_parsed(&parsed, Source::Fooocus);
                    fooocus::note_a1111_scheme(&mut found);
                    found
                } else {
                    a1111::recover_from_parsed(&parsed, Source::Automatic1111)
                }
            }
        };
        return Ok(finish(found, pending_warnings));
    }
    Err(last_error.unwrap_or_else(|| {
        let keywords = text.keywords();
        let damage = text.warnings.iter().take(3).fold(String::new(), |mut out, warning| {
            let _ = write!(out, "; {warning}");
            out
        });
        MetadataError::NoMetadata {
            keywords: if keywords.is_empty() { "none".to_owned() } else { keywords.join(", ") },
            damage,
        }
    }))
}

/// InvokeAI 2.x (`sd-metadata`, then `Dream`) and NovelAI (`Comment` with `Software` or
/// `Source`); A1111's own reader prefers NovelAI's chunks over `parameters`, and so does this.
fn recover_legacy(
    text: &PngText,
    image_size: Option<(u32, u32)>,
    pending_warnings: &mut Vec<String>,
    last_error: &mut Option<MetadataError>,
) -> Option<Recovered> {
    let mut attempt = |key: &str, result: Result<Recovered, String>| match result {
        Ok(found) => Some(found),
        Err(reason) => {
            pending_warnings.push(format!("{key} unreadable: {reason}"));
            *last_error = Some(unreadable(key, reason));
            None
        }
    };
    if let Some(json) = text.get(invokeai_legacy::SD_METADATA_KEY)
        && let Some(found) = attempt(
            invokeai_legacy::SD_METADATA_KEY,
            invokeai_legacy::recover_from_sd_metadata(json),
        )
    {
        return Some(found);
    }
    if let Some(dream) = text.get(invokeai_legacy::DREAM_KEY)
        && let Some(found) =
            attempt(invokeai_legacy::DREAM_KEY, invokeai_legacy::recover_from_dream(dream))
    {
        return Some(found);
    }
    let comment = text.get(novelai::COMMENT_KEY);
    if let Some(comment) = comment
        && novelai::is_novelai(
            text.get(novelai::SOFTWARE_KEY),
            Some(comment),
            text.get(novelai::SOURCE_KEY),
        )
    {
        let found = novelai::recover(
            comment,
            text.get(novelai::DESCRIPTION_KEY),
            text.get(novelai::SOURCE_KEY),
            image_size,
        );
        return attempt(novelai::COMMENT_KEY, found);
    }
    None
}

/// Our JSON chunk. Every field has a default, so an object must at least name the seed and the
/// sampler to count as ours: anything else in a chunk called `imagelab` is not trusted.
fn parse_generation_info(json: &str) -> Result<GenerationInfo, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|err| err.to_string())?;
    if !(value.get("seed").is_some() && value.get("sampler").is_some()) {
        return Err("not a generation record (no seed and sampler)".to_owned());
    }
    serde_json::from_value(value).map_err(|err| err.to_string())
}

fn unreadable(chunk: &str, reason: String) -> MetadataError {
    MetadataError::Unreadable { chunk: chunk.to_owned(), reason }
}

fn finish(mut found: Recovered, mut earlier: Vec<String>) -> Recovered {
    earlier.append(&mut found.warnings);
    found.warnings = earlier;
    found
}

/// The recovered settings as text for people (`imagelab info FILE`).
pub fn format_human(recovered: &Recovered) -> String {
    fn or_unknown<T: ToString>(value: Option<T>) -> String {
        value.map_or_else(|| "?".to_owned(), |v| v.to_string())
    }
    let mut out = String::new();
    let exact = if recovered.generation.is_some() { " (exact: --from reproduces it)" } else { "" };
    let _ = writeln!(out, "Source:          {}{exact}", recovered.source.display_name());
    let _ = writeln!(out, "Prompt:          {}", indent_continuation(&recovered.prompt));
    if !recovered.negative.is_empty() {
        let _ = writeln!(out, "Negative prompt: {}", indent_continuation(&recovered.negative));
    }
    if !recovered.model.is_empty() {
        let _ = writeln!(out, "Model:           {}", recovered.model);
    }
    let sampler = match recovered.sampler {
        Some(kind) => format!("{} ({})", kind.gui_name(), kind.cli_name()),
        None => "no equivalent here".to_owned(),
    };
    let mut written = recovered.sampler_name.clone();
    if !recovered.scheduler.is_empty() {
        let _ = write!(written, " / {}", recovered.scheduler);
    }
    if written.is_empty() {
        let _ = writeln!(out, "Sampler:         {sampler}");
    } else {
        let _ = writeln!(out, "Sampler:         {sampler}  [written: {written}]");
    }
    let size = match (recovered.width, recovered.height) {
        (Some(w), Some(h)) => format!("{w}x{h}"),
        (w, h) => format!("{}x{}", or_unknown(w), or_unknown(h)),
    };
    let _ = writeln!(
        out,
        "Steps: {}  CFG: {}  Seed: {}  Size: {size}",
        or_unknown(recovered.steps),
        or_unknown(recovered.cfg),
        or_unknown(recovered.seed),
    );
    if let Some(strength) = recovered.strength {
        let _ = writeln!(out, "Mode:            img2img, strength {strength}");
    }
    if let Some(profile) = &recovered.profile {
        let _ = writeln!(out, "Style profile:   {profile}");
    }
    for lora in &recovered.loras {
        let _ = writeln!(out, "LoRA:            {} (weight {})", lora.source, lora.weight);
    }
    if !recovered.extra.is_empty() {
        let _ = writeln!(out, "Other settings:");
        for (key, value) in &recovered.extra {
            let _ = writeln!(out, "  {key}: {}", shorten(value, 200));
        }
    }
    if !recovered.warnings.is_empty() {
        let _ = writeln!(out, "Warnings:");
        for warning in &recovered.warnings {
            let _ = writeln!(out, "  - {warning}");
        }
    }
    out
}

fn indent_continuation(text: &str) -> String {
    text.replace('\n', "\n                 ")
}

fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let head: String = text.chars().take(max_chars).collect();
    format!("{head}… ({} characters)", text.chars().count())
}
