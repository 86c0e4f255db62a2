//! JPEG files: the metadata segments of any JPEG, and our JPEG output with its EXIF and XMP.
//!
//! Reading walks the marker segments from `SOI` to the first scan (`SOS`) without decoding
//! pixels: `APP1` Exif, `APP1` XMP, `COM` comments and the frame header's size. Every length
//! is checked against what is left, so a truncated or lying file ends the walk with a warning.
//!
//! Writing encodes RGB with the `image` crate's baseline encoder, then puts an `APP1` Exif
//! segment (the A1111-compatible `UserComment`) and an `APP1` XMP segment (our complete
//! request) right after the `JFIF` header, where readers look for them.

/// Largest payload of one marker segment (its 16-bit length counts itself).
pub const MAX_SEGMENT_PAYLOAD: usize = 65_533;

/// Why a JPEG could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    /// The bytes do not start with a JPEG `SOI` marker.
    #[error("not a JPEG file (no SOI marker)")]
    NotJpeg,
    /// The encoder refused.
    #[error("JPEG encoding failed: {0}")]
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
    /// Metadata too large for one JPEG segment.
    #[error(
        "the {what} is {bytes} bytes; a JPEG segment holds at most {MAX_SEGMENT_PAYLOAD} \
         (save as PNG or WebP, which have no such limit)"
    )]
    SegmentTooLarge {
        /// Which metadata.
        what: &'static str,
        /// Its size.
        bytes: usize,
    },
}

/// The metadata segments of a JPEG.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JpegMetadata<'a> {
    /// The first `APP1` Exif payload, without its `Exif\0\0` header.
    pub exif: Option<&'a [u8]>,
    /// The first `APP1` XMP packet, without its namespace header.
    pub xmp: Option<&'a [u8]>,
    /// `COM` segments, as text (UTF-8 where valid, else Latin-1).
    pub comments: Vec<String>,
    /// Width and height from the frame header.
    pub size: Option<(u32, u32)>,
    /// Damage and oddities.
    pub warnings: Vec<String>,
}

/// Whether the bytes start like a JPEG (`SOI` then a marker).
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Walks a JPEG's segments up to the first scan.
///
/// # Errors
/// Not a JPEG. Damage after `SOI` is not an error: what came before it is returned.
pub fn read_jpeg_metadata(bytes: &[u8]) -> Result<JpegMetadata<'_>, JpegError> {
    if !is_jpeg(bytes) {
        return Err(JpegError::NotJpeg);
    }
    let mut found = JpegMetadata::default();
    let mut pos = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            if pos >= bytes.len() {
                found.warnings.push("JPEG ends before its image data".to_owned());
            } else {
                found.warnings.push(format!("JPEG has no marker at byte {pos}; stopped there"));
            }
            break;
        };
        pos += 2;
        match marker {
            // Standalone markers: no length.
            0x01 | 0xD0..=0xD8 => continue,
            0xD9 => {
                found.warnings.push("JPEG ends (EOI) before any image data".to_owned());
                break;
            }
            _ => {}
        }
        let Some(length) =
            bytes.get(pos..pos + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            found.warnings.push(format!("JPEG segment at byte {} is truncated", pos - 2));
            break;
        };
        if length < 2 {
            found.warnings.push(format!("JPEG segment at byte {} has length {length}", pos - 2));
            break;
        }
        let Some(payload) = bytes.get(pos + 2..pos + length) else {
            found.warnings.push(format!(
                "JPEG segment 0x{marker:02X} at byte {} declares {length} bytes, the file ends first",
                pos - 2
            ));
            break;
        };
        pos += length;
        match marker {
            0xE1 => {
                if let Some(exif) = payload.strip_prefix(super::exif::JPEG_EXIF_HEADER) {
                    if found.exif.is_none() {
                        found.exif = Some(exif);
                    }
                } else if let Some(xmp) = payload.strip_prefix(super::xmp::JPEG_XMP_HEADER)
                    && found.xmp.is_none()
                {
                    found.xmp = Some(xmp);
                }
            }
            0xFE => found.comments.push(text_of(payload)),
            // Frame headers (SOF0..SOF15 except DHT 0xC4, JPG 0xC8, DAC 0xCC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if let [_precision, h0, h1, w0, w1, ..] = payload {
                    found.size = Some((
                        u32::from(u16::from_be_bytes([*w0, *w1])),
                        u32::from(u16::from_be_bytes([*h0, *h1])),
                    ));
                }
            }
            // Start of scan: metadata ends here.
            0xDA => break,
            _ => {}
        }
    }
    Ok(found)
}

fn text_of(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Encodes RGB8 pixels as a baseline JPEG at `quality` (1–100).
///
/// # Errors
/// A buffer of the wrong size, or an encoder failure.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8], quality: u8) -> Result<Vec<u8>, JpegError> {
    let expected = width as usize * height as usize * 3;
    if rgb.len() != expected {
        return Err(JpegError::BufferSize { width, height, expected, actual: rgb.len() });
    }
    let mut out = Vec::with_capacity(expected / 8 + 4096);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .encode(rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|err| JpegError::Encode(err.to_string()))?;
    Ok(out)
}

/// Inserts `APP1` Exif (TIFF bytes) and `APP1` XMP segments into an encoded JPEG, after `SOI`
/// and any `APP0` (JFIF) segments; existing Exif/XMP segments are dropped.
///
/// # Errors
/// Not a JPEG, or a payload over [`MAX_SEGMENT_PAYLOAD`].
pub fn insert_metadata(
    jpeg: &[u8],
    exif: Option<&[u8]>,
    xmp: Option<&str>,
) -> Result<Vec<u8>, JpegError> {
    if !is_jpeg(jpeg) {
        return Err(JpegError::NotJpeg);
    }
    let mut segments = Vec::new();
    if let Some(exif) = exif {
        segments.push(segment(0xE1, super::exif::JPEG_EXIF_HEADER, exif, "EXIF block")?);
    }
    if let Some(xmp) = xmp {
        segments.push(segment(0xE1, super::xmp::JPEG_XMP_HEADER, xmp.as_bytes(), "XMP packet")?);
    }
    // Copy SOI and APP0 segments, then ours, then the rest minus old Exif/XMP segments.
    let mut out = Vec::with_capacity(jpeg.len() + segments.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&jpeg[..2]);
    let mut pos = 2;
    let mut inserted = false;
    while let (Some(&0xFF), Some(&marker)) = (jpeg.get(pos), jpeg.get(pos + 1)) {
        let has_length = !matches!(marker, 0x01 | 0xD0..=0xD9);
        if !has_length || marker == 0xDA {
            break;
        }
        let Some(length) =
            jpeg.get(pos + 2..pos + 4).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            break;
        };
        let Some(whole) = jpeg.get(pos..pos + 2 + length) else { break };
        if marker != 0xE0 && !inserted {
            for segment in &segments {
                out.extend_from_slice(segment);
            }
            inserted = true;
        }
        let payload = &whole[4.min(whole.len())..];
        let ours_replaced = marker == 0xE1
            && (payload.starts_with(super::exif::JPEG_EXIF_HEADER)
                || payload.starts_with(super::xmp::JPEG_XMP_HEADER));
        if !ours_replaced {
            out.extend_from_slice(whole);
        }
        pos += 2 + length;
    }
    if !inserted {
        for segment in &segments {
            out.extend_from_slice(segment);
        }
    }
    out.extend_from_slice(&jpeg[pos..]);
    Ok(out)
}

fn segment(
    marker: u8,
    header: &[u8],
    payload: &[u8],
    what: &'static str,
) -> Result<Vec<u8>, JpegError> {
    let bytes = header.len() + payload.len();
    // The length field counts itself: at most MAX_SEGMENT_PAYLOAD + 2 = 65535.
    let length =
        u16::try_from(bytes + 2).map_err(|_| JpegError::SegmentTooLarge { what, bytes })?;
    let mut out = Vec::with_capacity(bytes + 4);
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::metadata::exif;

    fn sample() -> Vec<u8> {
        let rgb: Vec<u8> =
            (0..16 * 8 * 3).map(|i| u8::try_from(i * 7 % 256).expect("byte")).collect();
        encode_rgb(16, 8, &rgb, 90).expect("encode")
    }

    #[test]
    fn metadata_goes_in_after_jfif_and_reads_back() {
        let plain = sample();
        let block = exif::build_exif("a cat\nSteps: 20", "imagelab");
        let with = insert_metadata(&plain, Some(&block), Some("<x:xmpmeta/>")).expect("insert");
        let found = read_jpeg_metadata(&with).expect("jpeg");
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
        assert_eq!(found.exif, Some(block.as_slice()));
        assert_eq!(found.xmp, Some(b"<x:xmpmeta/>".as_slice()));
        assert_eq!(found.size, Some((16, 8)));
        // APP0 JFIF (the image crate writes one) stays first; our segments follow it.
        assert_eq!(&plain[2..4], &[0xFF, 0xE0]);
        assert_eq!(&with[2..4], &[0xFF, 0xE0]);
        let app0_end = 4 + usize::from(u16::from_be_bytes([with[4], with[5]]));
        assert_eq!(&with[app0_end..app0_end + 2], &[0xFF, 0xE1]);
        // The pixels are untouched: the image crate decodes the same image.
        let a = image::load_from_memory(&plain).expect("plain").to_rgb8();
        let b = image::load_from_memory(&with).expect("with").to_rgb8();
        assert_eq!(a, b);
        // Inserting again replaces rather than duplicates.
        let again = insert_metadata(&with, Some(&block), None).expect("again");
        let found = read_jpeg_metadata(&again).expect("jpeg");
        assert_eq!(found.xmp, None);
        assert_eq!(again.len(), plain.len() + block.len() + 10);
    }

    #[test]
    fn oversized_metadata_is_refused() {
        let huge = vec![b'a'; MAX_SEGMENT_PAYLOAD];
        let err = insert_metadata(&sample(), Some(&huge), None).expect_err("too big");
        assert!(err.to_string().contains("EXIF block"), "{err}");
        assert!(matches!(insert_metadata(b"\x89PNG", None, None), Err(JpegError::NotJpeg)));
    }

    #[test]
    fn every_truncation_is_handled() {
        let block = exif::build_exif("Steps: 20", "imagelab");
        let with = insert_metadata(&sample(), Some(&block), Some("<x/>")).expect("insert");
        for cut in 3..with.len() {
            let found = read_jpeg_metadata(&with[..cut]).expect("still a jpeg");
            if found.warnings.is_empty() {
                // Only cuts inside the scan data leave the header segments whole.
                assert!(found.exif.is_some() && found.size.is_some(), "cut at {cut}");
            }
        }
        assert!(matches!(read_jpeg_metadata(b"\xFF\xD8"), Err(JpegError::NotJpeg)));
        let found = read_jpeg_metadata(b"\xFF\xD8\xFF\xE1\x00\x01").expect("jpeg");
        assert!(found.warnings[0].contains("length 1"), "{:?}", found.warnings);
    }
}
