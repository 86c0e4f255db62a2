//! The persistent queue as the engine sees it: what the journal's records (`storage::journal`)
//! mean for a [`Plan`], what is left of a job, and the clean-up after a crash.
//!
//! Every job submitted to an engine is journaled before work starts, so every front end gets
//! this without doing anything. Per image the worker writes: the image (synced, linked into
//! place, folder synced), then an `image` record; per item: the jobs-log line (synced), then an
//! `item` record (synced); per job: an `end` record, unless a stop or a crash left work undone.
//!
//! On every engine start, [`maintain`] settles what a crash left behind, for each job no live
//! process holds: leftover temporary files are removed; images on disk that their `image`
//! record never reached are found by name and confirmed by their own metadata (job id, item,
//! seed); images that no jobs-log line lists get one, written from their metadata (status
//! `interrupted`, or `done` when the item has every image); a torn last log line is cut off.
//! [`JobState::remaining_plan`] is then exactly the images not on disk: `imagelab resume`
//! makes each once, in the same folders, with the same seeds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use crate::models::catalog::ModelSource;
use crate::request::{Plan, Sweep, WorkItem};
use crate::storage::durable;
use crate::storage::jobs_log::{self, ItemStatus, JobRecord};
use crate::storage::journal::{self, JobEnd, JobFile, JobHandle, Journal, ProgressRecord};
use crate::storage::metadata::{GenerationInfo, JobRef, recover_file};
use crate::storage::naming::{could_be_image_of, is_image_file};

/// What the journal says about one job.
#[derive(Debug, Clone)]
pub struct JobState {
    /// The job's id.
    pub id: String,
    /// Its file: the plan, the backend, when.
    pub file: JobFile<Plan>,
    /// Images on disk by (item, seed), paths relative to the output root.
    pub images: BTreeMap<(usize, u64), String>,
    /// Items that reached a final status (done, failed, cancelled).
    pub final_status: BTreeMap<usize, ItemStatus>,
    /// Images some jobs-log line lists.
    pub logged: BTreeSet<String>,
    /// How it ended, if it did.
    pub end: Option<JobEnd>,
    /// Its place in the queue (lower first).
    pub rank: f64,
    /// Progress lines that could not be read.
    pub damaged_lines: usize,
}

impl JobState {
    /// Reads job `id` of `root`.
    ///
    /// # Errors
    /// A missing or unreadable job file (named).
    pub fn read(root: &Path, id: &str) -> io::Result<Self> {
        let read = journal::read_job::<Plan>(root, id)?;
        let created_ms = chrono::DateTime::parse_from_rfc3339(&read.file.created)
            .map_or(0.0, |time| time.timestamp_millis() as f64);
        let mut state = Self {
            id: id.to_owned(),
            file: read.file,
            images: BTreeMap::new(),
            final_status: BTreeMap::new(),
            logged: BTreeSet::new(),
            end: None,
            rank: created_ms,
            damaged_lines: read.damaged_lines,
        };
        for record in read.records {
            state.apply(record);
        }
        Ok(state)
    }

    fn apply(&mut self, record: ProgressRecord) {
        match record {
            ProgressRecord::Writer { .. } => {}
            ProgressRecord::Image { item, seed, path } => {
                self.images.insert((item, seed), path);
            }
            ProgressRecord::Item { item, status, paths, logged } => {
                if status != ItemStatus::Interrupted {
                    self.final_status.insert(item, status);
                }
                if logged {
                    self.logged.extend(paths);
                }
            }
            ProgressRecord::Rank { rank } => self.rank = rank,
            ProgressRecord::End { status, .. } => self.end = Some(status),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.file.plan
    }

    /// The seeds of `item` still to make: none once it reached a final status (unless it
    /// failed and `retry_failed`), else those with no image on disk.
    pub fn remaining_seeds(&self, item: &WorkItem, retry_failed: bool) -> Vec<u64> {
        match self.final_status.get(&item.index) {
            Some(ItemStatus::Failed) if retry_failed => {}
            Some(_) => return Vec::new(),
            None => {}
        }
        item.seeds
            .iter()
            .copied()
            .filter(|seed| !self.images.contains_key(&(item.index, *seed)))
            .collect()
    }

    /// What is left to do, as a plan with the same folders and seeds (items keep their index),
    /// or `None` when nothing is.
    pub fn remaining_plan(&self, retry_failed: bool) -> Option<Plan> {
        let plan = self.plan();
        let items: Vec<WorkItem> = plan
            .items
            .iter()
            .filter_map(|item| {
                let seeds = self.remaining_seeds(item, retry_failed);
                (!seeds.is_empty()).then(|| WorkItem { seeds, ..item.clone() })
            })
            .collect();
        (!items.is_empty()).then(|| Plan { items, ..plan.clone() })
    }

    /// Images left to make.
    pub fn remaining_images(&self, retry_failed: bool) -> usize {
        self.plan().items.iter().map(|item| self.remaining_seeds(item, retry_failed).len()).sum()
    }

    /// Items whose final status is failed.
    pub fn failed_items(&self) -> Vec<usize> {
        self.final_status
            .iter()
            .filter(|(_, status)| **status == ItemStatus::Failed)
            .map(|(item, _)| *item)
            .collect()
    }

    /// Whether `--retry-failed` takes this job back although it ended: it ran to its end
    /// (not cancelled or discarded) and some items failed. Such a job is reopened: its
    /// failed items run again, once each, and it ends again.
    pub fn reopens_for_retry(&self) -> bool {
        self.end == Some(JobEnd::Finished) && !self.failed_items().is_empty()
    }

    /// A short description for lists: the prompt and the sweep.
    pub fn label(&self) -> String {
        let request = &self.plan().request;
        let prompt: String = request.prompt.chars().take(40).collect();
        match request.sweep {
            Sweep::None => prompt,
            sweep => format!("[{}] {prompt}", sweep.slug()),
        }
    }
}

/// An unfinished job of the journal, for `imagelab resume --list` and the window's offer.
#[derive(Debug, Clone, PartialEq)]
pub struct UnfinishedJob {
    /// The job's id.
    pub id: String,
    /// When it was submitted (RFC 3339).
    pub created: String,
    /// The backend it ran on.
    pub backend: String,
    /// Prompt and sweep.
    pub label: String,
    /// The sweep folder, relative to the output root, if any.
    pub run_dir: Option<PathBuf>,
    /// Items in the plan.
    pub items: usize,
    /// Images in the plan.
    pub images: usize,
    /// Images left to make.
    pub images_left: usize,
    /// A live process holds it (running or queued elsewhere): not resumable from here.
    pub live: bool,
    /// Its place in the queue.
    pub rank: f64,
}

/// Every job of `root`'s journal that has not ended, in queue order (rank, then age).
///
/// # Errors
/// The journal cannot be listed; unreadable jobs are skipped with a warning.
pub fn unfinished(root: &Path) -> io::Result<Vec<UnfinishedJob>> {
    journal_jobs(root, false, |state| {
        // Every item final but no end record: shards that ended together; the next start
        // marks it finished.
        if state.end.is_some() {
            return None;
        }
        state.remaining_plan(false)?;
        Some(state.remaining_images(false))
    })
}

/// Jobs of `root`'s journal that ran to their end with failed items (see
/// [`JobState::reopens_for_retry`]): what `imagelab resume --retry-failed` takes back besides
/// the unfinished ones. `images_left` counts the failed items' images not on disk.
///
/// # Errors
/// The journal cannot be listed; unreadable jobs are skipped with a warning.
pub fn retryable(root: &Path) -> io::Result<Vec<UnfinishedJob>> {
    journal_jobs(root, true, |state| {
        let left = state.remaining_images(true);
        (state.reopens_for_retry() && left > 0).then_some(left)
    })
}

/// The jobs of `root`'s journal that `images_left` picks (returning the images still to make),
/// summarised, in queue order (rank, then id); settled jobs are not even read unless
/// `settled_too`. Unreadable jobs are skipped with a warning.
fn journal_jobs(
    root: &Path,
    settled_too: bool,
    images_left: impl Fn(&JobState) -> Option<usize>,
) -> io::Result<Vec<UnfinishedJob>> {
    let mut jobs = Vec::new();
    for id in journal::job_ids(root)? {
        if !settled_too && journal::is_settled(root, &id) {
            continue;
        }
        let state = match JobState::read(root, &id) {
            Ok(state) => state,
            Err(err) => {
                tracing::warn!(%err, "skipping an unreadable job");
                continue;
            }
        };
        let Some(images_left) = images_left(&state) else {
            continue;
        };
        jobs.push(UnfinishedJob {
            label: state.label(),
            run_dir: state.plan().run_dir.clone(),
            items: state.plan().items.len(),
            images: state.plan().image_count(),
            images_left,
            live: journal::is_job_live(root, &id),
            rank: state.rank,
            created: state.file.created.clone(),
            backend: state.file.backend.clone(),
            id,
        });
    }
    jobs.sort_by(|a, b| a.rank.total_cmp(&b.rank).then_with(|| a.id.cmp(&b.id)));
    Ok(jobs)
}

/// The jobs-log line of `item` before it runs (settings, status and timing are filled in as
/// it runs): what the plan says, with the job's journal id and the item's index.
pub fn base_record(job: u64, job_id: &str, plan: &Plan, item: &WorkItem) -> JobRecord {
    JobRecord {
        timestamp: String::new(),
        mode: plan.request.mode(),
        prompt: item.prompt.clone(),
        negative: item.negative.clone(),
        all_profiles: plan.request.sweep == Sweep::AllProfiles,
        all_models: plan.request.sweep == Sweep::AllModelsAllProfiles,
        profile: item.profile.clone(),
        model: item.model.display_name.clone(),
        model_id: item.model.model_id(),
        scheduler: String::new(),
        steps: 0,
        cfg: 0.0,
        width: 0,
        height: 0,
        batch_size: plan.request.batch,
        seed_base: plan.seed_base,
        seeds: Vec::new(),
        paths: Vec::new(),
        run_dir: plan.run_dir.as_ref().map(|dir| dir.to_string_lossy().replace('\\', "/")),
        error: None,
        duration_s: 0.0,
        device: String::new(),
        status: ItemStatus::Done,
        job,
        notes: Vec::new(),
        job_id: Some(job_id.to_owned()),
        item: Some(item.index),
        extra: serde_json::Map::new(),
        runner: plan.runner.clone(),
    }
}

/// A jobs-log line written on a later start for images no line listed, from their metadata.
fn reconciled_record(
    state: &JobState,
    item: &WorkItem,
    images: &[(u64, String, Option<GenerationInfo>)],
    status: ItemStatus,
) -> JobRecord {
    let mut record = base_record(0, &state.id, state.plan(), item);
    record.timestamp = chrono::Local::now().to_rfc3339();
    record.status = status;
    record.seeds = images.iter().map(|(seed, _, _)| *seed).collect();
    record.paths = images.iter().map(|(_, path, _)| path.clone()).collect();
    if let Some(info) = images.iter().find_map(|(_, _, info)| info.as_ref()) {
        info.sampler.cli_name().clone_into(&mut record.scheduler);
        record.steps = info.steps;
        record.cfg = info.cfg;
        record.width = info.width;
        record.height = info.height;
        record.model_id.clone_from(&info.model_id);
        record.device.clone_from(&info.device);
        record.notes.clone_from(&info.notes);
    }
    record.notes.push("written on a later start from the images' metadata".to_owned());
    if status == ItemStatus::Interrupted {
        record.error = Some("interrupted: the process ended before the item finished".to_owned());
    }
    record
}

/// What [`maintain`] did, for warnings.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MaintenanceReport {
    /// Leftover temporary files removed.
    pub temp_files_removed: Vec<PathBuf>,
    /// Images found on disk that their journal record never reached.
    pub images_found: usize,
    /// Jobs-log lines written for images no line listed.
    pub lines_written: usize,
    /// Bytes of torn last lines cut off jobs logs.
    pub torn_bytes_cut: usize,
    /// Jobs skipped because a live process holds them.
    pub live_jobs: usize,
    /// Problems met (unreadable jobs, failed writes), each naming its file.
    pub problems: Vec<String>,
}

impl MaintenanceReport {
    /// One line per thing done, for the log panel and stderr.
    pub fn messages(&self) -> Vec<String> {
        let mut messages = Vec::new();
        if !self.temp_files_removed.is_empty() {
            messages.push(format!(
                "removed {} leftover temporary file(s) of an earlier run",
                self.temp_files_removed.len()
            ));
        }
        if self.torn_bytes_cut > 0 {
            messages.push(format!(
                "cut a torn last line ({} bytes) off the jobs log",
                self.torn_bytes_cut
            ));
        }
        if self.images_found > 0 {
            messages.push(format!(
                "found {} image(s) saved just before an earlier run ended",
                self.images_found
            ));
        }
        if self.lines_written > 0 {
            messages.push(format!(
                "wrote {} missing jobs-log line(s) from the images' metadata",
                self.lines_written
            ));
        }
        messages.extend(self.problems.iter().cloned());
        messages
    }
}

/// Settles what crashes left in the output root of `journal` (see the module docs): every job
/// no live process holds is reconciled, leftover temporary files go, torn log lines are cut.
/// `log_path` is where missing lines are written (this process's jobs log).
pub fn maintain(journal: &Journal, log_path: &Path) -> MaintenanceReport {
    let root = journal.root();
    let mut report = MaintenanceReport::default();
    // Torn last lines first, so the lines written below never follow a fragment.
    for log in jobs_logs(root) {
        match jobs_log::repair_torn_tail(&log) {
            Ok(cut) => report.torn_bytes_cut += cut,
            Err(err) => report.problems.push(format!("jobs log: {err}")),
        }
    }
    let mut temp_dirs: BTreeSet<PathBuf> = BTreeSet::from([root.to_path_buf()]);
    let ids = match journal::job_ids(root) {
        Ok(ids) => ids,
        Err(err) => {
            report.problems.push(format!("persistent queue: {err}"));
            Vec::new()
        }
    };
    for id in ids {
        if journal::is_settled(root, &id) {
            continue;
        }
        if journal::is_job_live(root, &id) {
            report.live_jobs += 1;
            continue;
        }
        let state = match JobState::read(root, &id) {
            Ok(state) => state,
            Err(err) => {
                report.problems.push(format!("persistent queue: {err}"));
                continue;
            }
        };
        if state.end.is_some() && state.images.values().all(|path| state.logged.contains(path)) {
            let _ = journal::mark_settled(root, &id);
            continue;
        }
        for item in &state.plan().items {
            temp_dirs.insert(root.join(&item.out_dir));
        }
        temp_dirs.insert(journal::job_dir(root, &id));
        match journal.claim(&id) {
            Ok(Some(mut handle)) => {
                if let Err(err) = reconcile_job(root, &mut handle, log_path, &mut report) {
                    report.problems.push(format!("persistent queue, job {id}: {err}"));
                }
            }
            Ok(None) => report.live_jobs += 1,
            Err(err) => report.problems.push(format!("persistent queue, job {id}: {err}")),
        }
    }
    let writer_lock = |tag: &str| Some(journal::writer_lock_path(root, tag));
    let now = std::time::SystemTime::now();
    for dir in temp_dirs {
        report.temp_files_removed.extend(durable::clean_temp_files(&dir, &writer_lock, now));
    }
    report
}

fn jobs_logs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs_err::read_dir(root) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path.file_name().and_then(|n| n.to_str()).is_some_and(|name| {
                    name.starts_with("jobs") && path.extension().is_some_and(|e| e == "log")
                })
        })
        .collect()
}

/// Reconciles one job this process holds: records images on disk its journal missed, writes
/// the jobs-log lines missing for saved images, and ends the job when nothing is left.
/// Returns the job's state afterwards.
///
/// # Errors
/// The job cannot be read; a failed line or record is counted as a problem instead.
pub fn reconcile_job(
    root: &Path,
    handle: &mut JobHandle,
    log_path: &Path,
    report: &mut MaintenanceReport,
) -> io::Result<JobState> {
    let mut state = JobState::read(root, handle.id())?;
    // A shard settles only its own items: the others may be running elsewhere right now.
    let shard = handle.shard();
    let mine = |item: usize| shard.is_none_or(|shard| shard.has_item(item));
    find_unrecorded_images(root, handle, &mut state, report);
    let unlisted: Vec<(usize, u64, String)> = state
        .images
        .iter()
        .filter(|((item, _), path)| mine(*item) && !state.logged.contains(*path))
        .map(|((item, seed), path)| (*item, *seed, path.clone()))
        .collect();
    if !unlisted.is_empty() {
        // A line may have landed just before the crash, its `item` record not.
        let listed = lines_of_job(root, &state.id);
        let mut by_item: BTreeMap<usize, Vec<(u64, String)>> = BTreeMap::new();
        for (item, seed, path) in unlisted {
            if let Some(status) = listed.get(&path) {
                let _ = handle.item_ended(item, *status, std::slice::from_ref(&path), true);
                if *status != ItemStatus::Interrupted {
                    state.final_status.insert(item, *status);
                }
                state.logged.insert(path);
            } else {
                by_item.entry(item).or_default().push((seed, path));
            }
        }
        for (index, images) in by_item {
            let Some(item) = state.plan().items.iter().find(|item| item.index == index).cloned()
            else {
                continue;
            };
            let with_info: Vec<(u64, String, Option<GenerationInfo>)> = images
                .into_iter()
                .map(|(seed, path)| {
                    let info = recover_file(&root.join(&path)).ok().and_then(|r| r.generation);
                    (seed, path, info)
                })
                .collect();
            let status = match state.final_status.get(&index) {
                Some(status) => *status,
                None if state.remaining_seeds(&item, false).is_empty() => ItemStatus::Done,
                None => ItemStatus::Interrupted,
            };
            let record = reconciled_record(&state, &item, &with_info, status);
            let logged = match jobs_log::append(log_path, &record) {
                Ok(cut) => {
                    report.torn_bytes_cut += cut;
                    report.lines_written += 1;
                    true
                }
                Err(err) => {
                    report.problems.push(format!("jobs log not written: {err}"));
                    false
                }
            };
            if let Err(err) = handle.item_ended(index, status, &record.paths, logged) {
                report.problems.push(format!("persistent queue: {err}"));
            }
            if logged {
                state.logged.extend(record.paths);
            }
            if status != ItemStatus::Interrupted {
                state.final_status.insert(index, status);
            }
        }
    }
    if state.end.is_none() && state.remaining_plan(false).is_none() {
        handle.ended(JobEnd::Finished, Some("every item ended"))?;
        state.end = Some(JobEnd::Finished);
    }
    Ok(state)
}

/// Images of `state`'s job on disk whose `image` record never landed (a crash between the
/// link and the record): matched by name, confirmed by their metadata, then recorded.
fn find_unrecorded_images(
    root: &Path,
    handle: &mut JobHandle,
    state: &mut JobState,
    report: &mut MaintenanceReport,
) {
    let mut listings: HashMap<PathBuf, Vec<String>> = HashMap::new();
    let plan = state.plan().clone();
    let shard = handle.shard();
    for item in plan.items.iter().filter(|item| shard.is_none_or(|s| s.has_item(item.index))) {
        let missing: Vec<u64> = state.remaining_seeds(item, true);
        if missing.is_empty() {
            continue;
        }
        let dir = root.join(&item.out_dir);
        let names = listings.entry(dir.clone()).or_insert_with(|| list_images(&dir));
        for seed in missing {
            let candidates = names
                .iter()
                .filter(|name| could_be_image_of(name, &item.profile, &plan.request.prompt, seed));
            for name in candidates {
                let path = dir.join(name);
                let belongs =
                    recover_file(&path).ok().and_then(|r| r.generation).is_some_and(|info| {
                        info.seed == seed
                            && info.job == Some(JobRef { id: state.id.clone(), item: item.index })
                    });
                if belongs {
                    let relative = crate::engine::relative_path(root, &path);
                    if let Err(err) = handle.image_saved(item.index, seed, &relative) {
                        report.problems.push(format!("persistent queue: {err}"));
                    }
                    state.images.insert((item.index, seed), relative);
                    report.images_found += 1;
                    break;
                }
            }
        }
    }
}

fn list_images(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs_err::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter(|entry| is_image_file(&entry.path()))
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .collect()
}

/// Every image path that a jobs-log line of job `id` lists, with that line's status.
fn lines_of_job(root: &Path, id: &str) -> HashMap<String, ItemStatus> {
    let Ok(contents) = jobs_log::read_all(root) else { return HashMap::new() };
    contents
        .records
        .into_iter()
        .filter(|record| record.job_id.as_deref() == Some(id))
        .flat_map(|record| {
            let status = record.status;
            record.paths.into_iter().map(move |path| (path, status))
        })
        .collect()
}

/// Resolves the plan's relative paths (init image, local models, LoRA files) against the
/// working folder of the process that submitted it, so a resume from elsewhere finds them.
pub fn resolve_relative_paths(plan: &mut Plan, submitted_from: Option<&Path>) {
    let Some(cwd) = submitted_from else { return };
    let absolute = |path: &Path| if path.is_relative() { cwd.join(path) } else { path.to_owned() };
    if let Some(init) = &plan.request.init_image {
        plan.request.init_image = Some(absolute(init));
    }
    for lora in &mut plan.request.loras {
        let candidate = cwd.join(&lora.source);
        if Path::new(&lora.source).is_relative() && candidate.exists() {
            lora.source = candidate.display().to_string();
        }
    }
    for item in &mut plan.items {
        match &mut item.model.source {
            ModelSource::LocalDir(path) | ModelSource::LocalFile(path) => *path = absolute(path),
            ModelSource::Hub(_) => {}
        }
    }
}
