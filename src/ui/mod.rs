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
pub mod runner_panel;
pub mod settings;
pub mod thumbnails;
pub mod watch;

use std::sync::Arc;

use crate::app::{
    BackendChoice, ConfigError, EngineSetup, FrontEndConfig, WINDOW_MOCK_STEP_DELAY, make_backend,
};
use crate::gpu::open_source;
use crate::models::Catalog;
use crate::models::hub::HubConfig;
use crate::runner::BackendFactory;
use crate::runner::pool::GpuOpener;

pub use app::{AppConfig, LabApp};

/// Why the window did not run.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// A setting from the environment, named.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// eframe could not open the window.
    #[error("{0}")]
    Window(String),
}

/// The window's start-up settings from the front-end configuration: the backend
/// (`IMAGELAB_BACKEND`, default candle, falling back to the mock with a notice), the output root
/// (`IMAGELAB_OUTPUT_DIR`, default `output_images`), `INSTANCE_ID`, `IMAGELAB_PROFILES` and
/// `IMAGELAB_USER_PROFILES`.
///
/// # Errors
/// A variable with a bad value, named.
pub fn config_from(config: &FrontEndConfig) -> Result<AppConfig, ConfigError> {
    let setup = EngineSetup::window(config)?;
    let wiring = setup.wire(config)?;
    // Runner workers get the backend the window got (the mock when candle fell back).
    let choice = if wiring.notice.is_some() { BackendChoice::Mock } else { setup.backend };
    let factory_config = config.clone();
    let backend_factory: BackendFactory = Arc::new(move |_slot| {
        make_backend(choice, &factory_config, WINDOW_MOCK_STEP_DELAY).map_err(|e| e.to_string())
    });
    let source = config.gpu_source()?;
    let gpus: GpuOpener = Arc::new(move || open_source(source));
    Ok(AppConfig {
        output_root: wiring.engine.output_root,
        backend: wiring.backend,
        notice: wiring.notice,
        instance_id: wiring.engine.instance_id,
        profiles_path: config.profiles_path(),
        backend_factory: Some(backend_factory),
        gpus: Some(gpus),
        visibility: config.gpu_visibility(),
        user_profiles_path: Some(config.user_profiles_path()),
    })
}

/// Opens the window with the settings of `config` (see [`config_from`]).
///
/// # Errors
/// A bad setting, or a window that cannot open.
pub fn run_window(config: &FrontEndConfig) -> Result<(), WindowError> {
    let grace = config.stop_grace()?;
    let app_config = config_from(config)?;
    match crate::app::StopSignals::install() {
        Ok(signals) => signals.set_grace(grace),
        Err(err) => tracing::warn!(%err, "no clean stop on SIGINT/SIGTERM"),
    }
    run_window_with(app_config, config.hub())
}

/// Opens the window with a given backend and output folder; `hub` is where the model status
/// panel looks for cached models.
///
/// # Errors
/// eframe cannot open the window.
pub fn run_window_with(config: AppConfig, hub: HubConfig) -> Result<(), WindowError> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("SDXL Image Lab")
            .with_inner_size([1400.0, 900.0])
            .with_drag_and_drop(true),
        ..eframe::NativeOptions::default()
    };
    eframe::run_native(
        "imagelab",
        options,
        Box::new(move |cc| {
            let mut app = LabApp::new(cc, config);
            match crate::app::StopSignals::install() {
                Ok(signals) => app.watch_stop_signals(&cc.egui_ctx, signals),
                Err(err) => tracing::warn!(%err, "no clean stop on SIGINT/SIGTERM"),
            }
            let ctx = cc.egui_ctx.clone();
            let waker = std::sync::Arc::new(move || ctx.request_repaint());
            let status = model_status::HubCacheStatus::spawn(Catalog::builtin(), hub, waker);
            app.set_model_status(Box::new(status));
            Ok(Box::new(app))
        }),
    )
    .map_err(|err| WindowError::Window(err.to_string()))
}
