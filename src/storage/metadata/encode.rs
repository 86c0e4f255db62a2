//! Our output images in every format, each with the same two pieces of metadata:
//! A1111's infotext (what Civitai, A1111's PNG Info and `sd-parsers` read) and our complete
//! request as JSON (what `generate --from` restores exactly).
//!
//! | format | infotext | our JSON |
//! |---|---|---|
//! | PNG | `parameters` text chunk | `imagelab` iTXt chunk |
//! | JPEG | EXIF `UserComment` (`UNICODE`, UTF-16BE, as piexif writes it) | XMP `imagelab:generation` |
//! | WebP (lossy or lossless) | same EXIF in the `EXIF` chunk | same XMP in the `XMP ` chunk |
//!
//! A JPEG segment holds at most 64 KiB, so very long prompts do not fit a JPEG; the error says
//! so and callers save a PNG instead rather than lose the image.

use super::{GenerationInfo, exif, infotext, jpeg_io, png_io, webp_io, xmp};

pub use crate::vocab::{DEFAULT_QUALITY, OutputFormat, SaveOptions};

/// Why an image could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// PNG.
    #[error(transparent)]
    Png(#[from] png_io::PngError),
    /// JPEG (including metadata too large for a JPEG segment).
    #[error(transparent)]
    Jpeg(#[from] jpeg_io::JpegError),
    /// WebP.
    #[error(transparent)]
    Webp(#[from] webp_io::WebpError),
}

impl EncodeError {
    /// Whether the settings are too large for a JPEG (the image itself is fine).
    pub fn is_metadata_too_large(&self) -> bool {
        matches!(self, Self::Jpeg(jpeg_io::JpegError::SegmentTooLarge { .. }))
    }
}

/// Our JSON for the XMP packet; serialising plain data with string keys cannot fail, and if it
/// ever did the image would still carry its infotext.
fn generation_json(info: &GenerationInfo) -> Option<String> {
    serde_json::to_string(info).ok()
}

/// The EXIF block and XMP packet of our JPEG/WebP files.
pub fn metadata_blocks(info: &GenerationInfo) -> (Vec<u8>, Option<String>) {
    let exif_block = exif::build_exif(&infotext::format(info), &info.version);
    let packet = generation_json(info).map(|json| xmp::build_xmp(&json, &info.version));
    (exif_block, packet)
}

/// Whether a JPEG can carry this image's settings: the infotext (UTF-16) and our JSON each
/// fit one 64 KiB segment. PNG and WebP have no such limit.
///
/// # Errors
/// [`jpeg_io::JpegError::SegmentTooLarge`] naming which part is too large.
pub fn check_jpeg_metadata(info: &GenerationInfo) -> Result<(), EncodeError> {
    let (exif_block, packet) = metadata_blocks(info);
    jpeg_io::insert_metadata(&[0xFF, 0xD8, 0xFF, 0xD9], Some(&exif_block), packet.as_deref())?;
    Ok(())
}

/// Encodes RGB8 pixels in the chosen format with our metadata.
///
/// # Errors
/// A buffer of the wrong size, an encoder failure, or (JPEG) settings over 64 KiB; see
/// [`EncodeError::is_metadata_too_large`].
pub fn encode_image(
    width: u32,
    height: u32,
    rgb: &[u8],
    info: &GenerationInfo,
    options: SaveOptions,
) -> Result<Vec<u8>, EncodeError> {
    match options.format {
        OutputFormat::Png => Ok(png_io::encode_png(width, height, rgb, info)?),
        OutputFormat::Jpeg => {
            // Check the metadata before spending time on the pixels.
            check_jpeg_metadata(info)?;
            let (exif_block, packet) = metadata_blocks(info);
            let plain = jpeg_io::encode_rgb(width, height, rgb, options.quality)?;
            Ok(jpeg_io::insert_metadata(&plain, Some(&exif_block), packet.as_deref())?)
        }
        OutputFormat::Webp => {
            let (exif_block, packet) = metadata_blocks(info);
            let plain = webp_io::encode_rgb(width, height, rgb, options.lossless, options.quality)?;
            Ok(webp_io::insert_metadata(&plain, Some(&exif_block), packet.as_deref())?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::metadata::containers::{self, ContainerFormat};

    fn sample() -> (GenerationInfo, Vec<u8>) {
        let info = GenerationInfo {
            prompt: "ein Kätzchen, 猫 😀\nzweite Zeile: ja".into(),
            negative: "blurry".into(),
            seed: 42,
            width: 24,
            height: 16,
            ..GenerationInfo::default()
        };
        let rgb = (0..24 * 16 * 3).map(|i| u8::try_from(i * 5 % 256).expect("byte")).collect();
        (info, rgb)
    }

    #[test]
    fn every_format_carries_infotext_and_our_json() {
        let (info, rgb) = sample();
        for (format, lossless) in [
            (OutputFormat::Png, false),
            (OutputFormat::Jpeg, false),
            (OutputFormat::Webp, false),
            (OutputFormat::Webp, true),
        ] {
            let options = SaveOptions { format, quality: 85, lossless };
            let bytes = encode_image(24, 16, &rgb, &info, options).expect("encode");
            let found = containers::read_image_text(&bytes).expect("read");
            let expected = match format {
                OutputFormat::Png => ContainerFormat::Png,
                OutputFormat::Jpeg => ContainerFormat::Jpeg,
                OutputFormat::Webp => ContainerFormat::Webp,
            };
            assert_eq!(found.format, expected);
            assert_eq!(found.get(png_io::PARAMETERS_KEY), Some(infotext::format(&info).as_str()));
            let json = found.get(png_io::IMAGELAB_KEY).expect("our json");
            assert_eq!(serde_json::from_str::<GenerationInfo>(json).expect("json"), info);
            let decoded = image::load_from_memory(&bytes).expect("decodes").to_rgb8();
            assert_eq!(decoded.dimensions(), (24, 16));
            if format == OutputFormat::Png || lossless {
                assert_eq!(decoded.as_raw(), &rgb);
            }
        }
    }

    #[test]
    fn oversized_settings_are_a_jpeg_error_only() {
        let (mut info, rgb) = sample();
        info.prompt = "a very long prompt, ".repeat(2_000);
        let err = encode_image(
            24,
            16,
            &rgb,
            &info,
            SaveOptions { format: OutputFormat::Jpeg, ..SaveOptions::default() },
        )
        .expect_err("too large for JPEG");
        assert!(err.is_metadata_too_large(), "{err}");
        for format in [OutputFormat::Png, OutputFormat::Webp] {
            encode_image(24, 16, &rgb, &info, SaveOptions { format, ..SaveOptions::default() })
                .expect("fits");
        }
    }
}
