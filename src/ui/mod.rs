//! The desktop window (eframe/egui): controls, live preview, queue, gallery, favourites.

/// Opens the window; returns the process exit code.
pub fn run_window() -> u8 {
    eprintln!("the window is not built yet; use `imagelab generate`");
    super::cli::EXIT_USAGE
}
