//! Writes that survive a crash or a power cut, and the clean-up after one: data synced before
//! it gets its final name, names made durable by syncing their folder, whole-file replacement
//! by rename, advisory locks that die with their process, and the removal of our own leftover
//! temporary files.
//!
//! Temporary files are named `.<name>.<tag>.<ext>.tmp`, where the tag names the writer (see
//! [`process_tag`] and `storage::journal`): a leftover is removed on the next start once no live
//! process holds that writer's lock (or, for tags with no lock file, once it is old).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// How old a temporary file of a writer without a lock file must be before it is removed.
pub const UNLOCKED_TEMP_MAX_AGE: Duration = Duration::from_mins(15);

/// A tag for this process's temporary files when no journal writer names them:
/// `p<pid>-<random>`, unique among processes sharing a folder (even several PID 1 containers).
pub fn process_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| format!("p{}-{:08x}", std::process::id(), fastrand::u32(..)))
}

/// The temporary name of `<stem>.<ext>` written by `tag`.
pub fn temp_name(stem: &str, tag: &str, ext: &str) -> String {
    format!(".{stem}.{tag}.{ext}.tmp")
}

/// The writer tag of one of our temporary names (`.<stem>.<tag>.<ext>.tmp`), if it is one.
/// Tags are `[A-Za-z0-9_-]`; stems never start with a dot.
pub fn temp_tag(file_name: &str) -> Option<&str> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (rest, ext) = inner.rsplit_once('.')?;
    let (stem, tag) = rest.rsplit_once('.')?;
    let valid = |s: &str| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    (!stem.is_empty() && !stem.starts_with('.') && valid(tag) && valid(ext)).then_some(tag)
}

/// Writes `bytes` to a new file at `path` (which must not exist) and syncs its data. On any
/// failure — a full disk included — the file is removed again.
///
/// # Errors
/// I/O errors name the path.
pub fn write_synced_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_synced_new_with(path, |file| file.write_all(bytes))
}

/// [`write_synced_new`] with the content written by `write_content` (tests inject failing
/// writers).
///
/// # Errors
/// I/O errors name the path; `write_content`'s error.
pub fn write_synced_new_with(
    path: &Path,
    write_content: impl FnOnce(&mut fs_err::File) -> io::Result<()>,
) -> io::Result<()> {
    let mut new_file = fs_err::OpenOptions::new().write(true).create_new(true).open(path)?;
    let result = write_content(&mut new_file).and_then(|()| new_file.sync_all());
    if result.is_err() {
        drop(new_file);
        let _ = fs_err::remove_file(path);
    }
    result
}

/// Makes the names in `dir` durable (a new link or rename survives a power cut). Best effort:
/// file systems that cannot sync a folder are not an error.
pub fn sync_dir(dir: &Path) {
    if let Ok(folder) = fs_err::File::open(dir) {
        let _ = folder.sync_all();
    }
}

/// Replaces `path` with `bytes` atomically: a synced temporary file renamed over it, then the
/// folder synced. Readers see the old content or the new, never a mix; the temporary file is
/// removed on failure.
///
/// # Errors
/// I/O errors name the path.
pub fn write_atomic(path: &Path, bytes: &[u8], tag: &str) -> io::Result<()> {
    let dir = parent_of(path);
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let (stem, ext) = name.rsplit_once('.').unwrap_or((&name, "dat"));
    let tmp = dir.join(temp_name(stem, tag, ext));
    let _ = fs_err::remove_file(&tmp);
    write_synced_new(&tmp, bytes)?;
    if let Err(err) = fs_err::rename(&tmp, path) {
        let _ = fs_err::remove_file(&tmp);
        return Err(err);
    }
    sync_dir(&dir);
    Ok(())
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Opens (creating) `path` and takes an exclusive advisory lock without waiting. `Ok(None)`
/// when another open file holds it. The lock ends with the returned file, or with the process
/// — also on `kill -9`.
///
/// # Errors
/// The file cannot be opened or locked for another reason.
pub fn try_lock_exclusive(path: &Path) -> io::Result<Option<fs_err::File>> {
    let file = fs_err::OpenOptions::new().read(true).write(true).create(true).open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(io::Error::new(err.kind(), format!("cannot lock {}: {err}", path.display())))
        }
    }
}

/// Opens (creating) `path` and takes a shared advisory lock without waiting: any number of
/// processes may hold it together, none while one holds it exclusively. `Ok(None)` when one
/// does.
///
/// # Errors
/// The file cannot be opened or locked for another reason.
pub fn try_lock_shared(path: &Path) -> io::Result<Option<fs_err::File>> {
    let file = fs_err::OpenOptions::new().read(true).write(true).create(true).open(path)?;
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(io::Error::new(err.kind(), format!("cannot lock {}: {err}", path.display())))
        }
    }
}

/// Whether a live process holds the lock at `path`, shared or exclusive (a missing file: no).
pub fn is_locked(path: &Path) -> bool {
    let Ok(file) = fs_err::OpenOptions::new().read(true).open(path) else { return false };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// Removes our leftover temporary files directly in `dir` (not below it): those whose writer
/// is not alive. `writer_lock` maps a tag to its lock file (`None`: the tag has none, and the
/// file goes only once older than [`UNLOCKED_TEMP_MAX_AGE`]). Returns what was removed.
pub fn clean_temp_files(
    dir: &Path,
    writer_lock: &dyn Fn(&str) -> Option<PathBuf>,
    now: SystemTime,
) -> Vec<PathBuf> {
    let Ok(entries) = fs_err::read_dir(dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(tag) = name.to_str().and_then(temp_tag) else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let dead = match writer_lock(tag) {
            Some(lock) if lock.exists() => !is_locked(&lock),
            _ => meta
                .modified()
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .is_some_and(|age| age >= UNLOCKED_TEMP_MAX_AGE),
        };
        if dead && fs_err::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_round_trip_and_foreign_names_are_left_alone() {
        let name = temp_name("20261123-093005_none-raw_a-fox_42", "w-abc_1", "png");
        assert_eq!(name, ".20261123-093005_none-raw_a-fox_42.w-abc_1.png.tmp");
        assert_eq!(temp_tag(&name), Some("w-abc_1"));
        assert_eq!(temp_tag(&temp_name("job", "t1", "json")), Some("t1"));
        for foreign in [
            "photo.png",
            "notes.tmp",
            ".hidden.tmp",
            ".a.tmp",
            "..x.t.png.tmp",
            ".x.t/../y.png.tmp",
            ".x.t t.png.tmp",
        ] {
            assert_eq!(temp_tag(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn leftovers_go_only_when_their_writer_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live_lock = dir.path().join("live.lock");
        let dead_lock = dir.path().join("dead.lock");
        let held = try_lock_exclusive(&live_lock).expect("lock").expect("free");
        drop(try_lock_exclusive(&dead_lock).expect("lock"));
        assert!(try_lock_exclusive(&live_lock).expect("lock").is_none(), "held elsewhere");
        assert!(is_locked(&live_lock) && !is_locked(&dead_lock));
        let files = ["live", "dead", "nolock"].map(|tag| {
            let path = dir.path().join(temp_name("img", tag, "png"));
            fs_err::write(&path, b"partial").expect("write");
            path
        });
        let other = dir.path().join("keep.png");
        fs_err::write(&other, b"x").expect("write");
        let locks = |tag: &str| match tag {
            "live" => Some(live_lock.clone()),
            "dead" => Some(dead_lock.clone()),
            _ => None,
        };
        let removed = clean_temp_files(dir.path(), &locks, SystemTime::now());
        assert_eq!(removed, vec![files[1].clone()]);
        // A lock-less leftover goes once it is old enough.
        let later = SystemTime::now() + UNLOCKED_TEMP_MAX_AGE + Duration::from_secs(1);
        assert_eq!(clean_temp_files(dir.path(), &locks, later), vec![files[2].clone()]);
        drop(held);
        assert_eq!(clean_temp_files(dir.path(), &locks, SystemTime::now()), vec![files[0].clone()]);
        assert!(other.exists());
    }

    #[test]
    fn atomic_writes_replace_whole_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("job.json");
        write_atomic(&path, b"{\"v\":1}", "t").expect("write");
        write_atomic(&path, b"{\"v\":2}", "t").expect("replace");
        assert_eq!(fs_err::read(&path).expect("read"), b"{\"v\":2}");
        let names: Vec<_> =
            fs_err::read_dir(dir.path()).expect("list").filter_map(Result::ok).collect();
        assert_eq!(names.len(), 1);
        let existing = dir.path().join("exists");
        fs_err::write(&existing, b"x").expect("write");
        assert!(write_synced_new(&existing, b"y").is_err(), "never overwrites");
        assert_eq!(fs_err::read(&existing).expect("read"), b"x");
    }

    #[test]
    fn a_write_that_fails_half_way_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(temp_name("img", "t", "png"));
        let full = |file: &mut fs_err::File| {
            file.write_all(&[7; 1000])?;
            Err(io::Error::new(io::ErrorKind::StorageFull, "No space left on device"))
        };
        let err = write_synced_new_with(&path, full).expect_err("disk full");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(!path.exists(), "the partial temporary file was removed");
    }
}
