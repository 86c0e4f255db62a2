//! File and folder names: slugs that can never escape the output folder, timestamped image
//! names, and claiming a name without ever overwriting.

use std::io;
use std::path::{Path, PathBuf};

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
/// `<stem>.<ext>`, `<stem>-2.<ext>`, `<stem>-3.<ext>` … The data goes to a temporary file first
/// and is linked into place only when complete, so readers never see a half-written image.
///
/// # Errors
/// I/O errors name the path.
pub fn write_new_file(dir: &Path, stem: &str, ext: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    fs_err::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{stem}.{}.{ext}.tmp", std::process::id()));
    fs_err::write(&tmp, bytes)?;
    let result = claim_name(dir, stem, ext, &tmp);
    // The temporary name is gone after a rename, or must be removed after a link.
    let _ = fs_err::remove_file(&tmp);
    result
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
}
