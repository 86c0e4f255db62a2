//! The desktop window (eframe/egui): controls, live preview, queue, gallery, favourites.
//!
//! One panel = one struct in its own file with a `ui` method that returns what the user asked
//! for; [`app::LabApp`] turns those answers into engine commands and drains engine events.

pub mod app;
pub mod controls;
pub mod gallery;
pub mod log;
pub mod model_status;
pub mod queue;
pub mod settings;
pub mod thumbnails;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::generate::{BackendChoice, DEFAULT_OUTPUT_DIR, make_backend};
use crate::engine::mock::MockBackend;
use crate::models::Catalog;
use crate::models::hub::HubConfig;

pub use app::{AppConfig, LabApp};

/// Step delay of the mock when the window falls back to it, so progress can be watched.
const MOCK_STEP_DELAY: Duration = Duration::from_millis(60);

/// Picks the backend (`IMAGELAB_BACKEND`, default candle) and output root
/// (`IMAGELAB_OUTPUT_DIR`, default `output_images`); falls back to the mock with a notice.
pub fn config_from_env() -> Result<AppConfig, String> {
    let output_root = std::env::var_os("IMAGELAB_OUTPUT_DIR")
        .map_or_else(|| PathBuf::from(DEFAULT_OUTPUT_DIR), PathBuf::from);
    let choice = match std::env::var("IMAGELAB_BACKEND") {
        Ok(text) if !text.trim().is_empty() => BackendChoice::parse(&text)?,
        _ => BackendChoice::Candle,
    };
    let (backend, notice) = match (choice, make_backend(choice)) {
        (BackendChoice::Mock, Ok(_)) | (_, Err(_)) => {
            let notice = match make_backend(choice) {
                Err(err) => Some(format!("{err}; the window runs the mock backend")),
                Ok(_) => None,
            };
            let mock = MockBackend::from_env(MOCK_STEP_DELAY)?;
            (Box::new(mock) as Box<dyn crate::engine::Backend>, notice)
        }
        (BackendChoice::Candle, Ok(backend)) => (backend, None),
    };
    Ok(AppConfig { output_root, backend, notice })
}

/// Opens the window with the backend and output folder from the environment (see
/// [`config_from_env`]); returns the process exit code.
pub fn run_window() -> u8 {
    match config_from_env() {
        Ok(config) => run_window_with(config),
        Err(err) => {
            eprintln!("error: {err}");
            super::cli::EXIT_USAGE
        }
    }
}

/// Opens the window with a given backend and output folder (for `imagelab gui` flags);
/// returns the process exit code.
pub fn run_window_with(config: AppConfig) -> u8 {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("SDXL Image Lab")
            .with_inner_size([1400.0, 900.0])
            .with_drag_and_drop(true),
        ..eframe::NativeOptions::default()
    };
    let result = eframe::run_native(
        "imagelab",
        options,
        Box::new(move |cc| {
            let mut app = LabApp::new(cc, config);
            let ctx = cc.egui_ctx.clone();
            let waker = std::sync::Arc::new(move || ctx.request_repaint());
            let status = model_status::HubCacheStatus::spawn(
                Catalog::builtin(),
                HubConfig::from_env(),
                waker,
            );
            app.set_model_status(Box::new(status));
            Ok(Box::new(app))
        }),
    );
    match result {
        Ok(()) => super::cli::EXIT_OK,
        Err(err) => {
            eprintln!("error: cannot open the window: {err}");
            super::cli::EXIT_FAILED
        }
    }
}
