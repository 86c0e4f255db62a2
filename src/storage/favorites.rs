//! Favourites starred in the window: `<output root>/favorites.txt`, one image path per line,
//! relative to the root, so any text tool can use them.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

/// The file name inside the output root.
pub const FAVORITES_FILE: &str = "favorites.txt";

/// Reads the starred paths (relative to the root); a missing file is an empty set.
///
/// # Errors
/// I/O errors other than "not found", naming the file.
pub fn read(root: &Path) -> std::io::Result<BTreeSet<String>> {
    match fs_err::read_to_string(root.join(FAVORITES_FILE)) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_owned)
            .collect()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(err) => Err(err),
    }
}

/// Stars or un-stars `relative` and rewrites the file atomically (temp file + rename).
///
/// # Errors
/// I/O errors naming the file.
pub fn set(root: &Path, relative: &str, starred: bool) -> std::io::Result<BTreeSet<String>> {
    let mut all = read(root)?;
    if starred {
        all.insert(relative.to_owned());
    } else {
        all.remove(relative);
    }
    let tmp = root.join(format!(".{FAVORITES_FILE}.{}.tmp", std::process::id()));
    {
        let mut file = fs_err::File::create(&tmp)?;
        for path in &all {
            writeln!(file, "{path}")?;
        }
        file.sync_all()?;
    }
    fs_err::rename(&tmp, root.join(FAVORITES_FILE))?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_and_unstar() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read(dir.path()).expect("empty").is_empty());
        set(dir.path(), "a.png", true).expect("star");
        set(dir.path(), "sweep/m/b.png", true).expect("star");
        set(dir.path(), "a.png", false).expect("unstar");
        let text = fs_err::read_to_string(dir.path().join(FAVORITES_FILE)).expect("file");
        assert_eq!(text, "sweep/m/b.png\n");
    }
}
