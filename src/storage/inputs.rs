//! Reading the user's input files (img2img source images) with errors that name the file.

use std::path::Path;

use image::RgbImage;

/// Opens an image file with its format guessed from the bytes.
fn open_image(
    path: &Path,
) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>, String> {
    if !path.exists() {
        return Err(format!("file not found: {}", path.display()));
    }
    if !path.is_file() {
        return Err(format!("not a file: {}", path.display()));
    }
    let reader = image::ImageReader::open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if reader.format().is_none() {
        return Err(format!("not an image (PNG, JPEG or WebP expected): {}", path.display()));
    }
    Ok(reader)
}

/// Decodes an init image to RGB8.
///
/// # Errors
/// A message naming the file: missing, unreadable, or not an image.
pub fn load_image(path: &Path) -> Result<RgbImage, String> {
    let image = open_image(path)?
        .decode()
        .map_err(|e| format!("not a readable image ({e}): {}", path.display()))?;
    Ok(image.to_rgb8())
}

/// Checks that a file is an image without decoding all of it (dimensions only).
///
/// # Errors
/// As [`load_image`].
pub fn check_image(path: &Path) -> Result<(u32, u32), String> {
    open_image(path)?
        .into_dimensions()
        .map_err(|e| format!("not a readable image ({e}): {}", path.display()))
}

/// The img2img size when the user gave none: the image's own size rounded down to a multiple
/// of 8 (REFERENCE §3).
pub fn own_size_rounded(width: u32, height: u32) -> (u32, u32) {
    ((width / 8) * 8, (height / 8) * 8)
}

/// The init image at exactly `width`×`height` (Lanczos3 when it must be resized).
pub fn fit(image: RgbImage, width: u32, height: u32) -> RgbImage {
    if image.dimensions() == (width, height) {
        image
    } else {
        image::imageops::resize(&image, width, height, image::imageops::FilterType::Lanczos3)
    }
}

/// Checks the output folder can be created and written, before any work starts.
///
/// # Errors
/// A message naming the folder.
pub fn check_output_dir(root: &Path) -> Result<(), String> {
    fs_err::create_dir_all(root).map_err(|e| format!("output folder is not usable: {e}"))?;
    let probe = root.join(format!(".imagelab-write-test.{}", std::process::id()));
    fs_err::write(&probe, b"ok")
        .map_err(|e| format!("output folder is not writable ({e}): {}", root.display()))?;
    let _ = fs_err::remove_file(&probe);
    Ok(())
}
