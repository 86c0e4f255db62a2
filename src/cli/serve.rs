//! `imagelab serve`: the engine behind HTTP (our API and the AUTOMATIC1111-compatible subset)
//! or, with `--stdio`, behind JSON lines on stdin/stdout. `imagelab gui --serve` runs the same
//! server next to the window, on the window's engine.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{CliError, Outcome};
use crate::app::config::{BACKEND_VAR, OUTPUT_DIR_VAR, PORT_VAR};
use crate::app::{BackendChoice, DEFAULT_OUTPUT_DIR, EngineSetup, FrontEndConfig, StopSignals};
use crate::engine::StopMode;
use crate::models::catalog::{Catalog, DEFAULT_MODEL};
use crate::server::{
    self, Credentials, DEFAULT_PORT, HttpOptions, ServeError, Service, ServiceConfig, ServiceError,
    StopToken,
};

/// How the HTTP server listens and whom it admits (shared by `serve` and `gui --serve`).
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address to listen on; anything but loopback needs --api-auth or --api-token-file.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port; the address is printed at start).
    #[arg(long, env = PORT_VAR, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// HTTP basic credentials, as A1111's --api-auth.
    #[arg(long, value_name = "USER:PASSWORD[,USER:PASSWORD]")]
    pub api_auth: Option<String>,
    /// A file holding a bearer token (`Authorization: Bearer <token>`).
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Largest request body in MiB (init images arrive in base64).
    #[arg(long, default_value_t = 64)]
    pub max_body_mb: usize,
    /// Serve A1111's /sdapi/v1/server-stop (graceful) and /server-kill.
    #[arg(long)]
    pub api_server_stop: bool,
}

impl HttpArgs {
    /// The server options: credentials read, sizes in bytes.
    ///
    /// # Errors
    /// A malformed `--api-auth` or an unreadable token file.
    pub fn options(&self) -> Result<HttpOptions, CliError> {
        let mut credentials = Credentials::open();
        if let Some(spec) = &self.api_auth {
            credentials.add_basic(spec).map_err(CliError::Usage)?;
        }
        if let Some(file) = &self.api_token_file {
            credentials.add_token_file(file).map_err(CliError::Usage)?;
        }
        Ok(HttpOptions {
            host: self.host.clone(),
            port: self.port,
            credentials,
            body_limit_bytes: self.max_body_mb.saturating_mul(1024 * 1024),
            server_stop_routes: self.api_server_stop,
        })
    }
}

/// What the service runs and remembers (shared by `serve` and `gui --serve`).
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// The model requests get when they name none (A1111's `sd_model_checkpoint`).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// A folder request paths may point into besides the output folder (init images, local
    /// models, LoRA files); repeatable.
    #[arg(long = "allow-dir", value_name = "DIR")]
    pub allow_dirs: Vec<PathBuf>,
    /// Jobs that may wait before new ones are refused (503).
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Finished jobs remembered for `GET /jobs/{id}`.
    #[arg(long, default_value_t = 1000)]
    pub keep_jobs: usize,
}

impl ServiceArgs {
    /// The service settings, with the default model checked against the catalog.
    ///
    /// # Errors
    /// Broken profiles or an unknown default model.
    pub fn config(&self, config: &FrontEndConfig) -> Result<ServiceConfig, CliError> {
        let profiles = config.profiles().map_err(|err| CliError::Usage(err.to_string()))?;
        let mut service = ServiceConfig::new(profiles, config.hub());
        let model = Catalog::builtin()
            .resolve(&self.model)
            .map_err(|err| CliError::Usage(format!("--model: {err}")))?;
        service.default_model = if service.catalog.find(&self.model).is_some() {
            model.display_name
        } else {
            self.model.clone()
        };
        service.allowed_dirs.clone_from(&self.allow_dirs);
        service.max_queued_jobs = self.max_queue.max(1);
        service.keep_finished_jobs = self.keep_jobs.max(1);
        Ok(service)
    }
}

/// Flags of `imagelab serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Listening and admission.
    #[command(flatten)]
    pub http: HttpArgs,
    /// The service.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// JSON lines on stdin (requests, commands) and stdout (events) instead of HTTP.
    #[arg(long)]
    pub stdio: bool,
    /// candle or mock.
    #[arg(long, env = BACKEND_VAR, default_value = "candle", value_parser = BackendChoice::parse)]
    pub backend: BackendChoice,
    /// Output root.
    #[arg(long, env = OUTPUT_DIR_VAR, default_value = DEFAULT_OUTPUT_DIR)]
    pub out: PathBuf,
    /// Print the OpenAPI document of the HTTP API and exit.
    #[arg(long)]
    pub openapi: bool,
}

fn service_error(err: ServiceError) -> CliError {
    CliError::Usage(err.to_string())
}

fn serve_error(err: ServeError) -> CliError {
    match err {
        ServeError::Usage(message) => CliError::Usage(message),
        ServeError::Io(message) => CliError::Failed(message),
    }
}

/// Runs `imagelab serve` until it is stopped (HTTP) or stdin ends (`--stdio`).
///
/// # Errors
/// Bad flags, a port that cannot be bound, or an engine that cannot start (exit 2); a server
/// that failed while running (exit 1).
pub fn run(args: ServeArgs, config: &FrontEndConfig) -> Result<Outcome, CliError> {
    if args.openapi {
        print!("{}", server::openapi::document_text());
        return Ok(Outcome::Done);
    }
    let service_config = args.service.config(config)?;
    let setup = EngineSetup {
        backend: args.backend,
        output_root: args.out.clone(),
        instance_id: config.instance_id(),
        previews: true,
        mock_step_delay: Duration::ZERO,
        fall_back_to_mock: false,
    };
    // SIGINT/SIGTERM (app::stop, the one signal handler) set the service's stop token: the
    // first lets the running image finish, the second cancels it; exit 130/143 afterwards.
    let stop = StopToken::new();
    let signals = watch_stop_signals(config, &stop)?;
    if args.stdio {
        let wiring = setup.wire(config)?;
        let service = Service::start(wiring, service_config, stop).map_err(service_error)?;
        eprintln!(
            "imagelab serve --stdio: {} backend, output {}; one JSON request per line",
            service.backend_name(),
            service.output_root().display()
        );
        server::stdio::run(&service, std::io::BufReader::new(std::io::stdin()), std::io::stdout())
            .map_err(|err| CliError::Failed(format!("stdio: {err}")))?;
        return Ok(stopped_outcome(&signals));
    }
    let http = args.http.options()?;
    let bound = server::bind(&http).map_err(serve_error)?;
    let wiring = setup.wire(config)?;
    let service = Service::start(wiring, service_config, stop).map_err(service_error)?;
    println!(
        "imagelab serve: listening on http://{} ({} backend, output {}, default model {})",
        bound.address(),
        service.backend_name(),
        service.output_root().display(),
        service.default_model()
    );
    let served = server::serve_blocking(&service, bound, &http);
    service.shutdown();
    served.map_err(serve_error)?;
    Ok(stopped_outcome(&signals))
}

/// Hooks SIGINT/SIGTERM (with `IMAGELAB_STOP_GRACE_S`) to `stop`: a graceful stop, then an
/// immediate one.
///
/// # Errors
/// A bad grace setting, or handlers that cannot be installed.
pub(crate) fn watch_stop_signals(
    config: &FrontEndConfig,
    stop: &StopToken,
) -> Result<StopSignals, CliError> {
    let signals = super::generate::install_stop_signals(config.stop_grace()?)?;
    let token = stop.clone();
    signals.on_request(move |request| match request.mode {
        StopMode::AfterImage => token.request_graceful(request.signal.name()),
        StopMode::Now => token.request_immediate(request.signal.name()),
    });
    Ok(signals)
}

/// 130/143 after a signal, else done.
fn stopped_outcome(signals: &StopSignals) -> Outcome {
    signals.exit_code().map_or(Outcome::Done, Outcome::Stopped)
}

/// Flags of `imagelab gui`.
#[cfg(feature = "gui")]
#[derive(Debug, Clone, Args)]
pub struct GuiArgs {
    /// Serve the HTTP API beside the window, on the window's engine (one queue for both).
    #[arg(long)]
    pub serve: bool,
    /// Listening and admission (with --serve).
    #[command(flatten)]
    pub http: HttpArgs,
    /// The service (with --serve).
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// Runs `imagelab gui --serve`.
///
/// # Errors
/// Bad flags or settings, a port that cannot be bound, or a window that cannot open.
#[cfg(feature = "gui")]
pub fn run_gui(args: &GuiArgs, config: &FrontEndConfig) -> Result<Outcome, CliError> {
    use crate::ui::WindowError;
    let http = args.http.options()?;
    let service = args.service.config(config)?;
    crate::ui::run_window_serving(config, &http, service).map_err(|err| match err {
        WindowError::Config(err) => CliError::Config(err),
        WindowError::Serve(err) => serve_error(err),
        WindowError::Window(message) => {
            CliError::Failed(format!("cannot open the window: {message}"))
        }
    })?;
    Ok(Outcome::Done)
}
