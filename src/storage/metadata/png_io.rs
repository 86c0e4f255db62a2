//! PNG bytes with our text chunks, and the text chunks of any PNG.

use std::io::Cursor;

use super::{GenerationInfo, infotext};

/// Keyword of A1111's infotext chunk.
pub const PARAMETERS_KEY: &str = "parameters";
/// Keyword of our JSON chunk.
pub const IMAGELAB_KEY: &str = "imagelab";

/// Why PNG bytes could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    /// The encoder refused.
    #[error("PNG encoding failed: {0}")]
    Encode(#[from] png::EncodingError),
    /// The decoder refused (not a PNG, truncated, corrupt).
    #[error("not a readable PNG: {0}")]
    Decode(#[from] png::DecodingError),
    /// The settings could not be serialised.
    #[error("settings JSON: {0}")]
    Json(#[from] serde_json::Error),
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
/// does) and the iTXt `imagelab` JSON chunk.
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
        let parameters = infotext::format(info);
        if is_latin1(&parameters) {
            encoder.add_text_chunk(PARAMETERS_KEY.to_owned(), parameters)?;
        } else {
            encoder.add_itxt_chunk(PARAMETERS_KEY.to_owned(), parameters)?;
        }
        let json = serde_json::to_string(info).map_err(PngError::Json)?;
        encoder.add_itxt_chunk(IMAGELAB_KEY.to_owned(), json)?;
        let mut writer = encoder.write_header()?;
        writer.write_image_data(rgb)?;
        writer.finish()?;
    }
    Ok(out)
}

fn is_latin1(text: &str) -> bool {
    text.chars().all(|c| u32::from(c) <= 0xFF)
}

/// Every text chunk (tEXt, zTXt, iTXt) of a PNG, in file order by kind, as (keyword, text).
///
/// # Errors
/// Not a PNG, or damaged before its text could be read.
pub fn read_text_chunks(bytes: &[u8]) -> Result<Vec<(String, String)>, PngError> {
    let decoder = png::Decoder::new(Cursor::new(bytes));
    let mut reader = decoder.read_info()?;
    // Text after the image data is only seen once the image has been read.
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    reader.next_frame(&mut buf)?;
    reader.finish()?;
    let info = reader.info();
    let mut chunks = Vec::new();
    for chunk in &info.uncompressed_latin1_text {
        chunks.push((chunk.keyword.clone(), chunk.text.clone()));
    }
    for chunk in &info.compressed_latin1_text {
        let mut chunk = chunk.clone();
        if chunk.decompress_text().is_ok()
            && let Ok(text) = chunk.get_text()
        {
            chunks.push((chunk.keyword.clone(), text));
        }
    }
    for chunk in &info.utf8_text {
        let mut chunk = chunk.clone();
        if chunk.decompress_text().is_ok()
            && let Ok(text) = chunk.get_text()
        {
            chunks.push((chunk.keyword.clone(), text));
        }
    }
    Ok(chunks)
}

/// Our own JSON chunk, when the image has one.
///
/// # Errors
/// Not a PNG; or the chunk is there but is not valid JSON of ours.
pub fn read_generation_info(bytes: &[u8]) -> Result<Option<GenerationInfo>, String> {
    let chunks = read_text_chunks(bytes).map_err(|e| e.to_string())?;
    chunks
        .into_iter()
        .find(|(key, _)| key == IMAGELAB_KEY)
        .map(|(_, text)| serde_json::from_str(&text).map_err(|e| format!("imagelab chunk: {e}")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_png_and_image_crate() {
        let info = GenerationInfo {
            prompt: "ein Kätzchen, 猫".into(),
            seed: 7,
            width: 16,
            height: 8,
            ..GenerationInfo::default()
        };
        let rgb: Vec<u8> = (0..16 * 8 * 3).map(|i| (i % 251) as u8).collect();
        let bytes = encode_png(16, 8, &rgb, &info).expect("encode");
        let decoded = image::load_from_memory(&bytes).expect("image crate reads it").to_rgb8();
        assert_eq!(decoded.as_raw(), &rgb);
        let chunks = read_text_chunks(&bytes).expect("chunks");
        let params = chunks.iter().find(|(k, _)| k == PARAMETERS_KEY).expect("parameters");
        assert!(params.1.starts_with("ein Kätzchen, 猫\nSteps: 30"), "{}", params.1);
        assert_eq!(read_generation_info(&bytes).expect("ours"), Some(info));
    }

    #[test]
    fn wrong_buffer_size_is_an_error() {
        let err = encode_png(4, 4, &[0; 10], &GenerationInfo::default()).expect_err("size");
        assert!(err.to_string().contains("48"), "{err}");
    }
}
