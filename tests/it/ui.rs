//! The lab window, driven through AccessKit like a user (egui_kittest) on the real app with the
//! mock backend: no weights, no GPU. Pixel snapshots run only where wgpu finds an adapter.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use egui::accesskit::{Role, Toggled};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use imagelab::engine::mock::MockBackend;
use imagelab::request::Sweep;
use imagelab::storage::jobs_log::{self, ItemStatus};
use imagelab::storage::metadata::png_io;
use imagelab::ui::queue::JobState;
use imagelab::ui::settings::{FormSettings, STORAGE_KEY};
use imagelab::ui::{AppConfig, LabApp};

const WINDOW: [f32; 2] = [1400.0, 900.0];
/// Longest a mock job may take here (2-core CI, debug build).
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

fn small_form() -> FormSettings {
    FormSettings {
        model: "SDXL Turbo".into(),
        width_px: 64,
        height_px: 64,
        steps: 4,
        cfg: 0.0,
        random_seed: false,
        seed: 1234,
        ..FormSettings::default()
    }
}

fn harness(out: &Path, step_delay: Duration, form: FormSettings) -> Harness<'static, LabApp> {
    let out = out.to_owned();
    Harness::builder().with_size(WINDOW).build_eframe(move |cc| {
        let config = AppConfig {
            output_root: out,
            backend: Box::new(MockBackend::new().with_step_delay(step_delay)),
            notice: None,
        };
        LabApp::with_form(&cc.egui_ctx, config, form)
    })
}

/// Steps frames (the engine runs on real time) until `done` holds.
fn step_until(harness: &mut Harness<'_, LabApp>, what: &str, done: impl Fn(&LabApp) -> bool) {
    let started = Instant::now();
    while !done(harness.state()) {
        assert!(started.elapsed() < JOB_TIMEOUT, "timed out waiting for {what}");
        harness.step();
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn type_prompt(harness: &mut Harness<'_, LabApp>, text: &str) {
    harness.get_by_role_and_label(Role::MultilineTextInput, "Prompt").focus();
    harness.run_steps(1);
    harness.get_by_role_and_label(Role::MultilineTextInput, "Prompt").type_text(text);
    harness.run_steps(1);
}

fn toggled(harness: &Harness<'_, LabApp>, label: &str) -> bool {
    let node = harness.get_by_role_and_label(Role::RadioButton, label);
    node.accesskit_node().toggled() == Some(Toggled::True)
}

#[test]
fn sweep_choice_is_exclusive_and_large_sweeps_ask_first() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut harness = harness(out.path(), Duration::ZERO, small_form());
    assert!(toggled(&harness, "None"));
    harness.get_by_role_and_label(Role::RadioButton, "All profiles").click();
    harness.run_steps(2);
    assert!(toggled(&harness, "All profiles") && !toggled(&harness, "None"));
    harness.get_by_role_and_label(Role::RadioButton, "All models × all profiles").click();
    harness.run_steps(2);
    assert!(toggled(&harness, "All models × all profiles"));
    assert!(!toggled(&harness, "All profiles") && !toggled(&harness, "None"));
    assert_eq!(harness.state().controls.form.sweep, Sweep::AllModelsAllProfiles);
    // Every model × every profile is far above 50: Generate asks first, and "Back" runs nothing.
    harness.get_by_label_contains("(asks to confirm)");
    harness.get_by_label("Generate").click();
    harness.run_steps(2);
    harness.get_by_label_contains("Run it?");
    harness.get_by_label("Back").click();
    harness.run_steps(2);
    assert!(harness.query_by_label_contains("Run it?").is_none());
    assert!(harness.state().queue.jobs.is_empty(), "nothing submitted");
}

#[test]
fn generate_writes_the_requested_image_and_updates_preview_and_gallery() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut harness = harness(out.path(), Duration::from_millis(20), small_form());
    type_prompt(&mut harness, "a red lighthouse");
    harness.run_steps(2);
    harness.get_by_label("Generate").click();
    harness.run_steps(1);
    step_until(&mut harness, "progress", |app| app.watch.progress.is_some_and_step());
    step_until(&mut harness, "the job to finish", |app| {
        app.queue.jobs.first().is_some_and(|job| job.state == JobState::Done)
    });
    step_until(&mut harness, "the gallery thumbnail", |app| {
        app.gallery.entries.first().is_some_and(|entry| entry.info.is_some())
    });
    let app = harness.state();
    assert!(app.watch.previews_shown >= 1, "the preview moved");
    assert!(app.log.errors().next().is_none(), "{:?}", app.log.lines);

    // The engine wrote exactly what the form asked for.
    let log = jobs_log::read_all(out.path()).expect("jobs log");
    assert_eq!(log.records.len(), 1, "{:?}", log.records);
    let record = &log.records[0];
    assert_eq!(record.status, ItemStatus::Done);
    assert_eq!(record.prompt, "a red lighthouse");
    assert_eq!((record.model.as_str(), record.width, record.height), ("SDXL Turbo", 64, 64));
    assert_eq!((record.steps, record.seed_base, record.batch_size), (4, 1234, 1));
    let png = out.path().join(&record.paths[0]);
    let info = png_io::read_generation_info(&std::fs::read(&png).expect("png"))
        .expect("readable")
        .expect("imagelab chunk");
    assert_eq!((info.user_prompt.as_str(), info.seed), ("a red lighthouse", 1234));

    // The gallery shows it as this session's image, with its settings.
    let entry = &app.gallery.entries[0];
    assert!(entry.from_session);
    assert_eq!(entry.path, png);
}

trait ProgressSeen {
    fn is_some_and_step(&self) -> bool;
}

impl ProgressSeen for Option<imagelab::ui::watch::JobProgress> {
    fn is_some_and_step(&self) -> bool {
        self.as_ref().is_some_and(|progress| progress.step >= 1 && progress.steps == 4)
    }
}

#[test]
fn ctrl_enter_generates_and_cancel_stops_the_running_job() {
    let out = tempfile::tempdir().expect("tempdir");
    let form = FormSettings { steps: 400, ..small_form() };
    let mut harness = harness(out.path(), Duration::from_millis(20), form);
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
    harness.run_steps(1);
    assert_eq!(harness.state().queue.jobs.len(), 1, "Ctrl+Enter submitted one job");
    step_until(&mut harness, "the job to run", |app| {
        app.watch.progress.as_ref().is_some_and(|progress| progress.step >= 1)
    });
    harness.get_by_label("Cancel").click();
    harness.run_steps(1);
    step_until(&mut harness, "the cancel", |app| app.queue.jobs[0].state == JobState::Cancelled);
    let log = jobs_log::read_all(out.path()).expect("jobs log");
    assert_eq!(log.records.len(), 1);
    assert_eq!(log.records[0].status, ItemStatus::Cancelled);
    assert!(log.records[0].paths.is_empty(), "nothing half-written");
    assert!(harness.state().watch.progress.is_none());
}

/// eframe's storage, in memory.
#[derive(Default)]
struct MemoryStorage(HashMap<String, String>);

impl eframe::Storage for MemoryStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}

#[test]
fn settings_are_restored_from_storage() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut storage = MemoryStorage::default();
    {
        let mut first = harness(out.path(), Duration::ZERO, small_form());
        type_prompt(&mut first, "kept prompt");
        first.get_by_role_and_label(Role::RadioButton, "All profiles").click();
        first.run_steps(2);
        eframe::App::save(first.state_mut(), &mut storage);
    }
    assert!(storage.0.contains_key(STORAGE_KEY));
    let out_path = out.path().to_owned();
    let storage_ref: &'static MemoryStorage = Box::leak(Box::new(storage));
    let second = Harness::builder().with_size(WINDOW).build_eframe(move |cc| {
        cc.storage = Some(storage_ref);
        let config = AppConfig {
            output_root: out_path,
            backend: Box::new(MockBackend::new()),
            notice: None,
        };
        LabApp::new(cc, config)
    });
    let form = &second.state().controls.form;
    assert_eq!(form.prompt, "kept prompt");
    assert_eq!(form.sweep, Sweep::AllProfiles);
    assert_eq!((form.model.as_str(), form.steps, form.seed), ("SDXL Turbo", 4, 1234));
    let prompt = second.get_by_role_and_label(Role::MultilineTextInput, "Prompt");
    assert_eq!(prompt.value().as_deref(), Some("kept prompt"));
}

#[test]
fn closing_joins_the_engine() {
    let out = tempfile::tempdir().expect("tempdir");
    let form = FormSettings { steps: 400, ..small_form() };
    let mut harness = harness(out.path(), Duration::from_millis(20), form);
    harness.get_by_label("Generate").click();
    harness.run_steps(1);
    step_until(&mut harness, "the job to run", |app| app.watch.progress.is_some());
    let started = Instant::now();
    eframe::App::on_exit(harness.state_mut());
    assert!(!harness.state().engine_running());
    // 400 steps × 20 ms would be 8 s: the running item was cancelled, not waited for.
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
}

/// Renders through wgpu; `None` (with the reason printed) where no adapter exists.
fn render_or_skip(harness: &mut Harness<'_, LabApp>) -> Option<image::RgbaImage> {
    let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness.render()));
    match rendered {
        Ok(Ok(image)) => Some(image),
        Ok(Err(err)) => {
            eprintln!("skipped: no wgpu rendering here ({err}); install mesa-vulkan-drivers");
            None
        }
        Err(_) => {
            eprintln!("skipped: no wgpu adapter here; install mesa-vulkan-drivers (lavapipe)");
            None
        }
    }
}

#[test]
fn idle_window_snapshot() {
    let out = tempfile::tempdir().expect("tempdir");
    let form = FormSettings { prompt: "a lighthouse at dusk".into(), ..small_form() };
    let mut harness = harness(out.path(), Duration::ZERO, form);
    harness.run_steps(3);
    if render_or_skip(&mut harness).is_none() {
        return;
    }
    harness.snapshot("ui_idle_window");
}
