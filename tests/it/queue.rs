//! The persistent queue with the engine in-process (issue 16, parts 1 and 3): jobs journaled
//! before work, resumed with each image once, reconciled after a crash from the images' own
//! metadata, paused, reordered, edited; distinct sweep folders; torn log lines cut.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::TimeZone;
use imagelab::engine::mock::MockBackend;
use imagelab::engine::queue::JobState;
use imagelab::engine::{
    Engine, EngineConfig, Event, JobId, JobSummary, ResumeOptions, StopMode, no_waker, prepare_plan,
};
use imagelab::models::Catalog;
use imagelab::request::{Plan, Profiles, Request, Sweep, build_plan};
use imagelab::storage::jobs_log::{self, ItemStatus, JobRecord};
use imagelab::storage::journal::{self, JobEnd};
use imagelab::storage::metadata::{GenerationInfo, JobRef, png_io};

use crate::engine::assert_no_temp_files;

fn engine(out: &Path, backend: MockBackend) -> Engine {
    let config =
        EngineConfig { output_root: out.to_path_buf(), instance_id: None, previews: false };
    Engine::spawn(Box::new(backend), config, no_waker()).expect("engine starts")
}

fn plan(request: &Request) -> Plan {
    let caps = imagelab::engine::Backend::capabilities(&MockBackend::new());
    prepare_plan(request, &Profiles::builtin(), &Catalog::builtin(), &caps).expect("valid plan")
}

fn sweep(prompt: &str, batch: u32) -> Request {
    Request {
        prompt: prompt.into(),
        sweep: Sweep::AllProfiles,
        batch,
        width: Some(64),
        height: Some(64),
        steps: Some(3),
        seed: Some(21),
        ..Request::default()
    }
}

/// Collects events until every job of `jobs` finished (or a minute passes).
fn until_all_finished(engine: &Engine, jobs: &[JobId]) -> (Vec<Event>, Vec<(JobId, JobSummary)>) {
    let deadline = Instant::now() + Duration::from_mins(1);
    let mut events = Vec::new();
    let mut finished = Vec::new();
    while finished.len() < jobs.len() {
        assert!(Instant::now() < deadline, "jobs {jobs:?} did not finish: {finished:?}");
        let Ok(event) = engine.events().recv_timeout(Duration::from_millis(100)) else { continue };
        if let Event::JobFinished { job, summary } = &event
            && jobs.contains(job)
        {
            finished.push((*job, summary.clone()));
        }
        events.push(event);
    }
    (events, finished)
}

/// Every image of the output folder made by a queued job, by the job, item and seed its own
/// metadata names (each also decoded in full).
pub(crate) fn images_by_metadata(out: &Path) -> BTreeMap<(String, usize, u64), Vec<String>> {
    let mut found: BTreeMap<(String, usize, u64), Vec<String>> = BTreeMap::new();
    for png in crate::util::pngs_below(out) {
        let bytes = fs_err::read(&png).expect("read");
        image::load_from_memory(&bytes).expect("a complete PNG");
        let info = png_io::read_generation_info(&bytes).expect("chunks").expect("our metadata");
        // Images not made by a queued job (a foreign one in a test) are not counted.
        let Some(JobRef { id, item }) = info.job else { continue };
        found.entry((id, item, info.seed)).or_default().push(png.display().to_string());
    }
    found
}

/// Checks the jobs logs against the images: every line valid, every image in exactly one
/// line, every item of `plan` with exactly one final line (status `done`).
pub(crate) fn assert_logs_cover_every_image_once(out: &Path, plan_items: usize) -> Vec<JobRecord> {
    let log = jobs_log::read_all(out).expect("logs");
    assert!(log.damaged.is_empty(), "{:?}", log.damaged);
    let mut listed = BTreeSet::new();
    for record in &log.records {
        for path in &record.paths {
            assert!(listed.insert(path.clone()), "{path} is in two lines");
        }
    }
    let on_disk: BTreeSet<String> = crate::util::pngs_below(out)
        .iter()
        .map(|p| imagelab::engine::relative_path(out, p))
        .collect();
    assert_eq!(listed, on_disk, "the lines list exactly the images on disk");
    let mut finals: BTreeMap<usize, usize> = BTreeMap::new();
    for record in &log.records {
        if record.status != ItemStatus::Interrupted {
            assert_eq!(record.status, ItemStatus::Done, "{record:?}");
            *finals.entry(record.item.expect("item index")).or_default() += 1;
        }
    }
    assert_eq!(finals.len(), plan_items, "every item has a final line");
    assert!(finals.values().all(|count| *count == 1), "one final line per item: {finals:?}");
    log.records
}

#[test]
fn a_stopped_sweep_resumes_in_another_engine_with_each_image_once() {
    let out = tempfile::tempdir().expect("tempdir");
    let request = sweep("resume me", 3);
    let full_plan = plan(&request);
    let items = full_plan.items.len();
    let first = engine(out.path(), MockBackend::new().with_step_delay(Duration::from_millis(10)));
    let job = first.submit(full_plan).expect("submit");
    let id = first.journal_id(job).expect("journaled");
    // Stop once a few images are on disk.
    let deadline = Instant::now() + Duration::from_mins(1);
    let mut saved = 0;
    while saved < 5 {
        assert!(Instant::now() < deadline, "no images");
        if let Ok(Event::ImageSaved { .. }) = first.events().recv_timeout(Duration::from_millis(50))
        {
            saved += 1;
        }
    }
    first.stop(StopMode::AfterImage, "test").expect("stop");
    let (_, finished) = until_all_finished(&first, &[job]);
    assert!(finished[0].1.interrupted > 0, "{:?}", finished[0].1);
    drop(first);

    let second = engine(out.path(), MockBackend::new());
    let unfinished = second.unfinished_jobs().expect("list");
    assert_eq!(unfinished.len(), 1);
    assert_eq!((unfinished[0].id.as_str(), unfinished[0].live), (id.as_str(), false));
    let left = unfinished[0].images_left;
    assert!(left > 0 && left < 3 * items, "{left}");
    let resumed = second.resume(&id, ResumeOptions::default()).expect("resume").expect("work left");
    assert_eq!(resumed.plan.image_count(), left);
    assert_eq!(resumed.plan.run_dir, unfinished[0].run_dir, "the same folder");
    let (_, finished) = until_all_finished(&second, &[resumed.job]);
    assert_eq!(finished[0].1.failed, 0);
    assert!(second.unfinished_jobs().expect("list").is_empty(), "the job is finished");
    assert!(second.resume(&id, ResumeOptions::default()).expect("resume").is_none());

    let images = images_by_metadata(out.path());
    assert_eq!(images.len(), 3 * items, "every image of the plan");
    assert!(images.values().all(|paths| paths.len() == 1), "none twice: {images:?}");
    assert!(images.keys().all(|(job, _, seed)| *job == id && (21..=23).contains(seed)));
    let records = assert_logs_cover_every_image_once(out.path(), items);
    assert!(records.iter().all(|r| r.job_id.as_deref() == Some(id.as_str())));
    assert_no_temp_files(out.path());
}

/// Writes an image of `plan`'s item 0 the way the worker does, then "crashes" before its
/// journal record and log line: only the file exists.
fn image_saved_before_a_crash(out: &Path, id: &str, plan: &Plan, seed: u64) -> String {
    let item = &plan.items[0];
    let info = GenerationInfo {
        prompt: item.prompt.clone(),
        user_prompt: plan.request.prompt.clone(),
        profile: item.profile.clone(),
        model: item.model.display_name.clone(),
        seed,
        width: 8,
        height: 8,
        job: Some(JobRef { id: id.to_owned(), item: 0 }),
        ..Default::default()
    };
    let bytes = png_io::encode_png(8, 8, &[90; 8 * 8 * 3], &info).expect("encode");
    let stem = imagelab::storage::naming::image_stem(
        "20261123-093005",
        &item.profile,
        &plan.request.prompt,
        seed,
    );
    let dir = out.join(&item.out_dir);
    let path = imagelab::storage::naming::write_new_file(&dir, &stem, "png", &bytes).expect("png");
    imagelab::engine::relative_path(out, &path)
}

#[test]
fn an_image_saved_just_before_a_crash_is_found_logged_and_not_made_again() {
    let out = tempfile::tempdir().expect("tempdir");
    let request = Request { batch: 3, ..sweep("crash", 1) };
    let mut single = plan(&Request { sweep: Sweep::None, ..request });
    single.items.truncate(1);
    // A process journaled the job, saved image 0 and died (kill -9) before recording it.
    let journal = journal::Journal::open(out.path(), None).expect("journal");
    let id = "20261123-093005-deadbeef";
    let handle = journal.create_job(id, "mock", None, &single).expect("job");
    let path = image_saved_before_a_crash(out.path(), id, &single, 21);
    // A foreign image with the same name pattern but no job reference is left alone.
    let foreign = out.path().join(path.replace("_21.png", "_22.png"));
    fs_err::write(
        &foreign,
        png_io::encode_png(8, 8, &[1; 192], &GenerationInfo::default()).expect("png"),
    )
    .expect("write");
    drop(handle);
    drop(journal);
    // A torn last line in the jobs log from the same crash.
    fs_err::write(out.path().join("jobs.log"), b"{\"timestamp\":\"2026-").expect("write");

    let engine = engine(out.path(), MockBackend::new());
    let warnings: Vec<String> = engine
        .events()
        .try_iter()
        .filter_map(|e| match e {
            Event::Warning(text) => Some(text),
            _ => None,
        })
        .collect();
    assert!(warnings.iter().any(|w| w.contains("found 1 image")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("torn last line")), "{warnings:?}");
    let log = jobs_log::read_all(out.path()).expect("log");
    assert!(log.damaged.is_empty(), "the torn line was cut, not glued: {:?}", log.damaged);
    assert_eq!(log.records.len(), 1, "a line for the image nobody logged");
    assert_eq!(log.records[0].paths, std::slice::from_ref(&path));
    assert_eq!(log.records[0].status, ItemStatus::Interrupted);
    assert_eq!(log.records[0].seeds, [21]);

    let state = JobState::read(out.path(), id).expect("state");
    assert_eq!(state.images.get(&(0, 21)), Some(&path));
    let resumed = engine.resume(id, ResumeOptions::default()).expect("resume").expect("left");
    assert_eq!(resumed.plan.items[0].seeds, [22, 23], "seed 21 is not made again");
    let (_, finished) = until_all_finished(&engine, &[resumed.job]);
    assert_eq!(finished[0].1.done, 1);
    let images = images_by_metadata(out.path());
    assert_eq!(images.len(), 3);
    assert!(foreign.exists(), "not ours: untouched");
    let state = JobState::read(out.path(), id).expect("state");
    assert_eq!(state.end, Some(JobEnd::Finished));
}

/// JPEG and WebP images carry their job reference in XMP: a crash between such an image and
/// its record is settled like a PNG's (found by name, confirmed by its own metadata, logged,
/// not made again).
#[test]
fn a_jpeg_or_webp_saved_just_before_a_crash_is_found_by_its_own_metadata() {
    use imagelab::storage::metadata::encode::encode_image;
    use imagelab::vocab::{OutputFormat, SaveOptions};
    for format in [OutputFormat::Jpeg, OutputFormat::Webp] {
        let out = tempfile::tempdir().expect("tempdir");
        let mut single = plan(&Request { sweep: Sweep::None, ..sweep("crash", 2) });
        single.items.truncate(1);
        let journal = journal::Journal::open(out.path(), None).expect("journal");
        let id = "20261123-093005-0badcafe";
        let handle = journal.create_job(id, "mock", None, &single).expect("job");
        let item = &single.items[0];
        let info = GenerationInfo {
            prompt: item.prompt.clone(),
            user_prompt: single.request.prompt.clone(),
            profile: item.profile.clone(),
            model: item.model.display_name.clone(),
            seed: 21,
            width: 16,
            height: 16,
            job: Some(JobRef { id: id.to_owned(), item: 0 }),
            ..Default::default()
        };
        let options = SaveOptions { format, ..SaveOptions::default() };
        let bytes = encode_image(16, 16, &[90; 16 * 16 * 3], &info, options).expect("encode");
        let stem = imagelab::storage::naming::image_stem(
            "20261123-093005",
            &item.profile,
            &single.request.prompt,
            21,
        );
        let written = imagelab::storage::naming::write_new_file(
            &out.path().join(&item.out_dir),
            &stem,
            format.extension(),
            &bytes,
        )
        .expect("write");
        let path = imagelab::engine::relative_path(out.path(), &written);
        drop(handle);
        drop(journal);

        let engine = engine(out.path(), MockBackend::new());
        let state = JobState::read(out.path(), id).expect("state");
        assert_eq!(state.images.get(&(0, 21)), Some(&path), "{format:?}");
        let log = jobs_log::read_all(out.path()).expect("log");
        assert_eq!(log.records.len(), 1, "{format:?}: a line for the image nobody logged");
        assert_eq!(log.records[0].paths, std::slice::from_ref(&path));
        let resumed = engine.resume(id, ResumeOptions::default()).expect("resume").expect("left");
        assert_eq!(resumed.plan.items[0].seeds, [22], "{format:?}: seed 21 is not made again");
        let (_, finished) = until_all_finished(&engine, &[resumed.job]);
        assert_eq!(finished[0].1.done, 1, "{format:?}");
    }
}

#[test]
fn cancelled_jobs_are_not_resumed_and_sweeps_of_the_same_second_get_their_own_folder() {
    let out = tempfile::tempdir().expect("tempdir");
    let engine = engine(out.path(), MockBackend::new().with_step_delay(Duration::from_millis(5)));
    let now = chrono::Local.with_ymd_and_hms(2026, 11, 23, 9, 30, 5).single().expect("time");
    let build = |prompt: &str| {
        build_plan(&sweep(prompt, 1), &Profiles::builtin(), &Catalog::builtin(), now, || 1)
            .expect("plan")
    };
    engine.pause(true).expect("pause");
    let a = engine.submit(build("first")).expect("submit");
    let b = engine.submit(build("second")).expect("submit");
    let dirs: Vec<_> = fs_err::read_dir(out.path())
        .expect("list")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("20261123"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(dirs, ["20261123-093005_all-profiles", "20261123-093005_all-profiles-2"]);
    engine.cancel(b).expect("cancel");
    engine.pause(false).expect("resume the queue");
    engine.cancel(a).expect("cancel the running one");
    let (_, finished) = until_all_finished(&engine, &[a, b]);
    assert_eq!(finished.len(), 2);
    assert!(engine.unfinished_jobs().expect("list").is_empty(), "the user's cancel is final");
    for job in [a, b] {
        let id = engine.journal_id(job).expect("id");
        assert_eq!(JobState::read(out.path(), &id).expect("state").end, Some(JobEnd::Cancelled));
    }
}

#[test]
fn a_paused_queue_can_be_reordered_and_edited_and_the_order_survives_a_restart() {
    let out = tempfile::tempdir().expect("tempdir");
    let single = |prompt: &str| Request { sweep: Sweep::None, ..sweep(prompt, 1) };
    let first = engine(out.path(), MockBackend::new());
    first.pause(true).expect("pause");
    let jobs: Vec<JobId> = ["one", "two", "three"]
        .iter()
        .map(|p| first.submit(plan(&single(p))).expect("submit"))
        .collect();
    first.move_job(jobs[2], 0).expect("move");
    let edited = first.replace(jobs[1], plan(&single("two, edited"))).expect("edit");
    // Wait until the engine took every command, then close it with the queue still held.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_edit = false;
    while !seen_edit {
        assert!(Instant::now() < deadline, "the edit never arrived");
        if let Ok(Event::Queued { job, position }) =
            first.events().recv_timeout(Duration::from_millis(50))
            && job == edited
        {
            assert_eq!(position, 2, "in the edited job's place");
            seen_edit = true;
        }
    }
    drop(first);

    let second = engine(out.path(), MockBackend::new());
    let order: Vec<String> =
        second.unfinished_jobs().expect("list").into_iter().map(|job| job.label).collect();
    assert_eq!(order, ["three", "one", "two, edited"], "reordered, edited, and kept");
}

#[test]
fn a_second_process_cannot_take_a_job_that_is_queued_here() {
    let out = tempfile::tempdir().expect("tempdir");
    let first = engine(out.path(), MockBackend::new());
    first.pause(true).expect("pause");
    let job = first.submit(plan(&Request { sweep: Sweep::None, ..sweep("mine", 1) })).expect("s");
    let id = first.journal_id(job).expect("id");
    let second = engine(out.path(), MockBackend::new());
    let listed = second.unfinished_jobs().expect("list");
    assert!(listed[0].live, "held by the first engine");
    let err = second.resume(&id, ResumeOptions::default()).expect_err("busy");
    assert!(matches!(err, imagelab::engine::EngineError::JobBusy(_)), "{err}");
}

/// `resume --retry-failed` takes back a job that ran to its end with a failed item (a Slurm
/// task's `resume --job ID --retry-failed` is the same path): the failed item runs again,
/// once, into the same folder; nothing done is made twice; the job ends and settles again.
#[test]
fn retry_failed_reopens_a_finished_job_and_runs_its_failed_item_once() {
    let out = tempfile::tempdir().expect("tempdir");
    let out_arg = out.path().to_string_lossy().into_owned();
    let args = [
        "generate",
        "--backend",
        "mock",
        "--prompt",
        "a fox",
        "--all-profiles",
        "--batch",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "2",
        "--seed",
        "40",
        "--out",
        &out_arg,
    ];
    // Only the Tim Burton profile's suffix holds these words: one item fails.
    let first = crate::util::imagelab()
        .args(args)
        .env("IMAGELAB_MOCK_FAIL_PROMPT", "gothic fairytale")
        .output()
        .expect("runs");
    assert_eq!(first.status.code(), Some(1), "{}", crate::util::stderr(&first));
    let ids = journal::job_ids(out.path()).expect("jobs");
    assert_eq!(ids.len(), 1);
    let state = JobState::read(out.path(), &ids[0]).expect("job");
    assert_eq!(state.end, Some(JobEnd::Finished));
    let failed = state.failed_items();
    assert_eq!(failed.len(), 1, "{:?}", state.final_status);
    assert!(state.reopens_for_retry());
    let items = state.plan().items.len();
    assert_eq!(crate::util::pngs_below(out.path()).len(), 2 * (items - 1));

    // A plain resume leaves a finished job alone.
    let plain = crate::util::imagelab().args(["resume", &out_arg]).output().expect("runs");
    assert_eq!(plain.status.code(), Some(0), "{}", crate::util::stderr(&plain));
    assert!(crate::util::stderr(&plain).contains("nothing to resume"));

    let retried = crate::util::imagelab()
        .args(["resume", &out_arg, "--retry-failed", "--json"])
        .output()
        .expect("runs");
    assert_eq!(retried.status.code(), Some(0), "{}", crate::util::stderr(&retried));
    let images = images_by_metadata(out.path());
    assert_eq!(images.len(), 2 * items, "every image of the plan");
    assert!(images.values().all(|paths| paths.len() == 1), "none twice: {images:?}");
    let log = jobs_log::read_all(out.path()).expect("logs");
    let lines: Vec<&JobRecord> = log.records.iter().filter(|r| r.item == Some(failed[0])).collect();
    let statuses: Vec<ItemStatus> = lines.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![ItemStatus::Failed, ItemStatus::Done]);
    assert!(lines[0].paths.is_empty() && lines[1].paths.len() == 2, "{lines:?}");
    let state = JobState::read(out.path(), &ids[0]).expect("job");
    assert!(state.failed_items().is_empty() && state.end == Some(JobEnd::Finished));
    assert!(journal::is_settled(out.path(), &ids[0]));

    // Nothing failed any more: a second retry has nothing to do.
    let again = crate::util::imagelab()
        .args(["resume", &out_arg, "--retry-failed"])
        .output()
        .expect("runs");
    assert_eq!(again.status.code(), Some(0), "{}", crate::util::stderr(&again));
    assert!(crate::util::stderr(&again).contains("nothing to resume"));
    assert_eq!(crate::util::pngs_below(out.path()).len(), 2 * items);
}
