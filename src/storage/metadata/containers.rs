//! Any image file's generation metadata as named texts, whatever container holds them.
//!
//! Every reader of settings (`recover`) works on `keyword → text` pairs named as the tools name
//! them in PNG text chunks. This module produces those pairs from PNG, JPEG and WebP files:
//!
//! | found in | keyword |
//! |---|---|
//! | PNG `tEXt`/`zTXt`/`iTXt` chunks | their own keyword |
//! | EXIF `UserComment` (Exif IFD, else IFD0; in JPEG `APP1`, WebP `EXIF`, PNG `eXIf`) | `parameters` (A1111/Forge via piexif, Fooocus via Pillow) |
//! | EXIF `MakerNote` `fooocus`/`a1111` in IFD0 | `fooocus_scheme` (Fooocus) |
//! | EXIF IFD0 `Make`/`Model`/`ImageDescription` = `name:{json}` | `name` (ComfyUI's WebP: `prompt`, `workflow`) |
//! | EXIF `Software` | `Software` |
//! | XMP `imagelab:generation` | `imagelab` (ours) |
//! | XMP `exif:UserComment`, `dc:description`; JPEG `COM` — when A1111 infotext | `parameters`, if not found above |
//! | the pixels' low bits (PNG, lossless WebP), when nothing above names settings | `parameters`, or the keys of its JSON object (NovelAI) |

use super::exif::{self, Ifd};
use super::infotext;
use super::png_io::{self, PngText, TextChunk, TextChunkKind};
use super::stealth::{self, StealthMode};
use super::webp_io::{self, WebpCoding};
use super::{jpeg_io, xmp};

/// The container formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerFormat {
    /// PNG.
    Png,
    /// JPEG (JFIF or Exif).
    Jpeg,
    /// WebP (RIFF).
    Webp,
}

impl ContainerFormat {
    /// The usual name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "PNG",
            Self::Jpeg => "JPEG",
            Self::Webp => "WebP",
        }
    }
}

/// Where a text was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOrigin {
    /// A PNG text chunk.
    PngChunk(TextChunkKind),
    /// An EXIF tag (IFD, tag number).
    Exif(Ifd, u16),
    /// An XMP property.
    Xmp,
    /// A JPEG `COM` segment.
    JpegComment,
    /// The pixels' least significant bits.
    Stealth(StealthMode),
}

/// One named text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundText {
    /// The keyword, as PNG text chunks name it (`parameters`, `imagelab`, `prompt`…).
    pub keyword: String,
    /// The text.
    pub text: String,
    /// Where it was.
    pub origin: TextOrigin,
}

/// The metadata texts of an image file, plus what was odd about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageText {
    /// The container.
    pub format: ContainerFormat,
    /// Width and height, when the headers say.
    pub size: Option<(u32, u32)>,
    /// Texts in the order found.
    pub entries: Vec<FoundText>,
    /// Damage and oddities met on the way.
    pub warnings: Vec<String>,
}

impl ImageText {
    /// The text of the first entry with this keyword.
    pub fn get(&self, keyword: &str) -> Option<&str> {
        self.entries.iter().find(|e| e.keyword == keyword).map(|e| e.text.as_str())
    }

    /// The entry with this keyword.
    pub fn entry(&self, keyword: &str) -> Option<&FoundText> {
        self.entries.iter().find(|e| e.keyword == keyword)
    }

    /// Every keyword, in order.
    pub fn keywords(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.keyword.as_str()).collect()
    }

    /// The same texts as PNG text chunks (what `recover_from_chunks` reads); entries not from a
    /// PNG chunk count as international text.
    pub fn to_png_text(&self) -> PngText {
        PngText {
            chunks: self
                .entries
                .iter()
                .map(|e| TextChunk {
                    keyword: e.keyword.clone(),
                    text: e.text.clone(),
                    kind: match e.origin {
                        TextOrigin::PngChunk(kind) => kind,
                        _ => TextChunkKind::InternationalText,
                    },
                })
                .collect(),
            warnings: self.warnings.clone(),
        }
    }

    fn push(&mut self, keyword: &str, text: String, origin: TextOrigin) {
        self.entries.push(FoundText { keyword: keyword.to_owned(), text, origin });
    }

    fn has(&self, keyword: &str) -> bool {
        self.entries.iter().any(|e| e.keyword == keyword)
    }
}

/// Why an image's metadata could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerError {
    /// Not a PNG, JPEG or WebP.
    #[error("not a PNG, JPEG or WebP file{}", .0.map(|k| format!(" (looks like {k})")).unwrap_or_default())]
    UnknownFormat(Option<&'static str>),
}

/// Keywords that name generation settings; without any, a PNG's pixels are searched for
/// stealth info.
pub const SETTINGS_KEYWORDS: [&str; 8] = [
    png_io::IMAGELAB_KEY,
    png_io::PARAMETERS_KEY,
    "prompt",
    "invokeai_metadata",
    "sd-metadata",
    "Dream",
    "Comment",
    "workflow",
];

/// What a file that is none of ours looks like, for the error message.
fn sniff_other(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"GIF8") {
        Some("GIF")
    } else if bytes.get(4..12).is_some_and(|b| b == b"ftypavif" || b == b"ftypavis") {
        Some("AVIF")
    } else if bytes.get(4..8) == Some(b"ftyp") {
        Some("HEIF/MP4")
    } else if bytes.starts_with(b"BM") {
        Some("BMP")
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some("TIFF")
    } else {
        None
    }
}

/// The format of the bytes, from their signature.
pub fn sniff(bytes: &[u8]) -> Option<ContainerFormat> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ContainerFormat::Png)
    } else if jpeg_io::is_jpeg(bytes) {
        Some(ContainerFormat::Jpeg)
    } else if webp_io::is_webp(bytes) {
        Some(ContainerFormat::Webp)
    } else {
        None
    }
}

/// Reads the metadata texts of a PNG, JPEG or WebP file.
///
/// # Errors
/// The bytes are none of the three formats. Damage inside a file is a warning.
pub fn read_image_text(bytes: &[u8]) -> Result<ImageText, ContainerError> {
    let format = sniff(bytes).ok_or_else(|| ContainerError::UnknownFormat(sniff_other(bytes)))?;
    let mut found = ImageText { format, size: None, entries: Vec::new(), warnings: Vec::new() };
    let mut lossless_pixels = false;
    match format {
        ContainerFormat::Png => {
            // The signature was checked, so the scan cannot fail; stay total anyway.
            if let Ok(text) = png_io::scan_text_chunks(bytes) {
                for chunk in text.chunks {
                    found.push(&chunk.keyword, chunk.text, TextOrigin::PngChunk(chunk.kind));
                }
                found.warnings.extend(text.warnings);
            }
            found.size = png_size(bytes);
            // A1111 also reads an `eXIf` chunk's UserComment (Pillow puts it in `info["exif"]`).
            if let Some(exif_data) = png_exif(bytes)
                && !found.has(png_io::PARAMETERS_KEY)
            {
                read_exif(&mut found, exif_data);
            }
            lossless_pixels = true;
        }
        ContainerFormat::Jpeg => {
            if let Ok(jpeg) = jpeg_io::read_jpeg_metadata(bytes) {
                found.size = jpeg.size;
                found.warnings.extend(jpeg.warnings);
                read_exif_and_xmp(&mut found, jpeg.exif, jpeg.xmp);
                for comment in jpeg.comments {
                    if !found.has(png_io::PARAMETERS_KEY) && looks_like_infotext(&comment) {
                        found.push(png_io::PARAMETERS_KEY, comment, TextOrigin::JpegComment);
                    }
                }
            }
        }
        ContainerFormat::Webp => {
            if let Ok(webp) = webp_io::read_webp_metadata(bytes) {
                found.size = webp.size;
                found.warnings.extend(webp.warnings);
                read_exif_and_xmp(&mut found, webp.exif, webp.xmp);
                lossless_pixels = webp.coding == Some(WebpCoding::Lossless);
            }
        }
    }
    if lossless_pixels && !SETTINGS_KEYWORDS.iter().any(|k| found.has(k)) {
        read_stealth(&mut found, bytes);
    }
    Ok(found)
}

/// Our own complete request from any image we wrote (PNG chunk or XMP), when it has one.
///
/// # Errors
/// Not a PNG, JPEG or WebP; or our record is there but not valid JSON of ours.
pub fn generation_info(bytes: &[u8]) -> Result<Option<super::GenerationInfo>, String> {
    let text = read_image_text(bytes).map_err(|err| err.to_string())?;
    text.get(png_io::IMAGELAB_KEY)
        .map(|json| serde_json::from_str(json).map_err(|err| format!("imagelab record: {err}")))
        .transpose()
}

/// The size in a PNG's `IHDR` (the first chunk).
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    Some((word(16)?, word(20)?))
}

/// The data of a PNG's `eXIf` chunk, walking the chunk list (lengths checked, CRCs not: the
/// EXIF reader bounds everything itself).
fn png_exif(bytes: &[u8]) -> Option<&[u8]> {
    let mut pos = 8;
    while let Some(header) = bytes.get(pos..pos + 8) {
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let data = bytes.get(pos + 8..(pos + 8).checked_add(length)?)?;
        match &header[4..8] {
            b"eXIf" => return Some(data),
            b"IEND" => return None,
            _ => pos = pos + 12 + length,
        }
    }
    None
}

/// The last line of A1111 infotext holds at least three `key: value` pairs.
fn looks_like_infotext(text: &str) -> bool {
    infotext::parse_generation_parameters(text).fields.len() >= 3
}

fn read_exif_and_xmp(found: &mut ImageText, exif_data: Option<&[u8]>, xmp_data: Option<&[u8]>) {
    if let Some(xmp_data) = xmp_data {
        let properties = xmp::read_xmp(xmp_data);
        found.warnings.extend(properties.warnings.iter().cloned());
        if let Some(ours) = properties.get(xmp::NS_IMAGELAB, xmp::GENERATION_PROPERTY) {
            found.push(png_io::IMAGELAB_KEY, ours.to_owned(), TextOrigin::Xmp);
        }
        // Read below, after EXIF (which A1111 and Fooocus use).
        if let Some(data) = exif_data {
            read_exif(found, data);
        }
        for (namespace, name) in [(xmp::NS_EXIF, "UserComment"), (xmp::NS_DC, "description")] {
            if let Some(text) = properties.get(namespace, name)
                && !found.has(png_io::PARAMETERS_KEY)
                && looks_like_infotext(text)
            {
                found.push(png_io::PARAMETERS_KEY, text.to_owned(), TextOrigin::Xmp);
            }
        }
    } else if let Some(data) = exif_data {
        read_exif(found, data);
    }
}

fn read_exif(found: &mut ImageText, data: &[u8]) {
    let tags = match exif::read_exif(data) {
        Ok(tags) => tags,
        Err(err) => {
            found.warnings.push(format!("EXIF block unreadable: {err}"));
            return;
        }
    };
    found.warnings.extend(tags.warnings.iter().cloned());
    let comment = [Ifd::Exif, Ifd::Primary]
        .into_iter()
        .find_map(|ifd| tags.get(ifd, exif::TAG_USER_COMMENT).map(|text| (ifd, text)))
        .filter(|(_, text)| !text.trim().is_empty());
    if let Some((ifd, text)) = comment {
        found.push(
            png_io::PARAMETERS_KEY,
            text.to_owned(),
            TextOrigin::Exif(ifd, exif::TAG_USER_COMMENT),
        );
    }
    if let Some(scheme) = tags.get(Ifd::Primary, exif::TAG_MAKER_NOTE)
        && matches!(scheme.trim(), "fooocus" | "a1111")
    {
        found.push(
            super::fooocus::SCHEME_KEY,
            scheme.trim().to_owned(),
            TextOrigin::Exif(Ifd::Primary, exif::TAG_MAKER_NOTE),
        );
    }
    for tag in [exif::TAG_MODEL, exif::TAG_MAKE, exif::TAG_IMAGE_DESCRIPTION] {
        if let Some(text) = tags.get(Ifd::Primary, tag)
            && let Some((name, json)) = text.split_once(':')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && json.trim_start().starts_with('{')
            && !found.has(name)
        {
            found.push(name, json.to_owned(), TextOrigin::Exif(Ifd::Primary, tag));
        }
    }
    if let Some(software) = tags.get(Ifd::Primary, exif::TAG_SOFTWARE) {
        found.push(
            "Software",
            software.to_owned(),
            TextOrigin::Exif(Ifd::Primary, exif::TAG_SOFTWARE),
        );
    }
}

fn read_stealth(found: &mut ImageText, bytes: &[u8]) {
    let payload = match stealth::read_from_image(bytes) {
        Ok(Some(payload)) => payload,
        Ok(None) => return,
        Err(reason) => {
            found.warnings.push(format!("stealth info: {reason}"));
            return;
        }
    };
    let origin = TextOrigin::Stealth(payload.mode);
    // A JSON object of strings is a set of text chunks (NovelAI, the ComfyUI variant).
    if payload.text.trim_start().starts_with('{')
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&payload.text)
        && map.values().all(serde_json::Value::is_string)
        && !map.is_empty()
    {
        for (key, value) in map {
            if let serde_json::Value::String(text) = value {
                found.push(&key, text, origin);
            }
        }
        return;
    }
    found.push(png_io::PARAMETERS_KEY, payload.text, origin);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::metadata::exif::build_exif;

    fn rgb() -> Vec<u8> {
        (0..16 * 16 * 3).map(|i| u8::try_from(i * 3 % 256).expect("byte")).collect()
    }

    #[test]
    fn jpeg_and_webp_map_exif_and_xmp_to_keywords() {
        let exif_block = build_exif("a cat\nSteps: 20, Sampler: Euler, Seed: 1", "imagelab 0.1.0");
        let packet = xmp::build_xmp("{\"seed\": 1}", "imagelab 0.1.0");
        let jpeg = jpeg_io::encode_rgb(16, 16, &rgb(), 90).expect("jpeg");
        let jpeg =
            jpeg_io::insert_metadata(&jpeg, Some(&exif_block), Some(&packet)).expect("insert");
        let webp = webp_io::encode_rgb(16, 16, &rgb(), false, 80).expect("webp");
        let webp =
            webp_io::insert_metadata(&webp, Some(&exif_block), Some(&packet)).expect("insert");
        for (bytes, format) in [(jpeg, ContainerFormat::Jpeg), (webp, ContainerFormat::Webp)] {
            let found = read_image_text(&bytes).expect("reads");
            assert_eq!(found.format, format);
            assert_eq!(found.size, Some((16, 16)));
            assert!(found.warnings.is_empty(), "{:?}", found.warnings);
            assert_eq!(found.get("imagelab"), Some("{\"seed\": 1}"));
            assert_eq!(found.get("parameters"), Some("a cat\nSteps: 20, Sampler: Euler, Seed: 1"));
            assert_eq!(
                found.entry("parameters").map(|e| e.origin),
                Some(TextOrigin::Exif(Ifd::Exif, exif::TAG_USER_COMMENT))
            );
            assert_eq!(found.get("Software"), Some("imagelab 0.1.0"));
            assert_eq!(found.to_png_text().get("imagelab"), Some("{\"seed\": 1}"));
        }
    }

    #[test]
    fn png_exif_chunk_user_comment() {
        let exif_block = build_exif("a cat\nSteps: 20, Sampler: Euler, Seed: 3", "tool");
        let mut png = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut png, 1, 1);
            encoder.set_color(png::ColorType::Rgb);
            let mut writer = encoder.write_header().expect("header");
            writer.write_chunk(png::chunk::ChunkType(*b"eXIf"), &exif_block).expect("exif");
            writer.write_image_data(&[0, 0, 0]).expect("data");
        }
        let found = read_image_text(&png).expect("reads");
        assert_eq!(found.get("parameters"), Some("a cat\nSteps: 20, Sampler: Euler, Seed: 3"));
        assert_eq!(found.size, Some((1, 1)));
    }

    #[test]
    fn unknown_formats_are_named() {
        assert_eq!(
            read_image_text(b"GIF89a\x01\x00"),
            Err(ContainerError::UnknownFormat(Some("GIF")))
        );
        let err = read_image_text(b"hello").expect_err("unknown");
        assert_eq!(err.to_string(), "not a PNG, JPEG or WebP file");
    }
}
