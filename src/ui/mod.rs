//! The desktop window (eframe/egui): controls, live preview, queue, gallery, favourites, the
//! sweep grid and the Insights panel.
//!
//! One panel = one struct in its own file with a `ui` method that returns what the user asked
//! for; [`app::LabApp`] turns those answers into engine commands and drains engine events.

pub mod app;
pub mod controls;
pub mod gallery;
pub mod insights;
pub mod log;
pub mod model_status;
pub mod queue;
pub mod runner_panel;
pub mod settings;
pub mod slurm;
pub mod sweep;
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

pub use app::{AppConfig, LabApp, WindowEngine};

/// Why the window did not run.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// A setting from the environment, named.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// eframe could not open the window.
    #[error("{0}")]
    Window(String),
    /// The server of `gui --serve` could not start.
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
}

/// The window's start-up settings from the front-end configuration: the backend
/// (`IMAGELAB_BACKEND`, default candle, falling back to the mock with a notice), the output root
/// (`IMAGELAB_OUTPUT_DIR`, default `output_images`), `INSTANCE_ID`, `IMAGELAB_PROFILES` and
/// `IMAGELAB_USER_PROFILES`.
///
/// # Errors
/// A variable with a bad value, named.
pub fn config_from(config: &FrontEndConfig) -> Result<AppConfig, ConfigError> {
    config_with(config, |wiring| Ok(WindowEngine::Spawn(wiring.backend)))
}

/// [`config_from`] with the engine made by `engine` from the wiring (its own, or a server's).
fn config_with<E: From<ConfigError>>(
    config: &FrontEndConfig,
    engine: impl FnOnce(crate::app::Wiring) -> Result<WindowEngine, E>,
) -> Result<AppConfig, E> {
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
    let output_root = wiring.engine.output_root.clone();
    let instance_id = wiring.engine.instance_id.clone();
    let notice = wiring.notice.clone();
    let slurm = slurm_setup(config);
    Ok(AppConfig {
        output_root,
        engine: engine(wiring)?,
        notice,
        instance_id,
        profiles_path: config.profiles_path(),
        backend_factory: Some(backend_factory),
        gpus: Some(gpus),
        visibility: config.gpu_visibility(),
        catalog: config.catalog(&[]),
        user_profiles_path: Some(config.user_profiles_path()),
        slurm,
    })
}

/// "Submit to Slurm" when sbatch is on `PATH`: the tasks run this binary and read the model
/// cache this window uses (both must be on the cluster's shared file system).
fn slurm_setup(config: &FrontEndConfig) -> Option<slurm::SlurmSetup> {
    let client = crate::slurm::client::Client::on_path();
    if !client.sbatch_available() {
        return None;
    }
    let imagelab = std::env::current_exe()
        .map_err(|err| tracing::warn!(%err, "no Submit to Slurm: this program's path is unknown"))
        .ok()?;
    let hub_cache = crate::slurm::absolute(&config.hub().cache_dir);
    Some(slurm::SlurmSetup { client, imagelab, hub_cache: Some(hub_cache) })
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

/// Opens the window with the HTTP server beside it (`imagelab gui --serve`): one engine, one
/// queue for the window and the API clients, the API's jobs listed in the queue panel. Closing
/// the window stops the server gracefully (the running image finishes).
///
/// # Errors
/// A bad setting, a port that cannot be bound, or a window that cannot open.
pub fn run_window_serving(
    config: &FrontEndConfig,
    http: &crate::server::HttpOptions,
    service_config: crate::server::ServiceConfig,
) -> Result<(), WindowError> {
    use crate::server::{self, ServeError, Service, StopToken};
    let grace = config.stop_grace()?;
    let bound = server::bind(http)?;
    let address = bound.address();
    let mut service = None;
    let mut app_config = config_with(config, |wiring| {
        let started = Service::start(wiring, service_config, StopToken::new())
            .map_err(|err| ServeError::Usage(err.to_string()))?;
        service = Some(Arc::clone(&started));
        Ok::<_, WindowError>(WindowEngine::Shared(started))
    })?;
    let Some(service) = service else {
        return Err(ServeError::Io("the server's engine did not start".into()).into());
    };
    // SIGINT/SIGTERM reach the window (which forwards them to the server's stop token) as in
    // a plain window.
    match crate::app::StopSignals::install() {
        Ok(signals) => signals.set_grace(grace),
        Err(err) => tracing::warn!(%err, "no clean stop on SIGINT/SIGTERM"),
    }
    let serving = Arc::clone(&service);
    let http = http.clone();
    let thread = std::thread::Builder::new()
        .name("imagelab-http".into())
        .spawn(move || server::serve_blocking(&serving, bound, &http))
        .map_err(|err| ServeError::Io(format!("cannot start the HTTP thread: {err}")))?;
    let serving_note = format!("serving the API on http://{address}");
    println!("imagelab gui --serve: {serving_note}");
    app_config.notice = Some(
        app_config
            .notice
            .map_or(serving_note.clone(), |notice| format!("{notice}; {serving_note}")),
    );
    let shown = run_window_with(app_config, config.hub());
    service.stop_token().request_graceful("window closed");
    let served = thread.join().map_err(|_| ServeError::Io("the HTTP thread panicked".into()))?;
    service.shutdown();
    shown?;
    Ok(served?)
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
