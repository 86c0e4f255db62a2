//! The AUTOMATIC1111-compatible subset of `/sdapi/v1/*`, close enough that its clients
//! (the `webuiapi` package, Open WebUI, SillyTavern…) work unmodified: txt2img and img2img
//! answer `images` (base64 PNGs with our metadata), `parameters` and `info` (A1111's JSON
//! string); models, samplers, schedule types, options, progress (with a live preview),
//! interrupt and skip answer in A1111's shapes.
//!
//! Requests queue FIFO with every other front end's jobs; a client that disconnects while its
//! image is made cancels nothing (A1111 does not either).

#![allow(
    clippy::result_large_err,
    reason = "handlers answer an early error as the axum Response it already is; boxing it would only add an allocation"
)]

pub mod request;
pub mod samplers;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::server::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use self::request::{Endpoint, GenerationRequest, Mapped, a1111_field};
use self::samplers::SamplerChoice;
use super::AppState;
use super::errors::{A1111Error, ValidationError};
use super::events::JobState;
use super::service::{JobOutcome, Origin, Service, ServiceError, Submission};
use crate::models::catalog::{EntryKind, ModelSource};
use crate::request::RequestError;
use crate::storage::metadata::png_io;
use crate::vocab::Mode;

/// The folder (inside the output folder, hidden from the gallery) where init images sent as
/// base64 are kept, named by their content, so the images made from them can be re-run.
pub const INPUTS_DIR: &str = ".inputs";

/// `POST /sdapi/v1/txt2img` and `/img2img`'s answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GenerationResponse {
    /// Each image as a base64 PNG (with its metadata), unless `send_images` was false.
    pub images: Vec<String>,
    /// The request's fields with A1111's defaults filled in.
    pub parameters: Map<String, Value>,
    /// A JSON string: A1111's `Processed.js()` (seeds, prompts, infotexts, …) plus an
    /// `imagelab` object with the job number, the saved paths and notes.
    pub info: String,
}

/// `/sdapi/v1/sd-models`' items.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SdModelItem {
    /// What `sd_model_checkpoint` takes (our display name).
    pub title: String,
    /// The display name.
    pub model_name: String,
    /// A1111's short hash (not computed here).
    pub hash: Option<String>,
    /// A1111's sha256 (not computed here).
    pub sha256: Option<String>,
    /// Hub id or path.
    pub filename: String,
    /// A1111's config file (none here).
    pub config: Option<String>,
}

/// `/sdapi/v1/prompt-styles`' items: our style profiles.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PromptStyleItem {
    /// Profile name (what `styles` takes).
    pub name: String,
    /// Appended to the prompt.
    pub prompt: Option<String>,
    /// Appended to the negative prompt.
    pub negative_prompt: Option<String>,
}

/// `/sdapi/v1/progress`' answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProgressResponse {
    /// 0 to 1.
    pub progress: f64,
    /// Estimated seconds left.
    pub eta_relative: f64,
    /// A1111's state: `skipped`, `interrupted`, `stopping_generation`, `job`, `job_count`,
    /// `job_timestamp`, `job_no`, `sampling_step`, `sampling_steps`.
    pub state: Map<String, Value>,
    /// The newest preview as a base64 PNG.
    pub current_image: Option<String>,
    /// What the engine is doing, when it says (model loading).
    pub textinfo: Option<String>,
    /// The running job's number as text.
    pub current_task: Option<String>,
}

/// `/sdapi/v1/progress` query.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct ProgressQuery {
    /// Leave `current_image` out.
    #[serde(default)]
    pub skip_current_image: Option<String>,
}

/// The routes.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/sdapi/v1/txt2img", post(txt2img))
        .route("/sdapi/v1/img2img", post(img2img))
        .route("/sdapi/v1/sd-models", get(sd_models))
        .route("/sdapi/v1/samplers", get(|| async { Json(samplers::sampler_items()) }))
        .route("/sdapi/v1/schedulers", get(|| async { Json(samplers::scheduler_items()) }))
        .route("/sdapi/v1/options", get(get_options).post(set_options))
        .route("/sdapi/v1/progress", get(progress))
        .route("/sdapi/v1/interrupt", post(interrupt))
        .route("/sdapi/v1/skip", post(skip))
        .route("/sdapi/v1/prompt-styles", get(prompt_styles))
        .route("/sdapi/v1/scripts", get(|| async { Json(json!({"txt2img": [], "img2img": []})) }))
        .route("/sdapi/v1/refresh-checkpoints", post(|| async { Json(Value::Null) }))
}

/// The server-stop routes of A1111's `--api-server-stop`: a graceful stop.
pub fn stop_routes() -> axum::Router<AppState> {
    use axum::routing::post;
    axum::Router::new().route("/sdapi/v1/server-stop", post(server_stop)).route(
        "/sdapi/v1/server-kill",
        post(|State(app): State<AppState>| async move {
            app.service.stop_token().request_immediate("/sdapi/v1/server-kill");
            Json(Value::Null)
        }),
    )
}

async fn server_stop(State(app): State<AppState>) -> impl IntoResponse {
    app.service.stop_token().request_graceful("/sdapi/v1/server-stop");
    "Stopping."
}

async fn txt2img(State(app): State<AppState>, body: Bytes) -> Response {
    generate(app.service, Endpoint::Txt2img, body).await.unwrap_or_else(|response| response)
}

async fn img2img(State(app): State<AppState>, body: Bytes) -> Response {
    generate(app.service, Endpoint::Img2img, body).await.unwrap_or_else(|response| response)
}

/// A request error of ours as FastAPI's 422 on the A1111 field it is about.
fn field_error(err: &RequestError) -> ValidationError {
    ValidationError::value(&a1111_field(err), err.message.clone())
}

fn service_error(err: ServiceError) -> Response {
    match err {
        ServiceError::Request(err) => field_error(&err).into_response(),
        other => A1111Error::from(other).into_response(),
    }
}

async fn generate(
    service: Arc<Service>,
    endpoint: Endpoint,
    body: Bytes,
) -> Result<Response, Response> {
    let parsed = request::parse(&body).map_err(IntoResponse::into_response)?;
    let default_model = service.default_model();
    let mapped =
        parsed.fields.to_request(endpoint, &default_model).map_err(IntoResponse::into_response)?;
    for note in parsed.notes.iter().chain(&mapped.notes) {
        tracing::info!("{}: {note}", endpoint_path(endpoint));
    }
    let submit_service = Arc::clone(&service);
    let submitted = tokio::task::spawn_blocking(move || submit(&submit_service, mapped))
        .await
        .map_err(|err| A1111Error::runtime(err.to_string()).into_response())??;
    let Submitted { job, mut receiver, mapped } = submitted;
    let outcome = loop {
        if let Some(outcome) = receiver.borrow_and_update().outcome.clone() {
            break outcome;
        }
        if receiver.changed().await.is_err() {
            return Err(
                A1111Error::runtime("the engine stopped before the job finished").into_response()
            );
        }
    };
    let fields = parsed.fields;
    let notes: Vec<String> = parsed.notes.into_iter().chain(mapped.notes.iter().cloned()).collect();
    let root = service.output_root().to_owned();
    tokio::task::spawn_blocking(move || {
        respond(&root, endpoint, job, &fields, &parsed.body, &mapped, &outcome, &notes)
    })
    .await
    .map_err(|err| A1111Error::runtime(err.to_string()).into_response())?
}

fn endpoint_path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Txt2img => "/sdapi/v1/txt2img",
        Endpoint::Img2img => "/sdapi/v1/img2img",
    }
}

struct Submitted {
    job: u64,
    receiver: tokio::sync::watch::Receiver<super::service::JobPhase>,
    mapped: Mapped,
}

/// Keeps the init image, validates and queues (on the blocking pool: it touches files).
fn submit(service: &Service, mut mapped: Mapped) -> Result<Submitted, Response> {
    if let Some(bytes) = mapped.init_image.take() {
        let path = keep_init_image(service.output_root(), &bytes).map_err(|err| {
            A1111Error::runtime(format!("init image not kept: {err}")).into_response()
        })?;
        mapped.request.init_image = Some(path);
    }
    let plan = service.prepare(&mapped.request).map_err(|err| field_error(&err).into_response())?;
    let label = format!("[a1111] {}", mapped.request.prompt.chars().take(40).collect::<String>());
    let job = service
        .submit(plan, Submission { origin: Origin::A1111, label }, |_| {})
        .map_err(service_error)?;
    let receiver = service.watch_job(job).ok_or_else(|| {
        A1111Error::runtime("the job was forgotten before it ran").into_response()
    })?;
    Ok(Submitted { job, receiver, mapped })
}

/// Writes an init image into `<root>/.inputs/<sha256 prefix>.<ext>` (once per content).
fn keep_init_image(root: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use sha2::Digest as _;
    let extension = match image::guess_format(bytes) {
        Ok(image::ImageFormat::Jpeg) => "jpg",
        Ok(image::ImageFormat::WebP) => "webp",
        _ => "png",
    };
    let digest = sha2::Sha256::digest(bytes);
    let name = digest.iter().take(12).fold(String::new(), |mut name, byte| {
        use std::fmt::Write as _;
        let _ = write!(name, "{byte:02x}");
        name
    });
    let folder = root.join(INPUTS_DIR);
    fs_err::create_dir_all(&folder)?;
    let path = folder.join(format!("{name}.{extension}"));
    if !path.is_file() {
        let temporary = folder.join(format!(".{name}.{}.part", std::process::id()));
        fs_err::write(&temporary, bytes)?;
        fs_err::rename(&temporary, &path)?;
    }
    Ok(path)
}

/// Builds the answer from what the job saved.
#[allow(clippy::too_many_arguments, reason = "the request, its mapping and its outcome")]
fn respond(
    root: &Path,
    endpoint: Endpoint,
    job: u64,
    fields: &GenerationRequest,
    body: &Map<String, Value>,
    mapped: &Mapped,
    outcome: &JobOutcome,
    notes: &[String],
) -> Result<Response, Response> {
    use base64::Engine as _;
    if outcome.state == JobState::Failed {
        let message = outcome.summary.errors.join("; ");
        return Err(A1111Error::runtime(if message.is_empty() {
            "generation failed".to_owned()
        } else {
            message
        })
        .into_response());
    }
    let send_images = fields.send_images.unwrap_or(true);
    let mut images = Vec::new();
    let mut infotexts = Vec::new();
    for (path, _) in &outcome.images {
        let bytes = fs_err::read(path)
            .map_err(|err| A1111Error::runtime(err.to_string()).into_response())?;
        let infotext = png_io::read_text_chunks(&bytes)
            .ok()
            .and_then(|chunks| chunks.into_iter().find(|(key, _)| key == "parameters"))
            .map(|(_, text)| text)
            .unwrap_or_default();
        infotexts.push(infotext);
        if send_images {
            images.push(base64::engine::general_purpose::STANDARD.encode(&bytes));
        }
    }
    let info = info_json(root, endpoint, job, fields, mapped, outcome, infotexts, notes);
    let parameters = parameters(endpoint, fields, body);
    Ok(Json(GenerationResponse { images, parameters, info: info.to_string() }).into_response())
}

/// A1111's `Processed.js()` for what the job made, plus our `imagelab` object.
#[allow(clippy::too_many_arguments, reason = "the request, its mapping and its outcome")]
fn info_json(
    root: &Path,
    endpoint: Endpoint,
    job: u64,
    fields: &GenerationRequest,
    mapped: &Mapped,
    outcome: &JobOutcome,
    infotexts: Vec<String>,
    notes: &[String],
) -> Value {
    let record = outcome.records.first();
    let seeds: Vec<u64> = outcome.images.iter().map(|(_, seed)| *seed).collect();
    let count = seeds.len().max(1);
    let prompt = record.map_or_else(|| mapped.request.prompt.clone(), |r| r.prompt.clone());
    let negative = record.map_or_else(|| mapped.request.negative.clone(), |r| r.negative.clone());
    let first_seed = seeds.first().copied().or_else(|| record.map(|r| r.seed_base));
    let (width, height) = record
        .map_or((mapped.request.width, mapped.request.height), |r| (Some(r.width), Some(r.height)));
    let choice: &SamplerChoice = &mapped.sampler;
    let mut extra = Map::new();
    if let Some(label) = choice.schedule_label {
        extra.insert("Schedule type".into(), Value::from(label));
    }
    if let Some(record) = record
        && record.profile != crate::vocab::RAW_PROFILE
    {
        extra.insert("Style profile".into(), Value::from(record.profile.clone()));
    }
    let paths: Vec<String> =
        outcome.images.iter().map(|(path, _)| crate::engine::relative_path(root, path)).collect();
    json!({
        "prompt": prompt,
        "all_prompts": vec![prompt.clone(); count],
        "negative_prompt": negative,
        "all_negative_prompts": vec![negative.clone(); count],
        "seed": first_seed,
        "all_seeds": seeds,
        "subseed": fields.subseed.unwrap_or(-1),
        "all_subseeds": vec![fields.subseed.unwrap_or(-1); count],
        "subseed_strength": fields.subseed_strength.unwrap_or(0.0),
        "width": width,
        "height": height,
        "sampler_name": choice.name,
        "cfg_scale": record.map_or_else(|| f64::from(mapped.request.cfg.unwrap_or(7.0)), |r| f64::from(r.cfg)),
        "steps": record.map_or(mapped.request.steps, |r| Some(r.steps)),
        "batch_size": mapped.batch_size,
        "restore_faces": fields.restore_faces,
        "face_restoration_model": Value::Null,
        "sd_model_name": record.map_or_else(|| mapped.request.model.clone(), |r| r.model.clone()),
        "sd_model_hash": Value::Null,
        "sd_vae_name": Value::Null,
        "sd_vae_hash": Value::Null,
        "seed_resize_from_w": fields.seed_resize_from_w.unwrap_or(-1),
        "seed_resize_from_h": fields.seed_resize_from_h.unwrap_or(-1),
        "denoising_strength": match endpoint {
            Endpoint::Img2img => json!(mapped.request.strength),
            Endpoint::Txt2img => json!(fields.denoising_strength),
        },
        "extra_generation_params": extra,
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": fields.styles.clone().unwrap_or_default(),
        "job_timestamp": outcome.job_timestamp,
        "clip_skip": 1,
        "is_using_inpainting_conditioning": false,
        "version": crate::storage::metadata::version_string(),
        "imagelab": {
            "job": job,
            "state": outcome.state,
            "paths": paths,
            "notes": notes,
            "errors": outcome.summary.errors,
        },
    })
}

/// The request's fields with A1111's defaults, as A1111 echoes them (`vars(request)`).
fn parameters(
    endpoint: Endpoint,
    fields: &GenerationRequest,
    body: &Map<String, Value>,
) -> Map<String, Value> {
    let mut parameters = defaults(endpoint);
    for (key, value) in body {
        if parameters.contains_key(key) {
            parameters.insert(key.clone(), value.clone());
        }
    }
    if endpoint == Endpoint::Img2img && fields.include_init_images != Some(true) {
        parameters.insert("init_images".into(), Value::Null);
        parameters.insert("mask".into(), Value::Null);
    }
    parameters
}

/// A1111's declared fields common to txt2img and img2img, with their defaults (1.10's API
/// models: the processing dataclass fields minus `API_NOT_ALLOWED`, plus the API's extras).
const COMMON_DEFAULTS: &str = r#"{
    "prompt": "", "negative_prompt": "", "styles": null, "seed": -1, "subseed": -1,
    "subseed_strength": 0, "seed_resize_from_h": -1, "seed_resize_from_w": -1,
    "sampler_name": null, "scheduler": null, "batch_size": 1, "n_iter": 1, "steps": 50,
    "cfg_scale": 7.0, "width": 512, "height": 512, "restore_faces": null, "tiling": null,
    "do_not_save_samples": false, "do_not_save_grid": false, "eta": null,
    "denoising_strength": null, "s_min_uncond": null, "s_churn": null, "s_tmax": null,
    "s_tmin": null, "s_noise": null, "override_settings": null,
    "override_settings_restore_afterwards": true, "refiner_checkpoint": null,
    "refiner_switch_at": null, "disable_extra_networks": false, "firstpass_image": null,
    "comments": null, "sampler_index": "Euler", "script_name": null, "script_args": [],
    "send_images": true, "save_images": false, "alwayson_scripts": {},
    "force_task_id": null, "infotext": null
}"#;

/// txt2img's own fields (hires fix).
const TXT2IMG_DEFAULTS: &str = r#"{
    "enable_hr": false, "denoising_strength": 0.75, "firstphase_width": 0,
    "firstphase_height": 0, "hr_scale": 2.0, "hr_upscaler": null, "hr_second_pass_steps": 0,
    "hr_resize_x": 0, "hr_resize_y": 0, "hr_checkpoint_name": null, "hr_sampler_name": null,
    "hr_scheduler": null, "hr_prompt": "", "hr_negative_prompt": ""
}"#;

/// img2img's own fields.
const IMG2IMG_DEFAULTS: &str = r#"{
    "init_images": null, "resize_mode": 0, "image_cfg_scale": null, "mask": null,
    "mask_blur_x": 4, "mask_blur_y": 4, "mask_blur": null, "mask_round": true,
    "inpainting_fill": 0, "inpaint_full_res": true, "inpaint_full_res_padding": 0,
    "inpainting_mask_invert": 0, "initial_noise_multiplier": null, "latent_mask": null,
    "include_init_images": false, "denoising_strength": 0.75
}"#;

/// A1111's declared fields and their defaults for `endpoint`.
fn defaults(endpoint: Endpoint) -> Map<String, Value> {
    let parse = |text: &str| serde_json::from_str::<Map<String, Value>>(text).unwrap_or_default();
    let mut map = parse(COMMON_DEFAULTS);
    map.extend(parse(match endpoint {
        Endpoint::Txt2img => TXT2IMG_DEFAULTS,
        Endpoint::Img2img => IMG2IMG_DEFAULTS,
    }));
    map
}

async fn sd_models(State(app): State<AppState>) -> Json<Vec<SdModelItem>> {
    let mut items: Vec<SdModelItem> = app
        .service
        .config()
        .catalog
        .entries()
        .iter()
        .filter(|entry| entry.kind == EntryKind::Pipeline)
        .map(|entry| SdModelItem {
            title: entry.display_name.clone(),
            model_name: entry.display_name.clone(),
            hash: None,
            sha256: None,
            filename: entry.hub_id.clone(),
            config: None,
        })
        .collect();
    let current = app.service.default_model();
    if !items.iter().any(|item| item.title == current)
        && let Ok(model) = app.service.resolve_model("model", &current)
    {
        let filename = match &model.source {
            ModelSource::Hub(id) => id.clone(),
            ModelSource::LocalDir(path) | ModelSource::LocalFile(path) => {
                path.display().to_string()
            }
        };
        items.push(SdModelItem {
            title: current.clone(),
            model_name: model.display_name,
            hash: None,
            sha256: None,
            filename,
            config: None,
        });
    }
    Json(items)
}

async fn get_options(State(app): State<AppState>) -> Json<Value> {
    Json(json!({
        "sd_model_checkpoint": app.service.default_model(),
        "sd_checkpoint_hash": null,
        "samples_save": true,
        "samples_format": "png",
        "outdir_samples": app.service.output_root().display().to_string(),
        "live_previews_enable": true,
        "show_progress_every_n_steps": 1,
        "CLIP_stop_at_last_layers": 1,
        "sd_vae": "Automatic",
        "eta_noise_seed_delta": 0,
    }))
}

async fn set_options(State(app): State<AppState>, body: Bytes) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(err) => return ValidationError::json_decode(0, err.to_string()).into_response(),
    };
    let Value::Object(options) = value else {
        return ValidationError::at(&[], "type_error.dict", "value is not a valid dict")
            .into_response();
    };
    for (key, value) in &options {
        if key == "sd_model_checkpoint" {
            let Some(name) = value.as_str() else {
                return ValidationError::at(&[key], "type_error.str", "str type expected")
                    .into_response();
            };
            let name = samplers::strip_checkpoint_hash(name).to_owned();
            let service = Arc::clone(&app.service);
            let chosen = tokio::task::spawn_blocking(move || {
                let model = service.resolve_model("sd_model_checkpoint", &name)?;
                // Loaded in the queue's order, so the next request finds it ready.
                service.preload(&name, crate::vocab::DeviceChoice::Auto, None, Origin::A1111)?;
                service.set_default_model(model.display_name.clone());
                Ok::<_, ServiceError>(())
            })
            .await;
            match chosen {
                Ok(Ok(())) => {}
                Ok(Err(ServiceError::Request(err))) => {
                    return ValidationError::value(&["sd_model_checkpoint"], err.message)
                        .into_response();
                }
                Ok(Err(err)) => return A1111Error::from(err).into_response(),
                Err(err) => return A1111Error::runtime(err.to_string()).into_response(),
            }
        } else {
            tracing::info!("/sdapi/v1/options: {key} is not a setting here; ignored");
        }
    }
    Json(Value::Null).into_response()
}

async fn progress(
    State(app): State<AppState>,
    Query(query): Query<ProgressQuery>,
) -> Json<ProgressResponse> {
    let skip_image = query.skip_current_image.as_deref().is_some_and(|text| {
        matches!(text.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
    });
    let idle_state = |job: &str| {
        let mut state = Map::new();
        state.insert("skipped".into(), false.into());
        state.insert("interrupted".into(), false.into());
        state.insert("stopping_generation".into(), false.into());
        state.insert("job".into(), job.into());
        state.insert("job_count".into(), 0.into());
        state.insert("job_timestamp".into(), "0".into());
        state.insert("job_no".into(), 0.into());
        state.insert("sampling_step".into(), 0.into());
        state.insert("sampling_steps".into(), 0.into());
        state
    };
    let Some(running) = app.service.running() else {
        return Json(ProgressResponse {
            progress: 0.0,
            eta_relative: 0.0,
            state: idle_state(""),
            current_image: None,
            textinfo: None,
            current_task: None,
        });
    };
    let job_count = running.images.max(1);
    let (step, steps) = running.progress.map_or((0, 0), |p| (p.step, p.steps));
    // A1111's formula: 0.01 so it never divides by zero, whole images done, then this one.
    let mut fraction = 0.01 + running.images_done as f64 / job_count as f64;
    if steps > 0 {
        fraction += step as f64 / steps as f64 / job_count as f64;
    }
    let elapsed = running.started.elapsed().as_secs_f64();
    let eta_relative = elapsed / fraction - elapsed;
    let job_name = match (running.origin, running.mode) {
        (_, None) => "load model".to_owned(),
        (_, Some(Mode::Txt2img)) => "scripts_txt2img".to_owned(),
        (_, Some(Mode::Img2img)) => "scripts_img2img".to_owned(),
    };
    let mut state = idle_state(&job_name);
    state.insert("skipped".into(), running.skipped.into());
    state.insert("interrupted".into(), running.interrupted.into());
    state.insert("job_count".into(), job_count.into());
    state.insert("job_timestamp".into(), running.job_timestamp.clone().into());
    state.insert("job_no".into(), running.images_done.into());
    state.insert("sampling_step".into(), step.into());
    state.insert("sampling_steps".into(), steps.into());
    Json(ProgressResponse {
        progress: fraction.min(1.0),
        eta_relative,
        state,
        current_image: if skip_image { None } else { running.preview.map(|p| p.data.clone()) },
        textinfo: running.message,
        current_task: Some(running.job.to_string()),
    })
}

async fn interrupt(State(app): State<AppState>) -> Response {
    match app.service.interrupt() {
        Ok(_) => Json(json!({})).into_response(),
        Err(err) => A1111Error::from(err).into_response(),
    }
}

async fn skip(State(app): State<AppState>) -> Response {
    match app.service.skip_current() {
        Ok(()) => Json(Value::Null).into_response(),
        Err(err) => A1111Error::from(err).into_response(),
    }
}

async fn prompt_styles(State(app): State<AppState>) -> Json<Vec<PromptStyleItem>> {
    Json(
        app.service
            .config()
            .profiles
            .all()
            .iter()
            .map(|profile| PromptStyleItem {
                name: profile.name.clone(),
                prompt: Some(profile.prompt_suffix.clone()),
                negative_prompt: Some(profile.negative_suffix.clone()),
            })
            .collect(),
    )
}
