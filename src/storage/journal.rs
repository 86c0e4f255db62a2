//! The persistent queue's files: every submitted job is written here before work starts, and
//! every saved image, finished item and ended job is recorded as it happens, so a crash at any
//! point can be resumed with each image made exactly once.
//!
//! ```text
//! <output root>/.imagelab/
//!   writers/<writer>.lock      exclusive lock held by a live process for its whole life
//!   jobs/<job id>/job.json     the plan (any serde type), written once, atomically
//!   jobs/<job id>/owner.lock   exclusive lock held by the process that has the job queued
//!   jobs/<job id>/<writer>.jsonl   that process's progress records, append-only
//!   jobs/<job id>/settled      present once the job ended and every image is logged
//! ```
//!
//! One progress file per writer (a process, named by its `INSTANCE_ID`, pid and a random
//! part) rather than one shared file: appends from several machines to one file on a network
//! file system are not atomic, while a file with a single writer needs no coordination, and a
//! reader takes the union of every writer's records. The engine layer gives the records their
//! meaning (`engine::queue`); this module only writes and reads them, crash-safely: the job
//! file by rename, records as whole lines (a torn last line of a killed writer is skipped and
//! reported), synced where a later decision depends on them.
//!
//! Locks are advisory `flock`s: they end with the process, `kill -9` included, so "is anyone
//! running this job?" is answered by trying the job's `owner.lock`, and "is this temporary
//! file being written?" by trying its writer's lock.
//!
//! Shards: several processes (Slurm array tasks on several machines) can run one job into one
//! shared folder, each taking the items with `index % count == shard` ([`Shard`]): each holds
//! `owner.lock` shared and `owner.shard-<k>-of-<n>.lock` exclusively, and writes its own
//! progress file, so no file is written by two of them. A whole-job claim needs `owner.lock`
//! exclusively, so it waits for every shard to end.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::durable::{self, try_lock_exclusive};
use super::jobs_log::ItemStatus;
use super::naming::slug;

/// The journal's folder inside the output root.
pub const JOURNAL_DIR: &str = ".imagelab";
/// The job file's name inside a job's folder.
pub const JOB_FILE: &str = "job.json";
/// The lock a process holds while it has the job queued or running.
pub const OWNER_LOCK: &str = "owner.lock";
/// An empty file a job gets once it ended and every image it saved is in a jobs-log line:
/// starts skip such jobs without reading them.
pub const SETTLED_MARKER: &str = "settled";
/// `format` of a job file.
pub const JOB_FORMAT: &str = "imagelab-job";
/// `version` of the job file and record format this build writes (and the newest it reads).
pub const JOB_FORMAT_VERSION: u32 = 1;

/// A job file: the plan and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFile<P> {
    /// Always [`JOB_FORMAT`].
    pub format: String,
    /// [`JOB_FORMAT_VERSION`] when written.
    pub version: u32,
    /// The job's id (its folder's name).
    pub id: String,
    /// RFC 3339 time of submission.
    pub created: String,
    /// The backend that ran it (`candle`, `mock`); `resume` uses the same unless told.
    pub backend: String,
    /// The working folder of the submitting process: relative paths in the plan (an init
    /// image, a model folder) are relative to it.
    pub cwd: Option<PathBuf>,
    /// The writer that created it.
    pub writer: String,
    /// The work.
    pub plan: P,
}

/// How a job ended for good (a job with no end record is unfinished: resumable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobEnd {
    /// Every item reached its final status.
    Finished,
    /// The user cancelled it (or removed it from the queue).
    Cancelled,
    /// The user chose not to resume it (or replaced it with an edited copy).
    Discarded,
}

/// One line of a progress file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum ProgressRecord {
    /// The first line: who writes this file.
    Writer {
        /// The writer's id (the file's name).
        writer: String,
        /// Host name, for people reading the files.
        host: String,
        /// Process id.
        pid: u32,
        /// `INSTANCE_ID`, when set.
        instance: Option<String>,
        /// RFC 3339 time the writer started.
        started: String,
        /// `imagelab x.y.z`.
        version: String,
    },
    /// An image is on disk under its final name (written after the file and its folder were
    /// synced; not synced itself: the image's own metadata names its job, item and seed).
    Image {
        /// Item index in the plan.
        item: usize,
        /// The image's seed (names it within the item).
        seed: u64,
        /// Path relative to the output root.
        path: String,
    },
    /// An item ended (or an interrupted part of it was logged): its status and the images its
    /// jobs-log line lists; `logged` is false when that line could not be written.
    Item {
        /// Item index in the plan.
        item: usize,
        /// `done`, `failed`, `cancelled` (final) or `interrupted` (more to do).
        status: ItemStatus,
        /// Images listed in the jobs-log line, relative to the output root.
        paths: Vec<String>,
        /// Whether the jobs-log line was written.
        logged: bool,
    },
    /// The job's place in its queue (lower runs first); the newest record wins.
    Rank {
        /// The sort key.
        rank: f64,
    },
    /// The job ended for good.
    End {
        /// How.
        status: JobEnd,
        /// Why, for people.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// One of `count` parts of a job: the items whose index is `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// Which part, from 0.
    pub index: u32,
    /// How many parts.
    pub count: u32,
}

impl Shard {
    /// Parses `K/N` (0 ≤ K < N), as `--shard` takes it.
    ///
    /// # Errors
    /// Not `K/N`, or K ≥ N, or N = 0.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (index, count) = text
            .split_once('/')
            .and_then(|(k, n)| Some((k.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?)))
            .ok_or_else(|| format!("{text:?} is not K/N (e.g. 0/4)"))?;
        if count == 0 || index >= count {
            return Err(format!("{text:?}: K must be below N (0/4 … 3/4)"));
        }
        Ok(Self { index, count })
    }

    /// Whether item `index` of a plan belongs to this shard.
    pub fn has_item(self, index: usize) -> bool {
        index % self.count as usize == self.index as usize
    }
}

/// A job read back: its file and every writer's records.
#[derive(Debug, Clone)]
pub struct JobRead<P> {
    /// The job file.
    pub file: JobFile<P>,
    /// Every record of every writer, file by file (writer name order), line order within one.
    pub records: Vec<ProgressRecord>,
    /// Lines that could not be read (a writer killed in mid-line), skipped.
    pub damaged_lines: usize,
}

/// The journal of one output root, as one process writes it: its writer id and lock.
#[derive(Debug)]
pub struct Journal {
    root: PathBuf,
    writer: String,
    instance: Option<String>,
    host: String,
    _lock: fs_err::File,
}

/// A journal closed in order (its engine ended) removes its writer lock, so a run leaves no
/// file behind for it: a missing lock reads as "that writer is gone", as a released one does.
/// Only files this writer wrote are named by it, and it writes no more.
impl Drop for Journal {
    fn drop(&mut self) {
        let _ = fs_err::remove_file(writer_lock_path(&self.root, &self.writer));
    }
}

/// Distinguishes journals opened by one process (tests open many).
static OPENED: AtomicU32 = AtomicU32::new(0);

impl Journal {
    /// Opens the journal of `root` for writing: creates its folders and takes a fresh writer
    /// lock, held until this value is dropped.
    ///
    /// # Errors
    /// I/O errors name the path.
    pub fn open(root: &Path, instance: Option<&str>) -> io::Result<Self> {
        let writers = root.join(JOURNAL_DIR).join("writers");
        fs_err::create_dir_all(&writers)?;
        fs_err::create_dir_all(jobs_dir(root))?;
        let name = instance.map_or_else(|| "local".to_owned(), |id| slug(id, 32, "instance"));
        let writer = format!(
            "{name}-{}-{}-{:04x}",
            std::process::id(),
            OPENED.fetch_add(1, Ordering::Relaxed),
            fastrand::u16(..)
        );
        let lock_path = writer_lock_path(root, &writer);
        let mut lock = try_lock_exclusive(&lock_path)?.ok_or_else(|| {
            io::Error::other(format!("writer lock taken: {}", lock_path.display()))
        })?;
        let host = host_name();
        let _ = writeln!(lock, "host={host} pid={}", std::process::id());
        Ok(Self {
            root: root.to_path_buf(),
            writer,
            instance: instance.map(str::to_owned),
            host,
            _lock: lock,
        })
    }

    /// This writer's id: names its progress files and tags its temporary files.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// The output root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A new job id: `<YYYYmmdd-HHMMSS>-<8 hex>`, sortable by time, unique in practice.
    pub fn new_job_id(now: chrono::DateTime<chrono::Local>) -> String {
        format!("{}-{:08x}", now.format("%Y%m%d-%H%M%S"), fastrand::u32(..))
    }

    /// Writes a new job (folder, `job.json` synced and renamed into place, owner lock taken)
    /// before any of its work starts, and opens this writer's progress file for it.
    ///
    /// # Errors
    /// I/O errors name the path; nothing is left behind on failure.
    pub fn create_job<P: Serialize>(
        &self,
        id: &str,
        backend: &str,
        cwd: Option<PathBuf>,
        plan: &P,
    ) -> io::Result<JobHandle> {
        check_job_id(id)?;
        let dir = job_dir(&self.root, id);
        fs_err::create_dir(&dir)?;
        let created = chrono::Local::now();
        let result = (|| {
            let owner = try_lock_exclusive(&dir.join(OWNER_LOCK))?
                .ok_or_else(|| io::Error::other(format!("{id} is locked")))?;
            let file = JobFile {
                format: JOB_FORMAT.to_owned(),
                version: JOB_FORMAT_VERSION,
                id: id.to_owned(),
                created: created.to_rfc3339(),
                backend: backend.to_owned(),
                cwd,
                writer: self.writer.clone(),
                plan,
            };
            let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
            durable::write_atomic(&dir.join(JOB_FILE), &bytes, &self.writer)?;
            durable::sync_dir(&jobs_dir(&self.root));
            let mut handle = self.handle(id, owner)?;
            handle.created_ms = Some(created.timestamp_millis() as f64);
            Ok(handle)
        })();
        if result.is_err() {
            let _ = fs_err::remove_dir_all(&dir);
        }
        result
    }

    /// Takes a job over (to resume, reconcile or discard it): `Ok(None)` when a live process
    /// holds it.
    ///
    /// # Errors
    /// A bad id, a missing job, I/O errors (named).
    pub fn claim(&self, id: &str) -> io::Result<Option<JobHandle>> {
        check_job_id(id)?;
        let dir = job_dir(&self.root, id);
        if !dir.join(JOB_FILE).is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no job {id} in {}", jobs_dir(&self.root).display()),
            ));
        }
        match try_lock_exclusive(&dir.join(OWNER_LOCK))? {
            Some(owner) => self.handle(id, owner).map(Some),
            None => Ok(None),
        }
    }

    /// Takes one shard of a job (see the module docs): `Ok(None)` when the whole job or that
    /// shard is held by a live process.
    ///
    /// # Errors
    /// A bad id, a missing job, I/O errors (named).
    pub fn claim_shard(&self, id: &str, shard: Shard) -> io::Result<Option<JobHandle>> {
        check_job_id(id)?;
        let dir = job_dir(&self.root, id);
        if !dir.join(JOB_FILE).is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no job {id} in {}", jobs_dir(&self.root).display()),
            ));
        }
        let Some(owner) = durable::try_lock_shared(&dir.join(OWNER_LOCK))? else {
            return Ok(None);
        };
        let name = format!("owner.shard-{}-of-{}.lock", shard.index, shard.count);
        let Some(part) = try_lock_exclusive(&dir.join(name))? else { return Ok(None) };
        let mut handle = self.handle(id, owner)?;
        handle.shard = Some((shard, part));
        Ok(Some(handle))
    }

    fn handle(&self, id: &str, owner: fs_err::File) -> io::Result<JobHandle> {
        let dir = job_dir(&self.root, id);
        let path = dir.join(format!("{}.jsonl", self.writer));
        let progress = fs_err::OpenOptions::new().create(true).append(true).open(&path)?;
        let len = progress.metadata()?.len();
        let mut handle = JobHandle {
            root: self.root.clone(),
            id: id.to_owned(),
            progress,
            len,
            created_ms: None,
            shard: None,
            unlogged: false,
            _owner: owner,
        };
        if len == 0 {
            handle.record(
                &ProgressRecord::Writer {
                    writer: self.writer.clone(),
                    host: self.host.clone(),
                    pid: std::process::id(),
                    instance: self.instance.clone(),
                    started: chrono::Local::now().to_rfc3339(),
                    version: super::metadata::version_string(),
                },
                true,
            )?;
            durable::sync_dir(&dir);
        }
        Ok(handle)
    }
}

/// A job this process holds (its owner lock) with its progress file open. Dropping it
/// releases the job.
#[derive(Debug)]
pub struct JobHandle {
    root: PathBuf,
    id: String,
    progress: fs_err::File,
    len: u64,
    created_ms: Option<f64>,
    /// A shard claim: which, and its lock.
    shard: Option<(Shard, fs_err::File)>,
    /// An item's jobs-log line could not be written: the job is not settled when it ends.
    unlogged: bool,
    _owner: fs_err::File,
}

impl JobHandle {
    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The shard this handle holds, when it holds one shard rather than the whole job.
    pub fn shard(&self) -> Option<Shard> {
        self.shard.as_ref().map(|(shard, _)| *shard)
    }

    /// For a job this handle created: its creation time in Unix milliseconds, the queue rank
    /// it starts with (the rank a reader derives from `created` when no `rank` record says
    /// otherwise).
    pub fn created_ms(&self) -> Option<f64> {
        self.created_ms
    }

    /// Appends one record as one line (synced when `sync`). A failed write is cut back off,
    /// so the next record never lands glued to a fragment.
    ///
    /// # Errors
    /// I/O errors name the file.
    pub fn record(&mut self, record: &ProgressRecord, sync: bool) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let written = self
            .progress
            .write_all(&line)
            .and_then(|()| if sync { self.progress.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(err) => {
                let _ = self.progress.set_len(self.len);
                Err(err)
            }
        }
    }

    /// Records an image saved under its final name.
    ///
    /// # Errors
    /// As [`record`](Self::record).
    pub fn image_saved(&mut self, item: usize, seed: u64, path: &str) -> io::Result<()> {
        self.record(&ProgressRecord::Image { item, seed, path: path.to_owned() }, false)
    }

    /// Records an item's end (or an interrupted part of it), synced.
    ///
    /// # Errors
    /// As [`record`](Self::record).
    pub fn item_ended(
        &mut self,
        item: usize,
        status: ItemStatus,
        paths: &[String],
        logged: bool,
    ) -> io::Result<()> {
        self.unlogged |= !logged && !paths.is_empty();
        let record = ProgressRecord::Item { item, status, paths: paths.to_vec(), logged };
        self.record(&record, true)
    }

    /// Records the job's end, synced, and marks it settled unless a line of it was not
    /// written (the next start writes it from the images, then settles the job).
    ///
    /// # Errors
    /// As [`record`](Self::record).
    pub fn ended(&mut self, status: JobEnd, reason: Option<&str>) -> io::Result<()> {
        self.record(&ProgressRecord::End { status, reason: reason.map(str::to_owned) }, true)?;
        if !self.unlogged {
            let _ = mark_settled(&self.root, &self.id);
        }
        Ok(())
    }

    /// Records the job's place in the queue, synced.
    ///
    /// # Errors
    /// As [`record`](Self::record).
    pub fn ranked(&mut self, rank: f64) -> io::Result<()> {
        self.record(&ProgressRecord::Rank { rank }, true)
    }
}

/// `<root>/.imagelab/jobs`.
pub fn jobs_dir(root: &Path) -> PathBuf {
    root.join(JOURNAL_DIR).join("jobs")
}

/// `<root>/.imagelab/jobs/<id>`.
pub fn job_dir(root: &Path, id: &str) -> PathBuf {
    jobs_dir(root).join(id)
}

/// `<root>/.imagelab/writers/<writer>.lock`.
pub fn writer_lock_path(root: &Path, writer: &str) -> PathBuf {
    root.join(JOURNAL_DIR).join("writers").join(format!("{writer}.lock"))
}

/// Whether job `id` of `root` ended with every image logged (its [`SETTLED_MARKER`]).
pub fn is_settled(root: &Path, id: &str) -> bool {
    job_dir(root, id).join(SETTLED_MARKER).is_file()
}

/// Marks job `id` of `root` settled (see [`SETTLED_MARKER`]).
///
/// # Errors
/// I/O errors name the path.
pub fn mark_settled(root: &Path, id: &str) -> io::Result<()> {
    let path = job_dir(root, id).join(SETTLED_MARKER);
    fs_err::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
    Ok(())
}

/// Removes job `id`'s [`SETTLED_MARKER`]: it runs again (`resume --retry-failed` of a job
/// that ended with failed items). Missing is fine.
///
/// # Errors
/// I/O errors name the path.
pub fn unsettle(root: &Path, id: &str) -> io::Result<()> {
    match fs_err::remove_file(job_dir(root, id).join(SETTLED_MARKER)) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether a live process holds job `id` of `root`.
pub fn is_job_live(root: &Path, id: &str) -> bool {
    durable::is_locked(&job_dir(root, id).join(OWNER_LOCK))
}

/// Whether `root` has a journal.
pub fn exists(root: &Path) -> bool {
    jobs_dir(root).is_dir()
}

/// The ids of every job in `root`'s journal, oldest first (ids start with their time).
///
/// # Errors
/// The jobs folder exists but cannot be listed.
pub fn job_ids(root: &Path) -> io::Result<Vec<String>> {
    let dir = jobs_dir(root);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<String> = fs_err::read_dir(&dir)?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join(JOB_FILE).is_file())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|id| check_job_id(id).is_ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// Reads job `id` of `root`: its file and every writer's records.
///
/// # Errors
/// A missing or unreadable job file, or one of a newer format, named.
pub fn read_job<P: DeserializeOwned>(root: &Path, id: &str) -> io::Result<JobRead<P>> {
    check_job_id(id)?;
    let dir = job_dir(root, id);
    let path = dir.join(JOB_FILE);
    let bytes = fs_err::read(&path)?;
    let invalid = |message: String| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: {message}", path.display()))
    };
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|err| invalid(err.to_string()))?;
    if header.get("format").and_then(serde_json::Value::as_str) != Some(JOB_FORMAT) {
        return Err(invalid(format!("not an {JOB_FORMAT} file")));
    }
    let version = header.get("version").and_then(serde_json::Value::as_u64).unwrap_or(0);
    if version > u64::from(JOB_FORMAT_VERSION) {
        return Err(invalid(format!(
            "format version {version} is newer than this build reads ({JOB_FORMAT_VERSION})"
        )));
    }
    let file: JobFile<P> =
        serde_json::from_value(header).map_err(|err| invalid(err.to_string()))?;
    let mut progress_files: Vec<PathBuf> = fs_err::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    progress_files.sort();
    let mut records = Vec::new();
    let mut damaged_lines = 0;
    for progress in progress_files {
        let Ok(bytes) = fs_err::read(&progress) else {
            damaged_lines += 1;
            continue;
        };
        for line in bytes.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<ProgressRecord>(line) {
                Ok(record) => records.push(record),
                Err(_) => damaged_lines += 1,
            }
        }
    }
    Ok(JobRead { file, records, damaged_lines })
}

/// Job ids are `[A-Za-z0-9_-]`, so one can never name a path outside the jobs folder.
fn check_job_id(id: &str) -> io::Result<()> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a job id: {id:?}")))
    }
}

/// The machine's name, for people reading the journal (`unknown` when it cannot be read).
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| fs_err::read_to_string(path).ok())
        .map(|text| text.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_written_before_work_and_read_back_with_every_writer_s_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Journal::open(dir.path(), Some("gpu 0")).expect("journal");
        let second = Journal::open(dir.path(), None).expect("journal");
        assert!(first.writer().starts_with("gpu-0-") && second.writer().starts_with("local-"));
        assert_ne!(first.writer(), second.writer());
        let id = "20261123-093005-0000abcd";
        let plan = vec!["item 0".to_owned(), "item 1".to_owned()];
        let mut handle = first.create_job(id, "mock", None, &plan).expect("create");
        assert!(is_job_live(dir.path(), id));
        assert!(second.claim(id).expect("claim").is_none(), "held by the first writer");
        handle.image_saved(0, 42, "a_42.png").expect("record");
        handle.item_ended(0, ItemStatus::Done, &["a_42.png".to_owned()], true).expect("record");
        drop(handle);
        assert!(!is_job_live(dir.path(), id), "released with the handle");
        let mut taken = second.claim(id).expect("claim").expect("free now");
        // A writer killed in mid-line leaves a torn record; the next one is still whole.
        taken.image_saved(1, 43, "b_43.png").expect("record");
        taken.ended(JobEnd::Finished, None).expect("record");
        drop(taken);
        let torn = job_dir(dir.path(), id).join(format!("{}.jsonl", first.writer()));
        let mut file = fs_err::OpenOptions::new().append(true).open(&torn).expect("open");
        file.write_all(b"{\"record\":\"ima").expect("write");

        let read: JobRead<Vec<String>> = read_job(dir.path(), id).expect("read");
        assert_eq!(read.file.plan, plan);
        assert_eq!((read.file.backend.as_str(), read.file.version), ("mock", 1));
        assert_eq!(read.damaged_lines, 1);
        let kinds: Vec<&str> = read
            .records
            .iter()
            .map(|record| match record {
                ProgressRecord::Writer { .. } => "writer",
                ProgressRecord::Image { .. } => "image",
                ProgressRecord::Item { .. } => "item",
                ProgressRecord::Rank { .. } => "rank",
                ProgressRecord::End { .. } => "end",
            })
            .collect();
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == "writer").count(), 2);
        assert_eq!(job_ids(dir.path()).expect("ids"), [id]);
    }

    #[test]
    fn job_ids_never_name_a_path_and_newer_formats_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path(), None).expect("journal");
        for bad in ["../x", "a/b", "", ".", "a b"] {
            assert!(journal.claim(bad).is_err(), "{bad:?}");
            assert!(read_job::<serde_json::Value>(dir.path(), bad).is_err(), "{bad:?}");
        }
        let id = "future";
        let handle = journal.create_job(id, "mock", None, &1).expect("create");
        drop(handle);
        let path = job_dir(dir.path(), id).join(JOB_FILE);
        let text = fs_err::read_to_string(&path)
            .expect("read")
            .replace("\"version\": 1", "\"version\": 9");
        fs_err::write(&path, text).expect("write");
        let err = read_job::<u32>(dir.path(), id).expect_err("newer");
        assert!(err.to_string().contains("newer than this build"), "{err}");
    }
}
