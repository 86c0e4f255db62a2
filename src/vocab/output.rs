//! The output image format and its settings: a save choice every front end offers
//! (`--format png|jpeg|webp`, `--quality`, `--lossless`, the window's format menu).

use serde::{Deserialize, Serialize};

use super::VocabError;

/// Default quality of lossy JPEG/WebP output.
pub const DEFAULT_QUALITY: u8 = 90;

/// The file format of saved images.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Lossless PNG (the default).
    #[default]
    Png,
    /// Baseline JPEG at a quality.
    Jpeg,
    /// WebP, lossy at a quality or lossless.
    Webp,
}

impl OutputFormat {
    /// Every format, in menu order.
    pub const ALL: [Self; 3] = [Self::Png, Self::Jpeg, Self::Webp];

    /// The CLI name (`png`, `jpeg`, `webp`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Webp => "webp",
        }
    }

    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }

    /// The name people read (`PNG`, `JPEG`, `WebP`).
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Png => "PNG",
            Self::Jpeg => "JPEG",
            Self::Webp => "WebP",
        }
    }

    /// Reads a CLI name (`jpg` is accepted for JPEG).
    ///
    /// # Errors
    /// [`VocabError::Unknown`] listing the valid names.
    pub fn parse(text: &str) -> Result<Self, VocabError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "png" => Ok(Self::Png),
            "jpeg" | "jpg" => Ok(Self::Jpeg),
            "webp" => Ok(Self::Webp),
            _ => Err(VocabError::unknown("image format", text, &["png", "jpeg", "webp"])),
        }
    }
}

/// How to save one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct SaveOptions {
    /// The format.
    pub format: OutputFormat,
    /// Quality 1–100 of lossy JPEG/WebP.
    pub quality: u8,
    /// Lossless WebP (ignored by the other formats).
    pub lossless: bool,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self { format: OutputFormat::Png, quality: DEFAULT_QUALITY, lossless: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names() {
        assert_eq!(OutputFormat::parse("JPG"), Ok(OutputFormat::Jpeg));
        assert_eq!(OutputFormat::parse("webp").map(OutputFormat::extension), Ok("webp"));
        let err = OutputFormat::parse("gif").expect_err("unknown").to_string();
        assert!(err.contains("png, jpeg, webp"), "{err}");
        for format in OutputFormat::ALL {
            assert_eq!(OutputFormat::parse(format.name()), Ok(format));
        }
    }
}
