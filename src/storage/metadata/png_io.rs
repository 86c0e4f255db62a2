//! PNG bytes with our text chunks, and the text chunks of any PNG.
//!
//! Writing goes through the `png` encoder. Reading walks the chunk list itself instead of
//! decoding the image: text is found without inflating pixels, a truncated or damaged file still
//! yields the text chunks before the damage (with a warning), and every chunk's inflated size is
//! bounded, so a hostile file cannot make the reader do unbounded work.

use super::{GenerationInfo, infotext};

/// Keyword of A1111's infotext chunk.
pub const PARAMETERS_KEY: &str = "parameters";
/// Keyword of our JSON chunk.
pub const IMAGELAB_KEY: &str = "imagelab";

/// The eight bytes every PNG starts with.
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
/// Largest text one chunk may inflate to; larger chunks are skipped with a warning.
pub const MAX_CHUNK_TEXT_BYTES: usize = 8 * 1024 * 1024;
/// Largest text all chunks together may hold; chunks past it are skipped with a warning.
pub const MAX_TOTAL_TEXT_BYTES: usize = 32 * 1024 * 1024;

/// Why PNG bytes could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    /// The encoder refused.
    #[error("PNG encoding failed: {0}")]
    Encode(#[from] png::EncodingError),
    /// The bytes do not start with the PNG signature.
    #[error("not a PNG file (no PNG signature)")]
    NotPng,
    /// Pixel buffer and size disagree.
    #[error("image buffer holds {actual} bytes, {width}x{height} RGB needs {expected}")]
    BufferSize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
}

/// Encodes an RGB8 image with the `parameters` chunk (tEXt when Latin-1, else iTXt, as Pillow
/// does) and the iTXt `imagelab` JSON chunk, both before the image data.
///
/// # Errors
/// A buffer of the wrong size or an encoder failure.
pub fn encode_png(
    width: u32,
    height: u32,
    rgb: &[u8],
    info: &GenerationInfo,
) -> Result<Vec<u8>, PngError> {
    let expected = width as usize * height as usize * 3;
    if rgb.len() != expected {
        return Err(PngError::BufferSize { width, height, expected, actual: rgb.len() });
    }
    let mut out = Vec::with_capacity(expected / 2 + 4096);
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let parameters = without_nul(infotext::format(info));
        if is_latin1(&parameters) {
            encoder.add_text_chunk(PARAMETERS_KEY.to_owned(), parameters)?;
        } else {
            encoder.add_itxt_chunk(PARAMETERS_KEY.to_owned(), parameters)?;
        }
        // Serialising plain data with string keys cannot fail; were it to, the image is still
        // worth keeping with its infotext.
        if let Ok(json) = serde_json::to_string(info) {
            encoder.add_itxt_chunk(IMAGELAB_KEY.to_owned(), json)?;
        }
        let mut writer = encoder.write_header()?;
        writer.write_image_data(rgb)?;
        writer.finish()?;
    }
    Ok(out)
}

/// PNG text chunks may not hold NUL (it ends the keyword): each becomes U+2400 (␀), which
/// also moves the text to iTXt. The `imagelab` JSON chunk needs none of this (JSON escapes
/// it as `\u0000`), so the exact text survives there.
fn without_nul(text: String) -> String {
    if text.contains('\0') { text.replace('\0', "\u{2400}") } else { text }
}

/// Whether every character fits in Latin-1 (ISO 8859-1), the only encoding tEXt allows.
pub fn is_latin1(text: &str) -> bool {
    text.chars().all(|c| u32::from(c) <= 0xFF)
}

/// The kind of chunk a text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextChunkKind {
    /// Uncompressed Latin-1.
    Text,
    /// zlib-compressed Latin-1.
    CompressedText,
    /// International (UTF-8), compressed or not.
    InternationalText,
}

/// One text chunk of a PNG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChunk {
    /// The chunk's keyword (`parameters`, `prompt`, …).
    pub keyword: String,
    /// Its text, decoded.
    pub text: String,
    /// Which chunk type held it.
    pub kind: TextChunkKind,
}

/// The text chunks of a PNG, plus what was odd about the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PngText {
    /// Text chunks in file order.
    pub chunks: Vec<TextChunk>,
    /// Damage and oddities met on the way (truncation, bad CRCs, wrong encodings, limits).
    pub warnings: Vec<String>,
}

impl PngText {
    /// The text of the first chunk with this keyword.
    pub fn get(&self, keyword: &str) -> Option<&str> {
        self.chunks.iter().find(|c| c.keyword == keyword).map(|c| c.text.as_str())
    }

    /// Every keyword, in file order.
    pub fn keywords(&self) -> Vec<&str> {
        self.chunks.iter().map(|c| c.keyword.as_str()).collect()
    }
}

/// Every text chunk (tEXt, zTXt, iTXt) of a PNG, in file order, as (keyword, text).
///
/// # Errors
/// Not a PNG. Damage after the signature is not an error: the chunks before it are returned.
pub fn read_text_chunks(bytes: &[u8]) -> Result<Vec<(String, String)>, PngError> {
    Ok(scan_text_chunks(bytes)?.chunks.into_iter().map(|c| (c.keyword, c.text)).collect())
}

/// Walks the chunk list and decodes every text chunk, collecting warnings for damage.
///
/// Work is linear in the file size; inflated text is capped by [`MAX_CHUNK_TEXT_BYTES`] per
/// chunk and [`MAX_TOTAL_TEXT_BYTES`] in all.
///
/// # Errors
/// The bytes are not a PNG.
pub fn scan_text_chunks(bytes: &[u8]) -> Result<PngText, PngError> {
    let Some(mut rest) = bytes.strip_prefix(&PNG_SIGNATURE) else {
        return Err(PngError::NotPng);
    };
    let mut found = PngText::default();
    let mut total_text = 0usize;
    let mut seen_end = false;
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        let Some((header, after_header)) = rest.split_first_chunk::<8>() else {
            found.warnings.push(format!("file ends inside a chunk header at byte {offset}"));
            break;
        };
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let chunk_type = [header[4], header[5], header[6], header[7]];
        let name = String::from_utf8_lossy(&chunk_type).into_owned();
        // Data plus its 4-byte CRC must fit in what is left.
        if after_header.len().checked_sub(4).is_none_or(|room| length > room) {
            found.warnings.push(format!(
                "chunk {name} at byte {offset} is truncated (declares {length} bytes, file ends \
                 first)"
            ));
            break;
        }
        let (data, after_data) = after_header.split_at(length);
        let (crc_bytes, next) = after_data.split_at(4);
        rest = next;
        let kind = match &chunk_type {
            b"tEXt" => TextChunkKind::Text,
            b"zTXt" => TextChunkKind::CompressedText,
            b"iTXt" => TextChunkKind::InternationalText,
            b"IEND" => {
                seen_end = true;
                break;
            }
            _ => continue,
        };
        let stored_crc =
            u32::from_be_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&chunk_type);
        hasher.update(data);
        // Fuzz builds skip the check so mutated text reaches the parsers.
        if hasher.finalize() != stored_crc && !cfg!(fuzzing) {
            found.warnings.push(format!("chunk {name} at byte {offset} fails its CRC; skipped"));
            continue;
        }
        let budget = MAX_CHUNK_TEXT_BYTES.min(MAX_TOTAL_TEXT_BYTES - total_text);
        match decode_text_chunk(kind, data, budget) {
            Ok((chunk, warning)) => {
                total_text += chunk.text.len();
                if let Some(warning) = warning {
                    found.warnings.push(warning);
                }
                found.chunks.push(chunk);
            }
            Err(reason) => {
                found.warnings.push(format!("{name} chunk at byte {offset}: {reason}; skipped"));
            }
        }
    }
    if !seen_end && found.warnings.is_empty() {
        found.warnings.push("file has no IEND chunk (truncated?)".to_owned());
    }
    Ok(found)
}

/// Decodes one text chunk's data; `budget` bounds the decoded text in bytes.
fn decode_text_chunk(
    kind: TextChunkKind,
    data: &[u8],
    budget: usize,
) -> Result<(TextChunk, Option<String>), String> {
    let (keyword_bytes, body) = split_at_nul(data).ok_or("no keyword terminator")?;
    if keyword_bytes.is_empty() || keyword_bytes.len() > 79 {
        return Err(format!("keyword of {} bytes (PNG allows 1 to 79)", keyword_bytes.len()));
    }
    let keyword = latin1_to_string(keyword_bytes);
    let mut warning = None;
    let text = match kind {
        TextChunkKind::Text => {
            if body.len() > budget {
                return Err(format!(
                    "text of {} bytes is over the {budget}-byte limit",
                    body.len()
                ));
            }
            let (text, odd) = decode_latin1_text(body);
            if odd {
                warning = Some(utf8_in_latin1_warning(&keyword));
            }
            text
        }
        TextChunkKind::CompressedText => {
            let (&method, compressed) = body.split_first().ok_or("no compression method")?;
            if method != 0 {
                return Err(format!("unknown compression method {method}"));
            }
            let raw = inflate(compressed, budget)?;
            let (text, odd) = decode_latin1_text(&raw);
            if odd {
                warning = Some(utf8_in_latin1_warning(&keyword));
            }
            text
        }
        TextChunkKind::InternationalText => {
            let [flag, method, tail @ ..] = body else {
                return Err("no compression fields".to_owned());
            };
            let (_language, tail) = split_at_nul(tail).ok_or("no language tag terminator")?;
            let (_translated, raw) =
                split_at_nul(tail).ok_or("no translated keyword terminator")?;
            let inflated;
            let raw = match (flag, method) {
                (0, _) => {
                    if raw.len() > budget {
                        return Err(format!(
                            "text of {} bytes is over the {budget}-byte limit",
                            raw.len()
                        ));
                    }
                    raw
                }
                (1, 0) => {
                    inflated = inflate(raw, budget)?;
                    &inflated[..]
                }
                (1, other) => return Err(format!("unknown compression method {other}")),
                (other, _) => return Err(format!("compression flag {other} (must be 0 or 1)")),
            };
            if let Ok(text) = std::str::from_utf8(raw) {
                text.to_owned()
            } else {
                warning = Some(format!(
                    "iTXt chunk {keyword:?} is not valid UTF-8; undecodable bytes replaced"
                ));
                String::from_utf8_lossy(raw).into_owned()
            }
        }
    };
    Ok((TextChunk { keyword, text, kind }, warning))
}

fn utf8_in_latin1_warning(keyword: &str) -> String {
    format!(
        "text chunk {keyword:?} holds UTF-8 although PNG text chunks are Latin-1; read as UTF-8"
    )
}

fn split_at_nul(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == 0)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

fn latin1_to_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Latin-1 as the PNG specification says; but text that is valid UTF-8 with non-ASCII bytes was
/// almost surely written as UTF-8 by a careless tool, and is read as such (second value: true).
fn decode_latin1_text(bytes: &[u8]) -> (String, bool) {
    if !bytes.is_ascii()
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        return (text.to_owned(), true);
    }
    (latin1_to_string(bytes), false)
}

fn inflate(compressed: &[u8], budget: usize) -> Result<Vec<u8>, String> {
    fdeflate::decompress_to_vec_bounded(compressed, budget).map_err(|err| match err {
        fdeflate::BoundedDecompressionError::OutputTooLarge { .. } => {
            format!("inflates to more than the {budget}-byte limit")
        }
        fdeflate::BoundedDecompressionError::DecompressionError { inner } => {
            format!("broken zlib data ({inner:?})")
        }
    })
}

/// Our own JSON chunk, when the image has one.
///
/// # Errors
/// Not a PNG; or the chunk is there but is not valid JSON of ours.
pub fn read_generation_info(bytes: &[u8]) -> Result<Option<GenerationInfo>, String> {
    let found = scan_text_chunks(bytes).map_err(|e| e.to_string())?;
    found
        .get(IMAGELAB_KEY)
        .map(|text| serde_json::from_str(text).map_err(|e| format!("imagelab chunk: {e}")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_png() -> (Vec<u8>, GenerationInfo, Vec<u8>) {
        let info = GenerationInfo {
            prompt: "ein Kätzchen, 猫".into(),
            seed: 7,
            width: 16,
            height: 8,
            ..GenerationInfo::default()
        };
        let rgb: Vec<u8> =
            (0..16 * 8 * 3).map(|i| u8::try_from(i % 251).expect("below 251")).collect();
        let bytes = encode_png(16, 8, &rgb, &info).expect("encode");
        (bytes, info, rgb)
    }

    #[test]
    fn round_trip_through_png_and_image_crate() {
        let (bytes, info, rgb) = sample_png();
        let decoded = image::load_from_memory(&bytes).expect("image crate reads it").to_rgb8();
        assert_eq!(decoded.as_raw(), &rgb);
        let found = scan_text_chunks(&bytes).expect("chunks");
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
        let params = found.chunks.iter().find(|c| c.keyword == PARAMETERS_KEY).expect("params");
        // 猫 is not Latin-1: the chunk must be iTXt, as Pillow would write it.
        assert_eq!(params.kind, TextChunkKind::InternationalText);
        assert!(params.text.starts_with("ein Kätzchen, 猫\nSteps: 30"), "{}", params.text);
        assert_eq!(read_generation_info(&bytes).expect("ours"), Some(info));
    }

    /// The text bytes of every tEXt and iTXt chunk, raw (after the keyword and the iTXt
    /// header fields).
    fn raw_texts(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut texts = Vec::new();
        let mut at = 8;
        while at + 8 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
            let kind = &bytes[at + 4..at + 8];
            let data = &bytes[at + 8..at + 8 + len];
            let after_keyword = data.iter().position(|&b| b == 0).map_or(data.len(), |i| i + 1);
            if kind == b"tEXt" {
                texts.push(data[after_keyword..].to_vec());
            } else if kind == b"iTXt" {
                let mut rest = &data[after_keyword + 2..];
                for _ in 0..2 {
                    let end = rest.iter().position(|&b| b == 0).expect("iTXt field");
                    rest = &rest[end + 1..];
                }
                texts.push(rest.to_vec());
            }
            at += 12 + len;
        }
        texts
    }

    #[test]
    fn a_nul_in_a_prompt_is_never_written_raw_into_a_text_chunk() {
        let info = GenerationInfo {
            prompt: "a\0b".into(),
            negative: "\0".into(),
            ..GenerationInfo::default()
        };
        let bytes = encode_png(1, 1, &[0, 0, 0], &info).expect("encode");
        let texts = raw_texts(&bytes);
        assert_eq!(texts.len(), 2, "parameters and imagelab");
        for text in &texts {
            assert!(!text.contains(&0), "a NUL inside a text chunk: {text:?}");
        }
        let params = read_text_chunks(&bytes).expect("chunks");
        let parameters = &params.iter().find(|(k, _)| k == PARAMETERS_KEY).expect("params").1;
        assert!(parameters.starts_with("a\u{2400}b\nNegative prompt: \u{2400}"), "{parameters}");
        assert_eq!(read_generation_info(&bytes).expect("ours"), Some(info), "exact in the JSON");
    }

    #[test]
    fn latin1_parameters_go_to_text() {
        let info = GenerationInfo { prompt: "ein Kätzchen".into(), ..GenerationInfo::default() };
        let bytes = encode_png(1, 1, &[0, 0, 0], &info).expect("encode");
        let found = scan_text_chunks(&bytes).expect("chunks");
        let params = found.chunks.iter().find(|c| c.keyword == PARAMETERS_KEY).expect("params");
        assert_eq!(params.kind, TextChunkKind::Text);
        assert!(params.text.starts_with("ein Kätzchen\n"));
    }

    #[test]
    fn wrong_buffer_size_is_an_error() {
        let err = encode_png(4, 4, &[0; 10], &GenerationInfo::default()).expect_err("size");
        assert!(err.to_string().contains("48"), "{err}");
    }

    #[test]
    fn not_a_png_is_an_error() {
        assert!(matches!(scan_text_chunks(b"GIF89a...."), Err(PngError::NotPng)));
        assert!(matches!(scan_text_chunks(b""), Err(PngError::NotPng)));
    }

    #[test]
    fn every_truncation_keeps_earlier_chunks_and_warns() {
        let (bytes, _, _) = sample_png();
        let full = scan_text_chunks(&bytes).expect("full");
        assert_eq!(full.chunks.len(), 2);
        for cut in 8..bytes.len() {
            let partial = scan_text_chunks(&bytes[..cut]).expect("signature intact");
            assert!(!partial.warnings.is_empty(), "cut at {cut} went unnoticed");
            assert!(full.chunks.starts_with(&partial.chunks), "cut at {cut}");
        }
    }

    fn png_with_chunks(build: impl FnOnce(&mut png::Encoder<'_, &mut Vec<u8>>)) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut out, 1, 1);
            encoder.set_color(png::ColorType::Rgb);
            build(&mut encoder);
            let mut writer = encoder.write_header().expect("header");
            writer.write_image_data(&[1, 2, 3]).expect("data");
        }
        out
    }

    #[test]
    fn compression_bombs_and_enormous_text_are_bounded() {
        // 64 MiB of text compresses to ~64 KiB; it must be refused, not inflated.
        let bytes = png_with_chunks(|e| {
            e.add_ztxt_chunk("parameters".into(), "a".repeat(64 << 20)).expect("ztxt");
            e.add_text_chunk("small".into(), "kept".into()).expect("text");
        });
        let found = scan_text_chunks(&bytes).expect("scan");
        assert_eq!(found.keywords(), vec!["small"]);
        assert!(found.warnings[0].contains("limit"), "{:?}", found.warnings);
        // Under the limit, large text is read in full.
        let text = "b".repeat(MAX_CHUNK_TEXT_BYTES - 1);
        let bytes =
            png_with_chunks(|e| e.add_itxt_chunk("big".into(), text.clone()).expect("itxt"));
        assert_eq!(scan_text_chunks(&bytes).expect("scan").get("big"), Some(text.as_str()));
    }

    #[test]
    fn wrong_encodings_are_read_with_warnings() {
        // UTF-8 bytes in a tEXt chunk (PNG says Latin-1): read as UTF-8, with a warning.
        let mut bytes =
            png_with_chunks(|e| e.add_text_chunk("k".into(), "AAAAAA".into()).expect("t"));
        let at = bytes.windows(6).position(|w| w == b"AAAAAA").expect("text");
        bytes[at..at + 6].copy_from_slice(
            "Käse".as_bytes()[..5].iter().chain(b"!").copied().collect::<Vec<u8>>().as_slice(),
        );
        fix_crc(&mut bytes, at);
        let found = scan_text_chunks(&bytes).expect("scan");
        assert_eq!(found.get("k"), Some("Käse!"));
        assert!(found.warnings[0].contains("UTF-8"), "{:?}", found.warnings);
        // Invalid UTF-8 in iTXt: replaced, with a warning.
        let mut bytes = png_with_chunks(|e| e.add_itxt_chunk("k".into(), "AB".into()).expect("i"));
        let at = bytes.windows(2).position(|w| w == b"AB").expect("text");
        bytes[at] = 0xFF;
        fix_crc(&mut bytes, at);
        let found = scan_text_chunks(&bytes).expect("scan");
        assert_eq!(found.get("k"), Some("\u{FFFD}B"));
        assert!(found.warnings[0].contains("not valid UTF-8"), "{:?}", found.warnings);
    }

    /// Recomputes the CRC of the chunk holding byte `at`.
    fn fix_crc(bytes: &mut [u8], at: usize) {
        let mut start = 8;
        loop {
            let length =
                u32::from_be_bytes(bytes[start..start + 4].try_into().expect("4")) as usize;
            if at < start + 12 + length {
                let crc = crc32fast::hash(&bytes[start + 4..start + 8 + length]);
                bytes[start + 8 + length..start + 12 + length].copy_from_slice(&crc.to_be_bytes());
                return;
            }
            start += 12 + length;
        }
    }

    #[test]
    fn corrupted_text_chunk_is_skipped_with_warning() {
        let (mut bytes, _, _) = sample_png();
        let at = bytes.windows(10).position(|w| w == b"parameters").expect("keyword");
        bytes[at + 12] ^= 0x20;
        let found = scan_text_chunks(&bytes).expect("scan");
        assert_eq!(found.keywords(), vec![IMAGELAB_KEY]);
        assert!(found.warnings[0].contains("CRC"), "{:?}", found.warnings);
    }
}
