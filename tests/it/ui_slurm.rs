//! The window's Slurm side (issue 19, part 4) with stand-ins for Slurm's commands in a folder
//! the window is pointed at (as `PATH` would): `sbatch` runs the array's tasks — the real
//! script, each task the real `imagelab resume` — one after the other in the background;
//! `squeue` prints what the test writes; `sacct` says accounting is off; `scancel` records
//! its arguments. The tests cannot touch `PATH` itself: the Slurm cluster test runs beside
//! them in this process.

use std::path::{Path, PathBuf};

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use imagelab::engine::mock::MockBackend;
use imagelab::request::Sweep;
use imagelab::slurm::client::Client;
use imagelab::ui::settings::FormSettings;
use imagelab::ui::slurm::SlurmSetup;
use imagelab::ui::{AppConfig, LabApp};

use crate::ui::{THREE_PROFILES, WINDOW, render_or_skip, small_form, step_until};
use crate::util::{stderr, stdout};

/// The stand-ins' Slurm job id.
const JOB: u64 = 4242;

const SBATCH: &str = r#"#!/bin/bash
# sbatch --parsable --array=SPEC SCRIPT [script args...]
dir="$(cd "$(dirname "$0")" && pwd)"
echo "$*" >> "$dir/sbatch.args"
[ "$1" = --parsable ] || { echo "sbatch: error: expected --parsable" >&2; exit 1; }
shift
array="${1#--array=}"; array="${array%%\%*}"; shift
script="$1"; shift
tasks=()
IFS=, read -ra parts <<< "$array"
for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then
        for ((t=${part%-*}; t<=${part#*-}; t++)); do tasks+=("$t"); done
    else
        tasks+=("$part")
    fi
done
output="$(sed -n 's/^#SBATCH --output=//p' "$script")"
(
    for t in "${tasks[@]}"; do
        out="${output//%A/@JOB@}"; out="${out//%a/$t}"
        SLURM_ARRAY_JOB_ID=@JOB@ SLURM_ARRAY_TASK_ID=$t bash "$script" "$@" >"$out" 2>&1
    done
    touch "$dir/tasks.done"
) </dev/null >/dev/null 2>&1 &
echo @JOB@
"#;

/// Writes the stand-ins into `bin`.
fn fake_slurm(bin: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let scripts = [
        ("sbatch", SBATCH.replace("@JOB@", &JOB.to_string())),
        ("squeue", "#!/bin/sh\ncat \"$(dirname \"$0\")/squeue.out\" 2>/dev/null\nexit 0\n".into()),
        (
            "sacct",
            "#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1\n"
                .into(),
        ),
        ("scancel", "#!/bin/sh\necho \"$*\" >> \"$(dirname \"$0\")/scancel.args\"\n".into()),
    ];
    for (name, text) in scripts {
        let path = bin.join(name);
        fs_err::write(&path, text).expect("stand-in");
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// A window whose Slurm commands are the stand-ins in `bin`, with three profiles.
fn slurm_harness(out: &Path, bin: &Path, form: FormSettings) -> Harness<'static, LabApp> {
    let profiles = out.join("profiles.ron");
    fs_err::write(&profiles, THREE_PROFILES).expect("profiles");
    let (out, bin) = (out.to_owned(), bin.to_owned());
    Harness::builder().with_size(WINDOW).build_eframe(move |cc| {
        let mut config = AppConfig::new(out, Box::new(MockBackend::new()));
        config.profiles_path = Some(profiles);
        config.slurm = Some(SlurmSetup {
            client: Client::in_dir(bin),
            imagelab: PathBuf::from(env!("CARGO_BIN_EXE_imagelab")),
            hub_cache: None,
        });
        LabApp::with_form(&cc.egui_ctx, config, form)
    })
}

fn type_into(harness: &mut Harness<'_, LabApp>, label: &str, text: &str) {
    harness.get_by_role_and_label(Role::TextInput, label).focus();
    harness.run_steps(1);
    harness.get_by_role_and_label(Role::TextInput, label).type_text(text);
    harness.run_steps(1);
}

#[test]
fn the_window_submits_a_sweep_to_slurm_and_follows_each_task() {
    let out = tempfile::tempdir().expect("tempdir");
    let bin = tempfile::tempdir().expect("tempdir");
    fake_slurm(bin.path());
    let form = FormSettings {
        sweep: Sweep::AllProfiles,
        prompt: "a fox on a cluster".into(),
        ..small_form()
    };
    let mut harness = slurm_harness(out.path(), bin.path(), form);
    harness.get_by_label("Slurm runs");

    // A time limit Slurm would not take is refused before anything is written.
    type_into(&mut harness, "Time limit", "2 hours");
    harness.get_by_label("Submit to Slurm").click();
    harness.run_steps(2);
    // Shown under the fields and in the log.
    assert!(
        harness.query_all_by_label_contains("Time limit: \"2 hours\" is not a time limit").count()
            >= 2
    );
    assert!(harness.state().slurm.error.as_deref().is_some_and(|e| e.starts_with("Time limit:")));
    assert!(!bin.path().join("sbatch.args").exists(), "nothing submitted");
    assert!(crate::util::pngs_below(out.path()).is_empty());

    harness.state_mut().slurm.form.time.clear();
    type_into(&mut harness, "Time limit", "00:10:00");
    type_into(&mut harness, "Partition", "debug");
    // Task 0 runs, the others wait: what squeue says shows per task.
    let waiting = format!(
        "{JOB}_0|{JOB}|{JOB}|0|RUNNING|None|gres:gpu:1|node1|0:01\n\
         {JOB}_1|{JOB}|{JOB}|1|PENDING|Resources|gres:gpu:1||0:00\n"
    );
    fs_err::write(bin.path().join("squeue.out"), waiting).expect("squeue.out");
    harness.get_by_label("Submit to Slurm").click();
    harness.run_steps(1);
    step_until(&mut harness, "the submission", |app| !app.slurm.runs.is_empty());
    let run = harness.state().slurm.runs[0].run.clone();
    assert_eq!(run.submissions[0].job, JOB);
    assert_eq!((run.tasks.len(), run.planned_images), (3, 3));
    let args = fs_err::read_to_string(bin.path().join("sbatch.args")).expect("sbatch ran");
    assert_eq!(args.trim(), format!("--parsable --array=0-2 {}", run.script().display()));
    // The same script `imagelab slurm submit` writes, with the window's fields.
    let script = fs_err::read_to_string(run.script()).expect("script");
    for line in [
        "#SBATCH --job-name=imagelab-all-profiles",
        "#SBATCH --partition=debug",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --time=00:10:00",
    ] {
        assert!(script.lines().any(|l| l == line), "{line:?} missing in\n{script}");
    }
    assert!(script.contains("--backend mock"), "{script}");
    step_until(&mut harness, "the first status", |app| app.slurm.runs[0].status.is_some());
    harness.get_by_label("RUNNING (node1)");
    harness.get_by_label("PENDING (Resources)");

    // The tasks (real `imagelab resume` processes) finish; Slurm forgets them.
    step_until(&mut harness, "the tasks", |_| bin.path().join("tasks.done").exists());
    fs_err::write(bin.path().join("squeue.out"), "").expect("squeue.out");
    harness.get_by_label("Refresh").click();
    harness.run_steps(1);
    step_until(&mut harness, "every image in the status", |app| {
        app.slurm.runs[0]
            .status
            .as_ref()
            .is_some_and(|s| s.done_images == 3 && !app.slurm.runs[0].asking)
    });
    harness.run_steps(2);
    harness.get_by_label_contains("images 3/3 done, 0 failed item(s), 0 task(s) with work left");
    assert_eq!(harness.query_all_by_label("ENDED").count(), 3);
    let images = crate::queue::images_by_metadata(out.path());
    assert_eq!(images.len(), 3);
    assert!(images.values().all(|paths| paths.len() == 1), "none twice");
    crate::queue::assert_logs_cover_every_image_once(out.path(), 3);
    // The same status as `imagelab slurm status` (the tasks' own jobs logs included).
    let cli = crate::util::imagelab()
        .args(["slurm", "status", &run.run_path().to_string_lossy(), "--json"])
        .env("PATH", format!("{}:/usr/bin:/bin", bin.path().display()))
        .output()
        .expect("runs");
    assert!(cli.status.success(), "{}", stderr(&cli));
    let value: serde_json::Value = serde_json::from_str(stdout(&cli).trim()).expect("json");
    assert_eq!(value["done_images"], 3);

    harness.get_by_label("Cancel run").click();
    harness.run_steps(1);
    step_until(&mut harness, "scancel", |_| bin.path().join("scancel.args").exists());
    let cancelled = fs_err::read_to_string(bin.path().join("scancel.args")).expect("scancel");
    assert_eq!(cancelled.trim(), JOB.to_string());
}

/// Issue 19, part 4: the start-up offer leaves out the jobs of a Slurm run's tasks while Slurm
/// still has those tasks pending or running, and offers them once Slurm is done with them.
#[test]
fn the_resume_offer_waits_for_slurm_to_be_done_with_a_tasks_job() {
    let out = tempfile::tempdir().expect("tempdir");
    let bin = tempfile::tempdir().expect("tempdir");
    fake_slurm(bin.path());
    let out_arg = out.path().to_string_lossy().into_owned();
    // A planned run of two tasks (written, not submitted: no sbatch on this PATH) ...
    let planned = crate::util::imagelab()
        .args(["slurm", "submit", "--backend", "mock", "--prompt", "held", "--all-profiles"])
        .args(["--width", "64", "--height", "64", "--steps", "2", "--tasks", "2"])
        .args(["--out", &out_arg, "--dry-run", "--json"])
        .env("PATH", bin.path().join("none"))
        .output()
        .expect("runs");
    assert!(planned.status.success(), "{}", stderr(&planned));
    let value: serde_json::Value = serde_json::from_str(stdout(&planned).trim()).expect("json");
    let run_dir = PathBuf::from(value["run_dir"].as_str().expect("run_dir"));
    // ... then submitted by hand as Slurm job 77; task 0 runs there, task 1 waits.
    let mut run = imagelab::slurm::SlurmRun::read(&run_dir.join("slurm")).expect("run");
    run.submissions.push(imagelab::slurm::Submission {
        job: 77,
        cluster: None,
        array: "0-1".into(),
        submitted: String::new(),
        retry_failed: false,
    });
    run.write().expect("run.json");
    let rows = "77_0|77|77|0|RUNNING|None|gres:gpu:1|node1|0:01\n77_1|78|77|1|PENDING|Priority|gres:gpu:1||0:00\n";
    fs_err::write(bin.path().join("squeue.out"), rows).expect("squeue.out");

    let mut harness = slurm_harness(out.path(), bin.path(), small_form());
    step_until(&mut harness, "Slurm's answer", |app| {
        app.log.lines.iter().any(|line| line.text.contains("not offered"))
    });
    harness.run_steps(2);
    assert!(harness.state().queue.offer.is_empty(), "{:?}", harness.state().queue.offer);
    assert!(harness.query_by_label_contains("unfinished job(s)").is_none());
    drop(harness);

    // Task 0 is gone from the queue, task 1 still waits: only task 0's job is offered.
    fs_err::write(bin.path().join("squeue.out"), &rows[rows.find("77_1").expect("row")..])
        .expect("squeue.out");
    let mut harness = slurm_harness(out.path(), bin.path(), small_form());
    step_until(&mut harness, "the offer", |app| !app.queue.offer.is_empty());
    harness.run_steps(2);
    let offered: Vec<String> = harness.state().queue.offer.iter().map(|j| j.id.clone()).collect();
    assert_eq!(offered, vec![run.tasks[0].job.clone()]);
    harness.get_by_label_contains("1 unfinished job(s) from an earlier session");
    drop(harness);

    // The array ended: both are offered.
    fs_err::write(bin.path().join("squeue.out"), "").expect("squeue.out");
    let mut harness = slurm_harness(out.path(), bin.path(), small_form());
    step_until(&mut harness, "the offer", |app| app.queue.offer.len() == 2);
}

/// The launcher with its Slurm fields (sbatch found), idle.
#[test]
fn idle_window_with_slurm_snapshot() {
    let out = tempfile::tempdir().expect("tempdir");
    let bin = tempfile::tempdir().expect("tempdir");
    fake_slurm(bin.path());
    let form = FormSettings { prompt: "a lighthouse at dusk".into(), ..small_form() };
    let mut harness = slurm_harness(out.path(), bin.path(), form);
    harness.run_steps(3);
    if render_or_skip(&mut harness).is_none() {
        return;
    }
    harness.snapshot("ui_idle_window_slurm");
}
