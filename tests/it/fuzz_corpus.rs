//! The fuzz targets' seed corpora (`fuzz/corpus/<target>/`) replayed through the targets' own
//! checks (`fuzz/checks/`) on every test run, so a parser change that panics on, or breaks a
//! property of, an input fuzzing once found interesting fails here rather than in the next
//! fuzzing session (cargo-fuzz needs nightly flags and is not part of the test command).

#[path = "../../fuzz/checks/mod.rs"]
mod checks;

/// Every file of `fuzz/corpus/<target>`, through `check`; how many there were.
fn replay(target: &str, check: impl Fn(&[u8])) -> usize {
    let folder = crate::util::repo_root().join("fuzz/corpus").join(target);
    let mut files: Vec<_> = fs_err::read_dir(&folder)
        .expect("corpus folder")
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    for file in &files {
        let bytes = fs_err::read(file).expect("corpus file");
        let name = file.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&bytes)));
        assert!(outcome.is_ok(), "{target}: corpus input {name} fails its check");
    }
    files.len()
}

/// A text target as libFuzzer's `&str` targets see bytes: only valid UTF-8 reaches the check.
fn text(check: fn(&str)) -> impl Fn(&[u8]) {
    move |bytes| {
        if let Ok(text) = std::str::from_utf8(bytes) {
            check(text);
        }
    }
}

#[test]
fn every_seed_corpus_passes_its_fuzz_target() {
    let replayed = [
        ("a1111_infotext", replay("a1111_infotext", text(checks::a1111_infotext::check))),
        ("comfyui_graph", replay("comfyui_graph", text(checks::comfyui_graph::check))),
        #[cfg(unix)]
        ("env_mode", replay("env_mode", checks::env_mode::check)),
        ("exif_tiff", replay("exif_tiff", checks::exif_tiff::check)),
        (
            "fooocus_parameters",
            replay("fooocus_parameters", text(checks::fooocus_parameters::check)),
        ),
        (
            "infotext_round_trip",
            replay("infotext_round_trip", text(checks::infotext_round_trip::check)),
        ),
        ("invokeai_metadata", replay("invokeai_metadata", text(checks::invokeai_metadata::check))),
        ("legacy_tools", replay("legacy_tools", text(checks::legacy_tools::check))),
        ("profiles_ron", replay("profiles_ron", text(checks::profiles_ron::check))),
        ("recover_image", replay("recover_image", checks::recover_image::check)),
        ("recover_png", replay("recover_png", checks::recover_png::check)),
        ("request_flags", replay("request_flags", text(checks::request_flags::check))),
        ("styles_file", replay("styles_file", checks::styles_file::check)),
        ("xmp_packet", replay("xmp_packet", checks::xmp_packet::check)),
    ];
    for (target, count) in replayed {
        assert!(count > 0, "{target}: empty seed corpus");
    }
    // Every target has a corpus and every corpus a target.
    let corpora = fs_err::read_dir(crate::util::repo_root().join("fuzz/corpus")).expect("corpora");
    let mut names: Vec<String> = corpora
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| cfg!(unix) || name != "env_mode")
        .collect();
    names.sort();
    let mut targets: Vec<&str> = replayed.iter().map(|(target, _)| *target).collect();
    targets.sort_unstable();
    assert_eq!(names, targets);
}
