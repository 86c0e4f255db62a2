//! WebP files: the metadata chunks of any WebP, and our WebP output with its EXIF and XMP.
//!
//! A WebP is a RIFF container (`RIFF` size `WEBP`, then chunks: four-character code, 32-bit
//! little-endian size, data, a pad byte when the size is odd). Metadata lives in the extended
//! format: a `VP8X` header whose flags announce the `EXIF` and `XMP ` chunks that follow the
//! image data. Reading checks every size against what is left, so a truncated or lying RIFF
//! ends the walk with a warning; no pixels are decoded.
//!
//! Writing encodes the pixels — lossless with the pure-Rust `image-webp` encoder, lossy with
//! libwebp (the `webp` crate) — then rebuilds the file as `VP8X` + image chunk + `EXIF` +
//! `XMP `, as libwebp's `webpmux` and piexif lay it out.

/// Largest `EXIF` or `XMP ` chunk read; larger ones are skipped with a warning.
pub const MAX_METADATA_CHUNK: usize = 8 * 1024 * 1024;

/// `VP8X` flag: the file has an `EXIF` chunk.
const FLAG_EXIF: u8 = 0x08;
/// `VP8X` flag: the file has an `XMP ` chunk.
const FLAG_XMP: u8 = 0x04;
/// `VP8X` flag: the image has alpha.
const FLAG_ALPHA: u8 = 0x10;

/// Why a WebP could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WebpError {
    /// The bytes do not start with `RIFF….WEBP`.
    #[error("not a WebP file (no RIFF/WEBP header)")]
    NotWebp,
    /// The encoder refused.
    #[error("WebP encoding failed: {0}")]
    Encode(String),
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

/// How the image data of a WebP is coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebpCoding {
    /// `VP8 `: lossy.
    Lossy,
    /// `VP8L`: lossless.
    Lossless,
    /// `ANIM`: an animation.
    Animated,
}

/// The metadata chunks of a WebP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebpMetadata<'a> {
    /// The `EXIF` chunk: TIFF bytes (a leading `Exif\0\0`, which some writers add, removed).
    pub exif: Option<&'a [u8]>,
    /// The `XMP ` chunk.
    pub xmp: Option<&'a [u8]>,
    /// Canvas or frame size.
    pub size: Option<(u32, u32)>,
    /// How the (first) image is coded.
    pub coding: Option<WebpCoding>,
    /// Damage and oddities.
    pub warnings: Vec<String>,
}

/// Whether the bytes start like a WebP.
pub fn is_webp(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP"
}

/// One chunk: code, data (without the pad byte).
struct Chunk<'a> {
    code: [u8; 4],
    data: &'a [u8],
}

/// Splits the RIFF body into chunks, stopping with a warning at the first damage.
fn chunks<'a>(bytes: &'a [u8], warnings: &mut Vec<String>) -> Vec<Chunk<'a>> {
    let declared = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let end = match declared.checked_add(8) {
        Some(end) if end <= bytes.len() => end,
        _ => {
            warnings.push(format!(
                "RIFF declares {declared} bytes, the file holds {} (truncated)",
                bytes.len().saturating_sub(8)
            ));
            bytes.len()
        }
    };
    let mut found = Vec::new();
    let mut pos = 12;
    while pos < end {
        let Some(header) = bytes.get(pos..pos + 8).filter(|_| pos + 8 <= end) else {
            warnings.push(format!("WebP chunk header at byte {pos} is cut off"));
            break;
        };
        let code = [header[0], header[1], header[2], header[3]];
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let Some(data) =
            pos.checked_add(8 + size).filter(|&e| e <= end).map(|e| &bytes[pos + 8..e])
        else {
            warnings.push(format!(
                "WebP chunk {} at byte {pos} declares {size} bytes, the file ends first",
                String::from_utf8_lossy(&code)
            ));
            break;
        };
        found.push(Chunk { code, data });
        pos += 8 + size + size % 2;
    }
    found
}

/// Walks a WebP's chunks.
///
/// # Errors
/// Not a WebP. Damage after the header is not an error: what came before it is returned.
pub fn read_webp_metadata(bytes: &[u8]) -> Result<WebpMetadata<'_>, WebpError> {
    if !is_webp(bytes) {
        return Err(WebpError::NotWebp);
    }
    let mut found = WebpMetadata::default();
    let mut warnings = Vec::new();
    for chunk in chunks(bytes, &mut warnings) {
        match &chunk.code {
            b"VP8X" => {
                if let [_, _, _, _, w0, w1, w2, h0, h1, h2, ..] = chunk.data {
                    let width = u32::from_le_bytes([*w0, *w1, *w2, 0]) + 1;
                    let height = u32::from_le_bytes([*h0, *h1, *h2, 0]) + 1;
                    found.size = Some((width, height));
                }
            }
            b"VP8 " => {
                found.coding.get_or_insert(WebpCoding::Lossy);
                if found.size.is_none()
                    && let [_, _, _, 0x9D, 0x01, 0x2A, w0, w1, h0, h1, ..] = chunk.data
                {
                    let width = u32::from(u16::from_le_bytes([*w0, *w1]) & 0x3FFF);
                    let height = u32::from(u16::from_le_bytes([*h0, *h1]) & 0x3FFF);
                    found.size = Some((width, height));
                }
            }
            b"VP8L" => {
                found.coding.get_or_insert(WebpCoding::Lossless);
                if found.size.is_none()
                    && let [0x2F, b0, b1, b2, b3, ..] = chunk.data
                {
                    let bits = u32::from_le_bytes([*b0, *b1, *b2, *b3]);
                    found.size = Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1));
                }
            }
            b"ANIM" => {
                found.coding.get_or_insert(WebpCoding::Animated);
            }
            b"EXIF" | b"XMP " => {
                let name = String::from_utf8_lossy(&chunk.code).trim_end().to_owned();
                if chunk.data.len() > MAX_METADATA_CHUNK {
                    warnings.push(format!(
                        "WebP {name} chunk of {} bytes is over the {MAX_METADATA_CHUNK}-byte \
                         limit; skipped",
                        chunk.data.len()
                    ));
                } else if &chunk.code == b"EXIF" {
                    let data = chunk.data;
                    let tiff = data.strip_prefix(super::exif::JPEG_EXIF_HEADER).unwrap_or(data);
                    found.exif.get_or_insert(tiff);
                } else {
                    found.xmp.get_or_insert(chunk.data);
                }
            }
            _ => {}
        }
    }
    found.warnings = warnings;
    Ok(found)
}

/// Encodes RGB8 pixels as a WebP: lossless (`VP8L`, `image-webp`) or lossy (`VP8 `, libwebp)
/// at `quality` (0–100).
///
/// # Errors
/// A buffer of the wrong size, or an encoder failure.
pub fn encode_rgb(
    width: u32,
    height: u32,
    rgb: &[u8],
    lossless: bool,
    quality: u8,
) -> Result<Vec<u8>, WebpError> {
    let expected = width as usize * height as usize * 3;
    if rgb.len() != expected {
        return Err(WebpError::BufferSize { width, height, expected, actual: rgb.len() });
    }
    if lossless {
        let mut out = Vec::with_capacity(expected / 2 + 1024);
        image::codecs::webp::WebPEncoder::new_lossless(&mut out)
            .encode(rgb, width, height, image::ExtendedColorType::Rgb8)
            .map_err(|err| WebpError::Encode(err.to_string()))?;
        Ok(out)
    } else {
        let memory = webp::Encoder::from_rgb(rgb, width, height)
            .encode_simple(false, f32::from(quality.min(100)))
            .map_err(|err| WebpError::Encode(format!("{err:?}")))?;
        Ok(memory.to_vec())
    }
}

/// Rebuilds a still WebP as the extended format with `EXIF` and `XMP ` chunks: `VP8X` (flags,
/// canvas size), the image chunks (`ALPH`, `VP8 `/`VP8L`) as they were, then the metadata.
/// Existing `EXIF`/`XMP `/`VP8X` chunks are replaced.
///
/// # Errors
/// Not a WebP, or one without a size (no image chunk).
pub fn insert_metadata(
    webp: &[u8],
    exif: Option<&[u8]>,
    xmp: Option<&str>,
) -> Result<Vec<u8>, WebpError> {
    let found = read_webp_metadata(webp)?;
    let Some((width, height)) = found.size.filter(|(w, h)| *w > 0 && *h > 0) else {
        return Err(WebpError::Encode("the WebP has no image size".to_owned()));
    };
    let mut warnings = Vec::new();
    let image_chunks: Vec<Chunk<'_>> = chunks(webp, &mut warnings)
        .into_iter()
        .filter(|c| matches!(&c.code, b"ALPH" | b"VP8 " | b"VP8L" | b"ICCP"))
        .collect();
    let has_alpha = image_chunks.iter().any(|c| &c.code == b"ALPH")
        || image_chunks
            .iter()
            .any(|c| &c.code == b"VP8L" && c.data.get(4).is_some_and(|b| b & 0x10 != 0));
    let mut flags = 0u8;
    if has_alpha {
        flags |= FLAG_ALPHA;
    }
    if exif.is_some() {
        flags |= FLAG_EXIF;
    }
    if xmp.is_some() {
        flags |= FLAG_XMP;
    }
    if image_chunks.iter().any(|c| &c.code == b"ICCP") {
        flags |= 0x20;
    }
    let mut vp8x = vec![flags, 0, 0, 0];
    vp8x.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(height - 1).to_le_bytes()[..3]);

    let mut body = Vec::with_capacity(webp.len() + exif.map_or(0, <[u8]>::len) + 1024);
    body.extend_from_slice(b"WEBP");
    push_chunk(&mut body, *b"VP8X", &vp8x);
    // ICCP comes before the image data.
    for chunk in image_chunks.iter().filter(|c| &c.code == b"ICCP") {
        push_chunk(&mut body, chunk.code, chunk.data);
    }
    for chunk in image_chunks.iter().filter(|c| &c.code != b"ICCP") {
        push_chunk(&mut body, chunk.code, chunk.data);
    }
    if let Some(exif) = exif {
        push_chunk(&mut body, *b"EXIF", exif);
    }
    if let Some(xmp) = xmp {
        push_chunk(&mut body, *b"XMP ", xmp.as_bytes());
    }
    let size = u32::try_from(body.len())
        .map_err(|_| WebpError::Encode("the WebP would exceed 4 GiB".to_owned()))?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn push_chunk(out: &mut Vec<u8>, code: [u8; 4], data: &[u8]) {
    out.extend_from_slice(&code);
    // Chunks of our own files; sizes are far below 4 GiB (checked for the whole file).
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::metadata::exif;

    fn pixels() -> Vec<u8> {
        (0..24 * 16 * 3).map(|i| u8::try_from(i * 13 % 256).expect("byte")).collect()
    }

    #[test]
    fn lossless_and_lossy_carry_metadata_and_decode() {
        let rgb = pixels();
        let block = exif::build_exif("a cat\nSteps: 20", "imagelab");
        for lossless in [true, false] {
            let plain = encode_rgb(24, 16, &rgb, lossless, 90).expect("encode");
            let with = insert_metadata(&plain, Some(&block), Some("<x:xmpmeta/>")).expect("insert");
            let found = read_webp_metadata(&with).expect("webp");
            assert!(found.warnings.is_empty(), "{:?}", found.warnings);
            assert_eq!(found.exif, Some(block.as_slice()));
            assert_eq!(found.xmp, Some(b"<x:xmpmeta/>".as_slice()));
            assert_eq!(found.size, Some((24, 16)));
            let coding = if lossless { WebpCoding::Lossless } else { WebpCoding::Lossy };
            assert_eq!(found.coding, Some(coding));
            // The image crate decodes the same pixels as without metadata.
            let a = image::load_from_memory(&plain).expect("plain").to_rgb8();
            let b = image::load_from_memory(&with).expect("with").to_rgb8();
            assert_eq!(a, b);
            if lossless {
                assert_eq!(b.as_raw(), &rgb);
            }
            // Inserting again replaces the chunks.
            let again = insert_metadata(&with, None, Some("<y/>")).expect("again");
            let found = read_webp_metadata(&again).expect("webp");
            assert_eq!((found.exif, found.xmp), (None, Some(b"<y/>".as_slice())));
        }
    }

    #[test]
    fn truncated_and_lying_riffs_are_warnings() {
        let block = exif::build_exif("Steps: 20", "imagelab");
        let plain = encode_rgb(24, 16, &pixels(), true, 90).expect("encode");
        let with = insert_metadata(&plain, Some(&block), Some("<x/>")).expect("insert");
        for cut in 12..with.len() {
            let found = read_webp_metadata(&with[..cut]).expect("still a webp");
            assert!(!found.warnings.is_empty(), "cut at {cut} went unnoticed");
        }
        // A chunk claiming 4 GiB.
        let mut lying = with.clone();
        lying[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let found = read_webp_metadata(&lying).expect("webp");
        assert!(found.warnings[0].contains("declares"), "{:?}", found.warnings);
        assert!(matches!(read_webp_metadata(b"RIFF\0\0\0\0WAVE"), Err(WebpError::NotWebp)));
        assert!(matches!(read_webp_metadata(b"RIFF"), Err(WebpError::NotWebp)));
    }

    #[test]
    fn exif_chunks_with_the_jpeg_prefix_are_read() {
        let block = exif::build_exif("Steps: 20", "imagelab");
        let mut prefixed = exif::JPEG_EXIF_HEADER.to_vec();
        prefixed.extend_from_slice(&block);
        let plain = encode_rgb(24, 16, &pixels(), true, 90).expect("encode");
        let with = insert_metadata(&plain, Some(&prefixed), None).expect("insert");
        assert_eq!(read_webp_metadata(&with).expect("webp").exif, Some(block.as_slice()));
    }
}
