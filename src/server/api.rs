//! Our own API: health, models, preload, jobs (the same [`Request`] the CLI builds, sweeps
//! included), a job's events as Server-Sent Events, and the images in the output folder.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::server::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::AppState;
use super::errors::ApiError;
use super::events::{ApiEvent, JobState};
use super::paths::{ImagePathError, image_below};
use super::service::{Health, JobView, Origin, Service, Submission};
use crate::engine::JobId;
use crate::models::manage::{ModelListing, list_models};
use crate::request::Request;
use crate::vocab::{DeviceChoice, Precision};

/// `POST /jobs` answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Accepted {
    /// The job number.
    pub job: JobId,
    /// Items (model × profile) planned.
    pub items: usize,
    /// Images planned.
    pub images: usize,
    /// The seed of image 0 (chosen when the request gave none).
    pub seed: u64,
    /// Where to follow it.
    pub links: std::collections::BTreeMap<String, String>,
}

/// `POST /models/preload` body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreloadRequest {
    /// Catalog name, hub id, or a local folder / `.safetensors` file in an allowed folder.
    pub model: String,
    /// Device (default auto).
    #[serde(default)]
    pub device: DeviceChoice,
    /// Precision (default: the device's).
    #[serde(default)]
    pub dtype: Option<Precision>,
}

/// `POST /models/preload` answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PreloadAccepted {
    /// The job that loads it (follow it like any job).
    pub job: JobId,
}

/// `GET /models` answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ModelsResponse {
    /// Every catalog model with its state in the local Hugging Face cache.
    pub models: Vec<ModelListing>,
    /// The model requests get when they name none.
    pub default_model: String,
    /// The model the engine last loaded or used.
    pub loaded_model: Option<String>,
}

/// `DELETE /jobs/{id}` answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CancelAnswer {
    /// The job.
    pub job: JobId,
    /// Its state when the cancel arrived (a waiting job is dropped at once; a running one
    /// stops within one step).
    pub state: JobState,
}

/// `GET /jobs/{id}/events` query.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct EventsQuery {
    /// Cancel the job when this stream is closed before it ends (default false: a client that
    /// goes away cancels nothing).
    #[serde(default)]
    pub cancel_on_disconnect: bool,
    /// Send `preview` events (default true).
    #[serde(default = "yes")]
    pub previews: bool,
}

fn yes() -> bool {
    true
}

/// The routes.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/health", get(health))
        .route("/models", get(models))
        .route("/models/preload", post(preload))
        .route("/jobs", get(jobs).post(submit))
        .route("/jobs/{id}", get(job).delete(cancel))
        .route("/jobs/{id}/events", get(events))
        .route("/images/{*path}", get(image))
        .route("/openapi.json", get(|| async { Json(super::openapi::document()) }))
}

async fn health(State(app): State<AppState>) -> Json<Health> {
    Json(app.service.health())
}

async fn models(State(app): State<AppState>) -> Result<Json<ModelsResponse>, ApiError> {
    let service = Arc::clone(&app.service);
    let models = tokio::task::spawn_blocking(move || {
        let config = service.config();
        list_models(&config.catalog, &config.hub, crate::app::preferred_weight_variant())
    })
    .await
    .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    let health = app.service.health();
    Ok(Json(ModelsResponse {
        models,
        default_model: health.default_model,
        loaded_model: health.loaded_model,
    }))
}

/// Parses a JSON body into `T`, naming the field a bad value is in; unknown fields are
/// refused (a typo would otherwise be silently ignored).
///
/// # Errors
/// 422 naming the field (or the position of a syntax error).
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|err| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("body is not JSON: {err}"))
    })?;
    if !value.is_object() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "body must be a JSON object"));
    }
    let mut unknown = Vec::new();
    let mut note_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let deserializer = serde_ignored::Deserializer::new(value, &mut note_unknown);
    let parsed: T = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let field = err.path().to_string();
        ApiError::field(field.clone(), format!("{field}: {}", err.inner()))
    })?;
    if let Some(field) = unknown.first() {
        return Err(ApiError::field(field.clone(), format!("{field}: unknown field")));
    }
    Ok(parsed)
}

async fn submit(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: Request = parse_body(&body)?;
    let service = Arc::clone(&app.service);
    let accepted =
        tokio::task::spawn_blocking(move || submit_request(&service, &request, Origin::Api))
            .await
            .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))??;
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

/// Validates and queues a request (the same checks as the CLI, paths confined).
///
/// # Errors
/// A bad field (422), or a full queue / stopping server (503).
pub fn submit_request(
    service: &Service,
    request: &Request,
    origin: Origin,
) -> Result<Accepted, ApiError> {
    let plan = service.prepare(request)?;
    let (items, images, seed) = (plan.items.len(), plan.image_count(), plan.seed_base);
    let job = service.submit(plan, Submission { origin, label: String::new() }, |_| {})?;
    let mut links = std::collections::BTreeMap::new();
    links.insert("self".to_owned(), format!("/jobs/{job}"));
    links.insert("events".to_owned(), format!("/jobs/{job}/events"));
    Ok(Accepted { job, items, images, seed, links })
}

async fn preload(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: PreloadRequest = parse_body(&body)?;
    let service = Arc::clone(&app.service);
    let job = tokio::task::spawn_blocking(move || {
        service.preload(&request.model, request.device, request.dtype, Origin::Api)
    })
    .await
    .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))??;
    Ok((StatusCode::ACCEPTED, Json(PreloadAccepted { job })).into_response())
}

async fn jobs(State(app): State<AppState>) -> Json<Vec<JobView>> {
    Json(app.service.jobs())
}

async fn job(
    State(app): State<AppState>,
    UrlPath(id): UrlPath<JobId>,
) -> Result<Json<JobView>, ApiError> {
    app.service.job(id).map(Json).ok_or_else(|| ApiError::unknown_job(id))
}

async fn cancel(
    State(app): State<AppState>,
    UrlPath(id): UrlPath<JobId>,
) -> Result<Response, ApiError> {
    let state = app.service.cancel(id)?;
    if state.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "job {id} has already finished ({})",
                serde_json::to_value(state).unwrap_or_default()
            ),
        ));
    }
    Ok((StatusCode::ACCEPTED, Json(CancelAnswer { job: id, state })).into_response())
}

/// What an event stream still has to send.
struct Follow {
    service: Arc<Service>,
    job: JobId,
    backlog: VecDeque<Arc<ApiEvent>>,
    kept_seen: usize,
    live: broadcast::Receiver<Arc<ApiEvent>>,
    previews: bool,
    done: bool,
    cancel_on_drop: bool,
}

impl Drop for Follow {
    fn drop(&mut self) {
        if self.cancel_on_drop && !self.done {
            tracing::info!("job {}: event stream closed early; cancelling it as asked", self.job);
            let _ = self.service.cancel(self.job);
        }
    }
}

impl Follow {
    /// The next event of the job, or `None` after `finished`.
    async fn next(&mut self) -> Option<Arc<ApiEvent>> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                return Some(self.deliver(event));
            }
            if self.done {
                return None;
            }
            match self.live.recv().await {
                Ok(event) if event.job() == Some(self.job) => {
                    if !self.previews && matches!(event.as_ref(), ApiEvent::Preview { .. }) {
                        continue;
                    }
                    return Some(self.deliver(event));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        "job {}: event stream lagged {missed} events; catching up",
                        self.job
                    );
                    self.backlog.extend(self.service.history_from(self.job, self.kept_seen));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn deliver(&mut self, event: Arc<ApiEvent>) -> Arc<ApiEvent> {
        if event.is_kept() {
            self.kept_seen += 1;
        }
        if matches!(event.as_ref(), ApiEvent::Finished { .. }) {
            self.done = true;
        }
        event
    }
}

async fn events(
    State(app): State<AppState>,
    UrlPath(id): UrlPath<JobId>,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let (history, live) = app.service.follow_job(id).ok_or_else(|| ApiError::unknown_job(id))?;
    let follow = Follow {
        service: Arc::clone(&app.service),
        job: id,
        backlog: history.into(),
        kept_seen: 0,
        live,
        previews: query.previews,
        done: false,
        cancel_on_drop: query.cancel_on_disconnect,
    };
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        let data = serde_json::to_string(event.as_ref()).unwrap_or_else(|_| "{}".to_owned());
        Some((Ok(SseEvent::default().event(event.name()).data(data)), follow))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn image(
    State(app): State<AppState>,
    UrlPath(path): UrlPath<String>,
) -> Result<Response, ApiError> {
    let root = app.service.output_root().to_owned();
    let found = tokio::task::spawn_blocking(move || {
        let resolved = image_below(&root, &path).map_err(|err| match err {
            ImagePathError::Refused => ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{path}: only files inside the output folder are served"),
            ),
            ImagePathError::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, format!("{path}: no such image"))
            }
        })?;
        let bytes = fs_err::read(&resolved)
            .map_err(|err| ApiError::new(StatusCode::NOT_FOUND, err.to_string()))?;
        Ok::<_, ApiError>((content_type(&resolved), bytes))
    })
    .await
    .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))??;
    let (mime, bytes) = found;
    Ok(([(header::CONTENT_TYPE, mime)], Body::from(bytes)).into_response())
}

fn content_type(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|ext| ext.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}
