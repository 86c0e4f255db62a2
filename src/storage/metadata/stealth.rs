//! "Stealth" PNG info: settings hidden in the pixels' least significant bits, as the
//! `sd-webui-stealth-pnginfo` extension for AUTOMATIC1111 writes them and NovelAI embeds its
//! metadata, so they survive sites that strip text chunks.
//!
//! The bits run column by column (x outer, y inner), most significant bit first:
//! a 15-byte signature, a 32-bit big-endian payload length *in bits*, then the payload.
//! - alpha mode: one bit per pixel, the alpha channel's LSB; signature `stealth_pnginfo`
//!   (UTF-8 text) or `stealth_pngcomp` (gzip);
//! - RGB mode: three bits per pixel (R, G, B LSBs); `stealth_rgbinfo` or `stealth_rgbcomp`.
//!
//! The payload is A1111 infotext, or a JSON object of text chunks (NovelAI's `Comment`,
//! `Description`, … and the stealth writer's ComfyUI `prompt`/`workflow`). The declared length
//! is checked against what the image can hold, the payload and its inflated text are capped,
//! and decoding the pixels is bounded by the `image` crate's limits.

use std::io::Read as _;

/// Largest payload (and inflated text) read.
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;
/// Images larger than this (either side) are not decoded for stealth info.
pub const MAX_SIDE_PX: u32 = 16_384;
/// Memory the decoder may allocate.
const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

const SIGNATURE_BYTES: usize = 15;

/// Where the bits were hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StealthMode {
    /// The alpha channel's LSB.
    Alpha,
    /// The R, G and B LSBs.
    Rgb,
}

/// A payload found in the pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StealthPayload {
    /// Where it was.
    pub mode: StealthMode,
    /// Whether it was gzip-compressed.
    pub compressed: bool,
    /// The text.
    pub text: String,
}

/// Pixels to read bits from: RGBA8 or RGB8, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Pixels<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per pixel: 3 (RGB) or 4 (RGBA).
    pub channels: usize,
    /// The samples.
    pub data: &'a [u8],
}

/// Reads `count` bytes of the bit stream starting at bit `start`, or `None` past the end.
fn read_bytes(pixels: &Pixels<'_>, mode: StealthMode, start: u64, count: usize) -> Option<Vec<u8>> {
    let (width, height) = (u64::from(pixels.width), u64::from(pixels.height));
    let per_pixel: u64 = if mode == StealthMode::Alpha { 1 } else { 3 };
    let capacity = width * height * per_pixel;
    let end = start.checked_add(count as u64 * 8)?;
    if end > capacity || height == 0 {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    let mut byte = 0u8;
    for bit_index in start..end {
        let (pixel, channel) = match mode {
            StealthMode::Alpha => (bit_index, 3),
            StealthMode::Rgb => (bit_index / 3, (bit_index % 3) as usize),
        };
        let (x, y) = (pixel / height, pixel % height);
        let at = usize::try_from(y * width + x).ok()? * pixels.channels + channel;
        byte = (byte << 1) | (pixels.data.get(at)? & 1);
        if (bit_index - start) % 8 == 7 {
            out.push(byte);
            byte = 0;
        }
    }
    Some(out)
}

/// Looks for a stealth payload in decoded pixels.
///
/// # Errors
/// A signature is there but the payload is damaged (too long for the image, over the limit,
/// broken gzip). `Ok(None)` when there is no signature.
pub fn read_from_pixels(pixels: &Pixels<'_>) -> Result<Option<StealthPayload>, String> {
    let expected = pixels.width as usize * pixels.height as usize * pixels.channels;
    if !matches!(pixels.channels, 3 | 4) || pixels.data.len() < expected {
        return Ok(None);
    }
    let mut modes = Vec::new();
    if pixels.channels == 4 {
        modes.push(StealthMode::Alpha);
    }
    modes.push(StealthMode::Rgb);
    for mode in modes {
        let Some(signature) = read_bytes(pixels, mode, 0, SIGNATURE_BYTES) else { continue };
        let compressed =
            match (mode, signature.as_slice()) {
                (StealthMode::Alpha, b"stealth_pnginfo")
                | (StealthMode::Rgb, b"stealth_rgbinfo") => false,
                (StealthMode::Alpha, b"stealth_pngcomp")
                | (StealthMode::Rgb, b"stealth_rgbcomp") => true,
                _ => continue,
            };
        let signature_bits = (SIGNATURE_BYTES * 8) as u64;
        let length = read_bytes(pixels, mode, signature_bits, 4)
            .ok_or("stealth info ends inside its length field")?;
        let bits = u32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        let bytes = (bits / 8) as usize;
        if bytes > MAX_PAYLOAD_BYTES {
            return Err(format!(
                "stealth info declares {bytes} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit"
            ));
        }
        let payload = read_bytes(pixels, mode, signature_bits + 32, bytes).ok_or_else(|| {
            format!("stealth info declares {bytes} bytes, more than the image holds")
        })?;
        let raw = if compressed { gunzip(&payload)? } else { payload };
        let text = String::from_utf8(raw)
            .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned());
        return Ok(Some(StealthPayload { mode, compressed, text }));
    }
    Ok(None)
}

fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(MAX_PAYLOAD_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|err| format!("stealth info is not valid gzip ({err})"))?;
    if out.len() > MAX_PAYLOAD_BYTES {
        return Err(format!("stealth info inflates past the {MAX_PAYLOAD_BYTES}-byte limit"));
    }
    Ok(out)
}

/// Decodes an image (PNG or lossless WebP: lossy codecs destroy the low bits) and looks for a
/// stealth payload.
///
/// # Errors
/// The image cannot be decoded within the limits, or the payload is damaged.
pub fn read_from_image(bytes: &[u8]) -> Result<Option<StealthPayload>, String> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| err.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE_PX);
    limits.max_image_height = Some(MAX_SIDE_PX);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|err| format!("pixels cannot be decoded: {err}"))?;
    let (width, height) = (decoded.width(), decoded.height());
    if decoded.color().has_alpha() {
        let rgba = decoded.into_rgba8();
        read_from_pixels(&Pixels { width, height, channels: 4, data: rgba.as_raw() })
    } else {
        let rgb = decoded.into_rgb8();
        read_from_pixels(&Pixels { width, height, channels: 3, data: rgb.as_raw() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a payload the way the extension's `add_data` does.
    fn embed(width: u32, height: u32, mode: StealthMode, compressed: bool, text: &str) -> Vec<u8> {
        let signature = match (mode, compressed) {
            (StealthMode::Alpha, false) => "stealth_pnginfo",
            (StealthMode::Alpha, true) => "stealth_pngcomp",
            (StealthMode::Rgb, false) => "stealth_rgbinfo",
            (StealthMode::Rgb, true) => "stealth_rgbcomp",
        };
        let payload = if compressed {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut encoder, text.as_bytes()).expect("gzip");
            encoder.finish().expect("gzip")
        } else {
            text.as_bytes().to_vec()
        };
        let mut bits: Vec<u8> = Vec::new();
        let mut push = |bytes: &[u8]| {
            for byte in bytes {
                for shift in (0..8).rev() {
                    bits.push((byte >> shift) & 1);
                }
            }
        };
        push(signature.as_bytes());
        push(&u32::try_from(payload.len() * 8).expect("small").to_be_bytes());
        push(&payload);
        let mut rgba: Vec<u8> = (0..width * height * 4).map(|i| (i % 200) as u8 | 1).collect();
        for (index, bit) in bits.into_iter().enumerate() {
            let index = u32::try_from(index).expect("small");
            let (pixel, channel) = match mode {
                StealthMode::Alpha => (index, 3),
                StealthMode::Rgb => (index / 3, index % 3),
            };
            let (x, y) = (pixel / height, pixel % height);
            let at = ((y * width + x) * 4 + channel) as usize;
            rgba[at] = (rgba[at] & !1) | bit;
        }
        rgba
    }

    #[test]
    fn reads_all_four_variants() {
        let text = "a cat, 猫\nSteps: 20, Sampler: Euler a, Seed: 1";
        for mode in [StealthMode::Alpha, StealthMode::Rgb] {
            for compressed in [false, true] {
                let rgba = embed(40, 30, mode, compressed, text);
                let found =
                    read_from_pixels(&Pixels { width: 40, height: 30, channels: 4, data: &rgba })
                        .expect("reads")
                        .expect("found");
                assert_eq!(found, StealthPayload { mode, compressed, text: text.to_owned() });
            }
        }
    }

    #[test]
    fn through_a_png_file() {
        use image::ImageEncoder as _;
        let rgba = embed(32, 32, StealthMode::Alpha, true, "{\"Comment\": \"{}\"}");
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&rgba, 32, 32, image::ExtendedColorType::Rgba8)
            .expect("png");
        let found = read_from_image(&png).expect("reads").expect("found");
        assert_eq!(found.text, "{\"Comment\": \"{}\"}");
    }

    #[test]
    fn plain_images_and_damaged_payloads() {
        let plain: Vec<u8> =
            (0..20 * 20 * 4).map(|i| u8::try_from(i % 256).expect("byte")).collect();
        let pixels = Pixels { width: 20, height: 20, channels: 4, data: &plain };
        assert_eq!(read_from_pixels(&pixels), Ok(None));
        // A length larger than the image.
        let mut rgba = embed(20, 20, StealthMode::Alpha, false, "abc");
        let length_bit = 15 * 8; // first bit of the length field: x = 6, y = 0
        let at = ((length_bit % 20) * 20 + length_bit / 20) * 4 + 3;
        rgba[at] |= 1;
        let err = read_from_pixels(&Pixels { width: 20, height: 20, channels: 4, data: &rgba })
            .expect_err("too long");
        assert!(err.contains("limit") || err.contains("holds"), "{err}");
        // Broken gzip: flip payload bits after the gzip header; its CRC catches it.
        let rgba = embed(40, 30, StealthMode::Rgb, true, "hello");
        let mut broken = rgba.clone();
        for bit in 240..300u32 {
            let (pixel, channel) = (bit / 3, bit % 3);
            let (x, y) = (pixel / 30, pixel % 30);
            broken[((y * 40 + x) * 4 + channel) as usize] ^= 1;
        }
        let result =
            read_from_pixels(&Pixels { width: 40, height: 30, channels: 4, data: &broken });
        assert!(result.is_err(), "{result:?}");
        // Tiny images cannot hold a signature.
        let tiny = [0u8; 4 * 4];
        assert_eq!(
            read_from_pixels(&Pixels { width: 2, height: 2, channels: 4, data: &tiny }),
            Ok(None)
        );
    }
}
