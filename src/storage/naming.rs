//! File and folder names: slugs that can never escape the output folder, timestamped image
//! names, and claiming a name without ever overwriting.

use std::io;
use std::path::{Path, PathBuf};

use super::durable;

/// Lower-case ASCII slug with `-` separators, at most `max_chars`, or `fallback` when nothing
/// usable remains. The result contains only `[a-z0-9-]`, so it can never be `..` or hold a
/// path separator.
pub fn slug(text: &str, max_chars: usize, fallback: &str) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars));
    let mut pending_dash = false;
    for ch in text.chars() {
        let mapped = match ch {
            'a'..='z' | '0'..='9' => Some(ch),
            'A'..='Z' => Some(ch.to_ascii_lowercase()),
            _ => None,
        };
        match mapped {
            Some(c) => {
                if pending_dash && !out.is_empty() {
                    if out.len() + 1 >= max_chars {
                        break;
                    }
                    out.push('-');
                }
                pending_dash = false;
                if out.len() >= max_chars {
                    break;
                }
                out.push(c);
            }
            None => pending_dash = true,
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() { fallback.to_owned() } else { out }
}

/// Longest prompt slug in a file name.
pub const PROMPT_SLUG_CHARS: usize = 48;

/// `<YYYYmmdd-HHMMSS>_<profile slug>_<prompt slug ≤ 48>_<seed>` (no extension).
pub fn image_stem(timestamp: &str, profile: &str, prompt: &str, seed: u64) -> String {
    format!(
        "{timestamp}_{}_{}_{seed}",
        slug(profile, 40, "profile"),
        slug(prompt, PROMPT_SLUG_CHARS, "untitled")
    )
}

/// Writes `bytes` to `dir/<stem>.<ext>` without ever overwriting: the first free name among
/// `<stem>.<ext>`, `<stem>-2.<ext>`, `<stem>-3.<ext>` … The data goes to a temporary file first,
/// synced, and is linked into place only when complete, so readers never see a half-written
/// image, not even after a power cut; a failed write (a full disk) removes its temporary file.
///
/// # Errors
/// I/O errors name the path.
pub fn write_new_file(dir: &Path, stem: &str, ext: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    write_new_file_as(dir, stem, ext, bytes, durable::process_tag())
}

/// [`write_new_file`] with the writer's `tag` in the temporary file's name, so a leftover
/// from a crash can be told from a file another live process is writing (`storage::durable`).
///
/// # Errors
/// I/O errors name the path.
pub fn write_new_file_as(
    dir: &Path,
    stem: &str,
    ext: &str,
    bytes: &[u8],
    tag: &str,
) -> io::Result<PathBuf> {
    fs_err::create_dir_all(dir)?;
    let tmp = dir.join(durable::temp_name(stem, tag, ext));
    // A leftover of this very writer (a failed earlier attempt) is ours to replace.
    let _ = fs_err::remove_file(&tmp);
    durable::write_synced_new(&tmp, bytes)?;
    let result = claim_name(dir, stem, ext, &tmp);
    // The temporary name is gone after a rename, or must be removed after a link.
    let _ = fs_err::remove_file(&tmp);
    if result.is_ok() {
        durable::sync_dir(dir);
    }
    result
}

/// Creates a new folder `parent/<name>`, or `<name>-2`, `<name>-3` … when taken (by an earlier
/// run, or by another process started in the same second). Returns the name used.
///
/// # Errors
/// I/O errors name the path.
pub fn create_new_dir(parent: &Path, name: &str) -> io::Result<String> {
    fs_err::create_dir_all(parent)?;
    for attempt in 1..10_000u32 {
        let candidate = if attempt == 1 { name.to_owned() } else { format!("{name}-{attempt}") };
        match fs_err::create_dir(parent.join(&candidate)) {
            Ok(()) => {
                durable::sync_dir(parent);
                return Ok(candidate);
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::other(format!("no free folder name for {name} in {}", parent.display())))
}

/// Extensions of the image files the lab writes and reads back.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// Whether `path` has one of [`IMAGE_EXTENSIONS`] (any case).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| IMAGE_EXTENSIONS.iter().any(|known| known.eq_ignore_ascii_case(ext)))
}

/// Whether the file name `name` is one [`image_stem`] + [`write_new_file`] could have given
/// the image of `profile`, `prompt` and `seed` (any timestamp, any `-N` suffix, any image
/// extension).
pub fn could_be_image_of(name: &str, profile: &str, prompt: &str, seed: u64) -> bool {
    let Some((stem, ext)) = name.rsplit_once('.') else { return false };
    if !IMAGE_EXTENSIONS.iter().any(|known| known.eq_ignore_ascii_case(ext)) {
        return false;
    }
    let tail = format!(
        "_{}_{}_{seed}",
        slug(profile, 40, "profile"),
        slug(prompt, PROMPT_SLUG_CHARS, "untitled")
    );
    let stem = match stem.rsplit_once('-') {
        Some((base, n)) if base.ends_with(&tail) && n.parse::<u32>().is_ok_and(|n| n >= 2) => base,
        _ => stem,
    };
    stem.ends_with(&tail)
}

fn claim_name(dir: &Path, stem: &str, ext: &str, tmp: &Path) -> io::Result<PathBuf> {
    for attempt in 1..10_000u32 {
        let name =
            if attempt == 1 { format!("{stem}.{ext}") } else { format!("{stem}-{attempt}.{ext}") };
        let target = dir.join(name);
        // A hard link fails if the target exists: atomic "create if absent", even against
        // another process writing the same folder.
        match fs_err::hard_link(tmp, &target) {
            Ok(()) => return Ok(target),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(_) => {
                // File systems without hard links: reserve the name, then rename over it.
                match fs_err::OpenOptions::new().write(true).create_new(true).open(&target) {
                    Ok(_) => {
                        fs_err::rename(tmp, &target)?;
                        return Ok(target);
                    }
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(err) => {
                        return Err(io::Error::new(
                            err.kind(),
                            format!("cannot create {}: {err}", target.display()),
                        ));
                    }
                }
            }
        }
    }
    Err(io::Error::other(format!("no free name for {stem}.{ext} in {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_safe() {
        assert_eq!(slug("../../etc/passwd", 48, "x"), "etc-passwd");
        assert_eq!(slug("None (raw)", 48, "x"), "none-raw");
        assert_eq!(slug("Ünïcödé 猫 cat!", 48, "x"), "n-c-d-cat");
        assert_eq!(slug("猫猫", 48, "untitled"), "untitled");
        assert_eq!(slug("..", 48, "untitled"), "untitled");
        let long = "word ".repeat(60);
        let s = slug(&long, PROMPT_SLUG_CHARS, "x");
        assert!(s.len() <= PROMPT_SLUG_CHARS, "{} chars", s.len());
        assert!(!s.ends_with('-') && !s.starts_with('-'));
        for input in ["a/b\\c", "C:\\x", "\0nul", "a\nb"] {
            assert!(
                slug(input, 48, "x")
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
        }
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write_new_file(dir.path(), "img", "png", b"one").expect("first");
        let b = write_new_file(dir.path(), "img", "png", b"two").expect("second");
        let c = write_new_file(dir.path(), "img", "png", b"three").expect("third");
        assert_eq!(a.file_name().and_then(|n| n.to_str()), Some("img.png"));
        assert_eq!(b.file_name().and_then(|n| n.to_str()), Some("img-2.png"));
        assert_eq!(c.file_name().and_then(|n| n.to_str()), Some("img-3.png"));
        assert_eq!(fs_err::read(&a).expect("read"), b"one");
        assert_eq!(fs_err::read(&b).expect("read"), b"two");
        let leftovers: Vec<_> = fs_err::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn image_names_are_recognised_with_any_timestamp_suffix_and_format() {
        let stem = image_stem("20261123-093005", "Cinematic", "A red fox!", 42);
        for name in [format!("{stem}.png"), format!("{stem}-3.webp"), format!("{stem}.JPG")] {
            assert!(could_be_image_of(&name, "Cinematic", "A red fox!", 42), "{name}");
        }
        for name in [
            format!("{stem}.latent"),
            format!("{stem}-1.png"),
            format!("{stem}.png.tmp"),
            image_stem("x", "Cinematic", "A red fox!", 142) + ".png",
            image_stem("x", "Photoreal", "A red fox!", 42) + ".png",
        ] {
            assert!(!could_be_image_of(&name, "Cinematic", "A red fox!", 42), "{name}");
        }
    }

    #[test]
    fn new_folders_never_reuse_a_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names: Vec<String> = (0..3)
            .map(|_| create_new_dir(dir.path(), "20261123-093005_all-profiles").expect("dir"))
            .collect();
        assert_eq!(
            names,
            [
                "20261123-093005_all-profiles",
                "20261123-093005_all-profiles-2",
                "20261123-093005_all-profiles-3"
            ]
        );
    }
}
