//! The engine behind HTTP and stdio: our API (`/health`, `/models`, `/jobs`, …), the
//! AUTOMATIC1111-compatible `/sdapi/v1/*` subset, and JSON lines over stdio.
//!
//! One engine, one FIFO queue: a [`Service`] owns the engine and is the only reader of its
//! events (see `service.rs`); the HTTP server, stdio mode and the window of
//! `imagelab gui --serve` all submit through it. The HTTP server is axum on a current-thread
//! tokio runtime on its own thread (`imagelab-http`); handlers never block it — submitting is
//! a non-blocking channel send, waiting for a job is a watch channel, and file work runs on the
//! blocking pool.
//!
//! Safety: loopback unless told otherwise, and then only with credentials; a body size limit;
//! request paths confined to the output folder and `--allow-dir` folders; a queue limit.

pub mod a1111;
pub mod api;
pub mod auth;
pub mod errors;
pub mod events;
mod lenient;
pub mod openapi;
mod oversize;
pub mod paths;
pub mod service;
pub mod stdio;
pub mod stop;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;

pub use auth::Credentials;
pub use service::{Origin, Service, ServiceConfig, ServiceError};
pub use stop::StopToken;

/// The default port (A1111's).
pub const DEFAULT_PORT: u16 = 7860;
/// The default request body limit: room for a large init image in base64.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// How the HTTP server listens and whom it admits.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Address to bind (default 127.0.0.1).
    pub host: String,
    /// Port (0: any free port).
    pub port: u16,
    /// Accepted credentials (empty: open).
    pub credentials: Credentials,
    /// Largest request body in bytes.
    pub body_limit_bytes: usize,
    /// Serve A1111's `/sdapi/v1/server-stop` and `/server-kill` (`--api-server-stop`).
    pub server_stop_routes: bool,
}

impl HttpOptions {
    /// Loopback on `port`, open, the default body limit, no stop routes.
    pub fn loopback(port: u16) -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port,
            credentials: Credentials::open(),
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            server_stop_routes: false,
        }
    }
}

/// Why the server did not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A bad setting (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The socket or the runtime failed.
    #[error("{0}")]
    Io(String),
}

/// Whether `host` names only this machine.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A socket bound before the engine starts, so a taken port fails early with its address.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    address: SocketAddr,
}

impl Bound {
    /// The address clients reach (the real port when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// Binds `options.host:port`, refusing anything but loopback without credentials.
///
/// # Errors
/// A public address without `--api-auth`/`--api-token-file` (usage), or a socket error.
pub fn bind(options: &HttpOptions) -> Result<Bound, ServeError> {
    if !is_loopback(&options.host) && !options.credentials.is_required() {
        return Err(ServeError::Usage(format!(
            "--host {} lets other machines reach the API; give --api-auth USER:PASSWORD or \
             --api-token-file FILE (or bind 127.0.0.1)",
            options.host
        )));
    }
    let listener = TcpListener::bind((options.host.as_str(), options.port)).map_err(|err| {
        ServeError::Io(format!("cannot listen on {}:{}: {err}", options.host, options.port))
    })?;
    let address = listener.local_addr().map_err(|err| ServeError::Io(err.to_string()))?;
    Ok(Bound { listener, address })
}

/// A JSON answer. (axum's own `Json` needs its `json` feature, which switches on `serde_json`'s
/// `raw_value` for the whole build and so rebuilds everything that uses `serde_json`.)
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        use axum::http::{HeaderValue, StatusCode, header};
        match serde_json::to_vec(&self.0) {
            Ok(bytes) => {
                ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes)
                    .into_response()
            }
            Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
        }
    }
}

/// State every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The engine and its jobs.
    pub service: Arc<Service>,
}

/// Every route, with the body limit and the credential check.
pub fn router(service: Arc<Service>, options: &HttpOptions) -> axum::Router {
    let mut routes = api::routes().merge(a1111::routes());
    if options.server_stop_routes {
        routes = routes.merge(a1111::stop_routes());
    }
    routes
        .layer(axum::extract::DefaultBodyLimit::max(options.body_limit_bytes))
        .layer(axum::middleware::from_fn_with_state(options.body_limit_bytes, oversize::refuse))
        .layer(axum::middleware::from_fn_with_state(options.credentials.clone(), auth::require))
        .with_state(AppState { service })
}

/// Serves until the service's stop token is set, then finishes gracefully: no new
/// connections, the waiting jobs are dropped, the running one finishes (or is cancelled on an
/// immediate stop), open requests and streams get their answers. Blocks the calling thread
/// (it runs a current-thread runtime).
///
/// # Errors
/// The runtime cannot start or the socket fails.
pub fn serve_blocking(
    service: &Arc<Service>,
    bound: Bound,
    options: &HttpOptions,
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("imagelab-http")
        .build()
        .map_err(|err| ServeError::Io(format!("cannot start the HTTP runtime: {err}")))?;
    let app = router(Arc::clone(service), options);
    let stop = service.stop_token().clone();
    let watcher = Arc::clone(service);
    runtime.block_on(async move {
        bound.listener.set_nonblocking(true).map_err(|err| ServeError::Io(err.to_string()))?;
        let listener = tokio::net::TcpListener::from_std(bound.listener)
            .map_err(|err| ServeError::Io(err.to_string()))?;
        // A stop drops the queue at once (so waiting requests are answered) and, when
        // immediate, cancels the running job; the server then drains its connections.
        let reactor = tokio::spawn(async move {
            watcher.stop_token().requested().await;
            let stopping = Arc::clone(&watcher);
            let _ = tokio::task::spawn_blocking(move || stopping.begin_stop()).await;
            watcher.stop_token().immediate().await;
            let _ = tokio::task::spawn_blocking(move || watcher.stop_now()).await;
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.requested().await })
            .await
            .map_err(|err| ServeError::Io(err.to_string()));
        reactor.abort();
        served
    })
}
