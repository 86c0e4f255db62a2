//! `scripts/bench-gpu --device cpu`: the GPU benchmark's dry run, end to end. It creates the tiny
//! SDXL architecture with random weights through diffusers, times diffusers and this build's
//! `imagelab` binary on it, and writes the same JSON the GPU run writes. The run must be
//! complete (every field the GPU table reads) and imagelab's final latents must match
//! diffusers' on the same weights and seeds (f32, CPU: within 1e-4 relative L2, the bound of
//! the pipeline tests).
//!
//! Needs a Python with torch + diffusers: `scripts/python-env` (which `scripts/test` runs first)
//! makes one under ~/.cache/imagelab, or `IMAGELAB_PYTHON` names one. Without either the test is
//! skipped with a message, except under CI, where it fails.

use std::path::PathBuf;
use std::process::Command;

use imagelab::app::FrontEndConfig;

use crate::util::repo_root;

/// Whether `scripts/python-env` has a Python to hand out (the same lookup it makes).
fn python_available(env: &FrontEndConfig) -> bool {
    if env.non_empty("IMAGELAB_PYTHON").is_some() {
        return true;
    }
    let cache = env
        .non_empty("IMAGELAB_CACHE")
        .map(PathBuf::from)
        .or_else(|| env.non_empty("HOME").map(|home| PathBuf::from(home).join(".cache/imagelab")));
    cache.is_some_and(|cache| cache.join("py-venv/.pins").is_file())
}

#[test]
fn cpu_dry_run_writes_the_report_and_matches_diffusers() {
    let env = FrontEndConfig::from_process_env();
    if !python_available(&env) {
        assert!(
            env.var("CI").is_none(),
            "CI must have the benchmark's Python: scripts/test runs scripts/python-env first"
        );
        eprintln!(
            "SKIPPED: no Python with torch+diffusers; run scripts/python-env or set IMAGELAB_PYTHON"
        );
        return;
    }
    let out = tempfile::tempdir().expect("tempdir");
    let output = Command::new(repo_root().join("scripts/bench-gpu"))
        .args(["--device", "cpu", "--binary", env!("CARGO_BIN_EXE_imagelab"), "--out"])
        .arg(out.path())
        .args(["--batches", "1,2", "--steps", "3", "--attention", "auto,naive"])
        .env_remove("IMAGELAB_ATTENTION")
        .output()
        .expect("scripts/bench-gpu runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench-gpu failed:\n{stderr}");

    let report: serde_json::Value =
        serde_json::from_slice(&fs_err::read(out.path().join("bench.json")).expect("bench.json"))
            .expect("bench.json is JSON");
    assert_eq!(report["schema"], "imagelab-bench-gpu/1");
    assert_eq!(report["device"]["kind"], "cpu");
    assert_eq!(report["config"]["arch"], "tiny");
    assert_eq!(report["config"]["dtype"], "f32");
    assert_eq!(report["config"]["steps"], 3);
    assert!(report["model"]["weights_bytes"].as_u64().unwrap_or(0) > 0, "{report}");

    let positive = |value: &serde_json::Value, what: &str| {
        let number = value.as_f64().unwrap_or(f64::NAN);
        assert!(number.is_finite() && number > 0.0, "{what} = {value} in {report}");
    };
    let diffusers = &report["diffusers"];
    positive(&diffusers["load_s"], "diffusers load_s");
    let runs = diffusers["runs"].as_array().expect("diffusers runs");
    assert_eq!(runs.iter().map(|r| r["batch"].as_u64()).collect::<Vec<_>>(), [Some(1), Some(2)]);
    for run in runs {
        for field in ["it_per_s", "s_per_image", "decode_s", "peak_mem_mib"] {
            positive(&run[field], &format!("diffusers {field}"));
        }
    }
    let ours = report["imagelab"]["runs"].as_array().expect("imagelab runs");
    assert_eq!(ours.len(), 4, "auto and naive × batch 1 and 2: {report}");
    for run in ours {
        for field in ["load_s", "it_per_s", "s_per_image", "decode_s", "peak_mem_mib"] {
            positive(&run[field], &format!("imagelab {field}"));
        }
        assert_eq!(run["device"], "cpu", "the jobs log names the device used: {run}");
    }
    let rel = report["latent_rel_l2"].as_object().expect("latent_rel_l2");
    assert_eq!(rel.len(), 4);
    for (key, value) in rel {
        let err = value.as_f64().unwrap_or(f64::NAN);
        assert!(err <= 1e-4, "{key}: imagelab vs diffusers latent rel L2 {err:e}");
    }
    let table = fs_err::read_to_string(out.path().join("bench.md")).expect("bench.md");
    assert!(table.contains("| imagelab (naive attention) | 2 |"), "{table}");
}
