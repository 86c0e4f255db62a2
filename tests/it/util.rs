//! Helpers shared by the integration tests.

#![allow(dead_code, reason = "each test module uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built `imagelab` binary with a clean environment for headless runs: no env-var mode
/// triggers, no mock failure injection, no instance id.
pub fn imagelab() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_imagelab"));
    let mock_vars = [
        "IMAGELAB_MOCK_STEP_MS",
        "IMAGELAB_MOCK_FAIL_MODEL",
        "IMAGELAB_MOCK_FAIL_PROMPT",
        "IMAGELAB_PROFILES",
        "IMAGELAB_USER_PROFILES",
        "IMAGELAB_MEMORY_BUDGET_MB",
        "IMAGELAB_MODEL_CACHE_MB",
        "IMAGELAB_ATTENTION",
        "IMAGELAB_CPU_ISA",
        "IMAGELAB_CPU_CONV",
    ];
    for var in imagelab::cli::env_mode::VARIABLES.iter().chain(&mock_vars) {
        command.env_remove(var);
    }
    command.current_dir(repo_root());
    command
}

/// stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every file below `dir`, recursively, sorted.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = fs_err::read_dir(&current) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// PNG files below `dir`.
pub fn pngs_below(dir: &Path) -> Vec<PathBuf> {
    files_below(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "png")).collect()
}

/// The `parameters` text chunk of a PNG file.
pub fn parameters_of(path: &Path) -> String {
    let bytes = fs_err::read(path).expect("read png");
    let chunks = imagelab::storage::metadata::png_io::read_text_chunks(&bytes).expect("chunks");
    chunks.into_iter().find(|(k, _)| k == "parameters").map(|(_, v)| v).expect("parameters chunk")
}
