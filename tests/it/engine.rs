//! The engine thread with the mock backend: event order, cancel, skip, queue, failures, sweeps.

use std::path::Path;
use std::time::{Duration, Instant};

use imagelab::engine::mock::MockBackend;
use imagelab::engine::{
    Engine, EngineConfig, Event, JobId, JobSummary, StopMode, no_waker, prepare_plan,
};
use imagelab::models::Catalog;
use imagelab::request::{Plan, Profiles, Request, Sweep};
use imagelab::storage::jobs_log::{self, ItemStatus};

fn engine(out: &Path, backend: MockBackend) -> Engine {
    let config = EngineConfig { output_root: out.to_path_buf(), instance_id: None, previews: true };
    Engine::spawn(Box::new(backend), config, no_waker()).expect("engine starts")
}

fn plan(request: &Request) -> Plan {
    let caps = MockBackend::new();
    let caps = imagelab::engine::Backend::capabilities(&caps);
    prepare_plan(request, &Profiles::builtin(), &Catalog::builtin(), &caps).expect("valid plan")
}

fn small(prompt: &str) -> Request {
    Request {
        prompt: prompt.into(),
        width: Some(64),
        height: Some(64),
        steps: Some(3),
        seed: Some(7),
        ..Request::default()
    }
}

/// Collects events until `job` finishes (or 20 s pass).
fn until_finished(engine: &Engine, job: JobId) -> (Vec<Event>, JobSummary) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut events = Vec::new();
    while Instant::now() < deadline {
        let Ok(event) = engine.events().recv_timeout(Duration::from_millis(100)) else { continue };
        if let Event::JobFinished { job: finished, summary } = &event
            && *finished == job
        {
            let summary = summary.clone();
            events.push(event);
            return (events, summary);
        }
        events.push(event);
    }
    panic!("job {job} did not finish; events: {events:?}");
}

fn kind(event: &Event) -> &'static str {
    match event {
        Event::Queued { .. } => "queued",
        Event::QueueChanged(_) => "queue",
        Event::ModelLoading { .. } => "loading",
        Event::ItemStarted { .. } => "started",
        Event::Progress { .. } => "progress",
        Event::Preview { .. } => "preview",
        Event::ImageSaved { .. } => "image",
        Event::ItemSaved { .. } => "item-saved",
        Event::ItemFailed { .. } => "item-failed",
        Event::ItemCancelled { .. } => "item-cancelled",
        Event::JobFinished { .. } => "finished",
        Event::Warning(_) => "warning",
    }
}

#[test]
fn event_order_for_one_batch() {
    let out = tempfile::tempdir().expect("tempdir");
    let engine = engine(out.path(), MockBackend::new());
    let job = engine.submit(plan(&Request { batch: 2, ..small("a lighthouse") })).expect("submit");
    let (events, summary) = until_finished(&engine, job);
    let order: Vec<&str> = events
        .iter()
        .map(kind)
        .filter(|k| !matches!(*k, "queue" | "loading" | "progress" | "preview"))
        .collect();
    assert_eq!(order, ["queued", "started", "image", "image", "item-saved", "finished"]);
    // Progress for each step of each image arrives before that image is saved.
    let steps: Vec<(usize, usize)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress { image, step, .. } => Some((*image, *step)),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]);
    assert!(events.iter().any(|e| matches!(e, Event::Preview { .. })), "previews were asked for");
    assert_eq!((summary.done, summary.failed, summary.cancelled), (1, 0, 0));
    assert_eq!(summary.paths.len(), 2);
    for path in &summary.paths {
        assert!(path.is_file(), "{}", path.display());
    }
    let log = jobs_log::read_all(out.path()).expect("log");
    assert_eq!(log.records.len(), 1, "one line per item");
    assert_eq!(log.records[0].seeds, vec![7, 8]);
    assert_eq!(log.records[0].status, ItemStatus::Done);
}

#[test]
fn cancel_stops_within_a_step_and_is_logged() {
    let out = tempfile::tempdir().expect("tempdir");
    let backend = MockBackend::new().with_step_delay(Duration::from_millis(30));
    let engine = engine(out.path(), backend);
    let job = engine.submit(plan(&Request { steps: Some(200), ..small("slow") })).expect("submit");
    // Wait for the first step; then take every step already reported, and cancel.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_step = 0;
    while last_step == 0 {
        assert!(Instant::now() < deadline, "no progress");
        if let Ok(Event::Progress { step, .. }) =
            engine.events().recv_timeout(Duration::from_millis(50))
        {
            last_step = step;
        }
    }
    for event in engine.events().try_iter() {
        if let Event::Progress { step, .. } = event {
            last_step = last_step.max(step);
        }
    }
    engine.cancel(job).expect("cancel");
    let (events, summary) = until_finished(&engine, job);
    // The worker polls after every step: at most the step in flight and the one that saw the
    // command finish after the cancel (one more for a step reported while we sent it).
    let final_step = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress { step, .. } => Some(*step),
            _ => None,
        })
        .max()
        .unwrap_or(last_step);
    assert!(
        final_step <= last_step + 3,
        "ran to step {final_step} after cancelling at {last_step}"
    );
    assert!(events.iter().any(|e| matches!(e, Event::ItemCancelled { .. })));
    assert_eq!((summary.done, summary.cancelled), (0, 1));
    assert!(imagelab_pngs(out.path()).is_empty(), "nothing half-written");
    let log = jobs_log::read_all(out.path()).expect("log");
    assert_eq!(log.records.len(), 1);
    assert_eq!(log.records[0].status, ItemStatus::Cancelled);
    assert_eq!(log.records[0].error.as_deref(), Some("cancelled by user"));
}

fn imagelab_pngs(dir: &Path) -> Vec<std::path::PathBuf> {
    crate::util::pngs_below(dir)
}

#[test]
fn five_jobs_run_in_fifo_order() {
    let out = tempfile::tempdir().expect("tempdir");
    let engine = engine(out.path(), MockBackend::new());
    let jobs: Vec<JobId> = (0..5)
        .map(|i| {
            engine
                .submit(plan(&Request { seed: Some(100 + i), ..small(&format!("job {i}")) }))
                .expect("submit")
        })
        .collect();
    let mut finished = Vec::new();
    let mut last_stats = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while finished.len() < 5 && Instant::now() < deadline {
        match engine.events().recv_timeout(Duration::from_millis(100)) {
            Ok(Event::JobFinished { job, summary }) => {
                assert_eq!(summary.done, 1);
                finished.push(job);
            }
            Ok(Event::QueueChanged(stats)) => last_stats = Some(stats),
            _ => {}
        }
    }
    assert_eq!(finished, jobs);
    // The final stats event follows the last JobFinished.
    if let Ok(Event::QueueChanged(stats)) = engine.events().recv_timeout(Duration::from_secs(2)) {
        last_stats = Some(stats);
    }
    let stats = last_stats.expect("stats");
    assert_eq!((stats.queued, stats.running, stats.done), (0, 0, 5));
    assert_eq!(crate::util::pngs_below(out.path()).len(), 5);
}

#[test]
fn skip_moves_to_the_next_item() {
    let out = tempfile::tempdir().expect("tempdir");
    let backend = MockBackend::new().with_step_delay(Duration::from_millis(20));
    let engine = engine(out.path(), backend);
    // 10 steps × 20 ms: item 0 is still running when the skip arrives, even on a busy machine.
    let request = Request { sweep: Sweep::AllProfiles, steps: Some(10), ..small("skip me") };
    let plan = plan(&request);
    let items = plan.items.len();
    let job = engine.submit(plan).expect("submit");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no progress");
        if let Ok(Event::Progress { item: 0, .. }) =
            engine.events().recv_timeout(Duration::from_millis(50))
        {
            break;
        }
    }
    engine.skip_current().expect("skip");
    let (events, summary) = until_finished(&engine, job);
    assert!(events.iter().any(|e| matches!(e, Event::ItemCancelled { item: 0, .. })));
    assert_eq!(summary.cancelled, 1);
    assert_eq!(summary.done, items - 1, "every other item still ran");
    let log = jobs_log::read_all(out.path()).expect("log");
    let skipped: Vec<_> =
        log.records.iter().filter(|r| r.status == ItemStatus::Cancelled).collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].error.as_deref(), Some("skipped by user"));
}

#[test]
fn a_failing_item_does_not_stop_the_sweep() {
    let out = tempfile::tempdir().expect("tempdir");
    // Tim Burton's suffix is unique to that profile.
    let backend = MockBackend::new().failing_prompt("gothic fairytale");
    let engine = engine(out.path(), backend);
    let plan = plan(&Request { sweep: Sweep::AllProfiles, ..small("castle") });
    let items = plan.items.len();
    let job = engine.submit(plan).expect("submit");
    let (events, summary) = until_finished(&engine, job);
    let failed: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::ItemFailed { error, record, .. } => Some(format!("{}: {error}", record.profile)),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].starts_with("Tim Burton: mock: prompt contains"), "{failed:?}");
    assert_eq!((summary.done, summary.failed), (items - 1, 1));
    assert_eq!(summary.errors.len(), 1);
    assert_eq!(crate::util::pngs_below(out.path()).len(), items - 1);
    let log = jobs_log::read_all(out.path()).expect("log");
    assert_eq!(log.records.len(), items, "every item logged, the failure too");
    assert_eq!(log.records.iter().filter(|r| r.error.is_some()).count(), 1);
}

#[test]
fn all_models_sweep_loads_each_model_once() {
    let out = tempfile::tempdir().expect("tempdir");
    let engine = engine(out.path(), MockBackend::new());
    let request = Request { sweep: Sweep::AllModelsAllProfiles, steps: Some(1), ..small("sweep") };
    let plan = plan(&request);
    let models = Catalog::builtin().sweep_models().len();
    assert_eq!(plan.items.len(), models * Profiles::builtin().all().len());
    let job = engine.submit(plan).expect("submit");
    let (events, summary) = until_finished(&engine, job);
    let loads: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::ModelLoading { model, message, .. } if message.starts_with("loading") => {
                Some(model.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(loads.len(), models, "{loads:?}");
    assert_eq!(summary.failed, 0);
    // One folder per model slug inside the sweep folder.
    let run_dir = summary.run_dir.expect("sweep folder");
    let model_dirs = fs_err::read_dir(&run_dir).expect("run dir").count();
    assert_eq!(model_dirs, models);
}

#[test]
fn clear_queue_and_cancel_pending() {
    let out = tempfile::tempdir().expect("tempdir");
    let backend = MockBackend::new().with_step_delay(Duration::from_millis(20));
    let engine = engine(out.path(), backend);
    let first =
        engine.submit(plan(&Request { steps: Some(10), ..small("first") })).expect("submit");
    let second = engine.submit(plan(&small("second"))).expect("submit");
    let third = engine.submit(plan(&small("third"))).expect("submit");
    let fourth = engine.submit(plan(&small("fourth"))).expect("submit");
    engine.cancel(third).expect("cancel pending");
    engine.clear_queue().expect("clear");
    let mut finished = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while finished.len() < 4 && Instant::now() < deadline {
        if let Ok(Event::JobFinished { job, summary }) =
            engine.events().recv_timeout(Duration::from_millis(100))
        {
            if job != first {
                assert_eq!(
                    (summary.items, summary.cancelled),
                    (1, 1),
                    "dropped jobs count their items"
                );
            }
            finished.push((job, summary.done));
        }
    }
    finished.sort_unstable();
    assert_eq!(finished, [(first, 1), (second, 0), (third, 0), (fourth, 0)]);
    assert_eq!(crate::util::pngs_below(out.path()).len(), 1);
}

#[test]
fn shutdown_cancels_the_running_item_and_joins() {
    let out = tempfile::tempdir().expect("tempdir");
    let backend = MockBackend::new().with_step_delay(Duration::from_millis(50));
    let engine = engine(out.path(), backend);
    engine.submit(plan(&Request { steps: Some(400), ..small("forever") })).expect("submit");
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let events = engine.shutdown();
    // 400 steps × 50 ms remain: joining well under that proves the item was cancelled.
    assert!(started.elapsed() < Duration::from_secs(5), "joined in {:?}", started.elapsed());
    assert!(events.iter().any(|e| matches!(e, Event::ItemCancelled { .. })));
    let log = jobs_log::read_all(out.path()).expect("log");
    assert_eq!(log.records[0].status, ItemStatus::Interrupted, "left for resume");
    assert_eq!(log.records[0].error.as_deref(), Some("interrupted: the engine shut down"));
}

/// Waits for a progress event of image `image` of item 0 (that image is then being made).
fn until_image_in_flight(engine: &Engine, image: usize) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut events = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "image {image} never started: {events:?}");
        let Ok(event) = engine.events().recv_timeout(Duration::from_millis(50)) else { continue };
        let found =
            matches!(event, Event::Progress { image: i, step, .. } if i == image && step >= 1);
        events.push(event);
        if found {
            return events;
        }
    }
}

#[test]
fn a_clean_stop_finishes_the_running_image_and_starts_nothing_new() {
    let out = tempfile::tempdir().expect("tempdir");
    let backend = MockBackend::new().with_step_delay(Duration::from_millis(10));
    let engine = engine(out.path(), backend);
    // Two items of four images each, and a second job waiting behind them.
    let request = Request { batch: 4, steps: Some(20), ..small("stop after this") };
    let sweep_plan = plan(&Request { sweep: Sweep::AllProfiles, ..request.clone() });
    let first = engine.submit(sweep_plan.clone()).expect("submit");
    let second = engine.submit(plan(&request)).expect("submit");
    let mut events = until_image_in_flight(&engine, 1);
    engine.stop(StopMode::AfterImage, "SIGTERM").expect("stop");
    engine.stop(StopMode::AfterImage, "SIGINT").expect("a repeat changes nothing");
    let (rest, summary) = until_finished(&engine, first);
    events.extend(rest);
    let saved: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::ImageSaved { item: 0, image, .. } => {
                Some(usize::try_from(image.seed - 7).expect("seed"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(saved, [0, 1], "image 1 was in flight and finished; image 2 never started");
    let last_step_of_image_1 = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress { image: 1, step, .. } => Some(*step),
            _ => None,
        })
        .max();
    assert_eq!(last_step_of_image_1, Some(20), "it ran to its last step");
    assert!(!events.iter().any(|e| matches!(e, Event::Progress { image: 2, .. })));
    let items = sweep_plan.items.len();
    assert_eq!((summary.done, summary.cancelled, summary.interrupted), (0, 0, items));
    // The waiting job ended, unstarted, as soon as the stop came.
    let second_summary = events
        .iter()
        .find_map(|e| match e {
            Event::JobFinished { job, summary } if *job == second => Some(summary.clone()),
            _ => None,
        })
        .expect("the waiting job ended");
    assert_eq!((second_summary.items, second_summary.interrupted), (1, 1), "never started");
    assert!(second_summary.errors[0].contains("SIGTERM"), "{:?}", second_summary.errors);
    // Submissions after a stop end at once, unstarted.
    let late = engine.submit(plan(&small("too late"))).expect("submit");
    let (_, late_summary) = until_finished(&engine, late);
    assert_eq!((late_summary.done, late_summary.interrupted), (0, 1));

    let log = jobs_log::read_all(out.path()).expect("log");
    assert_eq!(log.records.len(), 1, "one line for the started item: {:?}", log.records);
    let record = &log.records[0];
    assert_eq!(record.status, ItemStatus::Interrupted);
    assert_eq!(record.error.as_deref(), Some("interrupted: SIGTERM"), "the first reason stays");
    assert_eq!((record.seeds.as_slice(), record.paths.len()), ([7, 8].as_slice(), 2));
    let pngs = crate::util::pngs_below(out.path());
    assert_eq!(pngs.len(), 2);
    for png in &pngs {
        image::open(png).expect("a complete PNG");
    }
    assert_no_temp_files(out.path());
}

#[test]
fn a_stop_now_cancels_the_running_image_within_a_step() {
    let out = tempfile::tempdir().expect("tempdir");
    let backend = MockBackend::new().with_step_delay(Duration::from_millis(20));
    let engine = engine(out.path(), backend);
    let job = engine
        .submit(plan(&Request { batch: 3, steps: Some(200), ..small("cancel now") }))
        .expect("submit");
    let events = until_image_in_flight(&engine, 0);
    let seen = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress { step, .. } => Some(*step),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    engine.stop(StopMode::AfterImage, "SIGINT").expect("stop");
    engine.stop(StopMode::Now, "SIGINT").expect("stop now");
    let (rest, summary) = until_finished(&engine, job);
    let final_step = rest
        .iter()
        .filter_map(|e| match e {
            Event::Progress { step, .. } => Some(*step),
            _ => None,
        })
        .max()
        .unwrap_or(seen);
    assert!(final_step < 200, "the image was cancelled, not finished");
    assert_eq!((summary.done, summary.interrupted), (0, 1));
    assert!(crate::util::pngs_below(out.path()).is_empty(), "nothing half-written");
    assert_no_temp_files(out.path());
    let log = jobs_log::read_all(out.path()).expect("log");
    assert_eq!(log.records[0].status, ItemStatus::Interrupted);
    assert!(log.records[0].paths.is_empty());
}

/// No temporary file of ours (`.<stem>.<…>.tmp`) anywhere below `dir`.
pub fn assert_no_temp_files(dir: &Path) {
    let temps: Vec<_> = crate::util::files_below(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
}

#[test]
fn same_seed_same_pixels_different_seed_different_pixels() {
    let out = tempfile::tempdir().expect("tempdir");
    let engine = engine(out.path(), MockBackend::new());
    let mut paths = Vec::new();
    for seed in [5, 5, 6] {
        let job =
            engine.submit(plan(&Request { seed: Some(seed), ..small("twin") })).expect("submit");
        let (_, summary) = until_finished(&engine, job);
        paths.push(summary.paths[0].clone());
    }
    let pixels: Vec<Vec<u8>> =
        paths.iter().map(|p| image::open(p).expect("png").to_rgb8().into_raw()).collect();
    assert_ne!(paths[0], paths[1], "never overwritten");
    assert_eq!(pixels[0], pixels[1]);
    assert_ne!(pixels[0], pixels[2]);
}
