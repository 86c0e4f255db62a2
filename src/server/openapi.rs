//! The OpenAPI 3.1 document of the HTTP API, generated from the types the handlers use
//! (schemars), so it cannot drift from the code: `imagelab serve --openapi` prints it, the
//! server answers it at `/openapi.json`, and a test keeps `docs/openapi.json` equal to it.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::a1111::request::GenerationRequest;
use super::a1111::samplers::{SamplerItem, SchedulerItem};
use super::a1111::{GenerationResponse, ProgressResponse, PromptStyleItem, SdModelItem};
use super::api::{Accepted, CancelAnswer, ModelsResponse, PreloadAccepted, PreloadRequest};
use super::errors::{A1111ErrorBody, ErrorBody, ValidationError};
use super::events::ApiEvent;
use super::service::{Health, JobView};
use super::stdio::{StdioCommand, StdioLine};
use crate::request::Request;

/// One operation: method, path, summary, body type, answers (status → schema or none).
struct Operation {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
    body: Option<Value>,
    answers: Vec<(&'static str, &'static str, Option<Value>)>,
    parameters: Vec<Value>,
}

#[allow(
    clippy::unnecessary_wraps,
    reason = "an answer's schema slot is an Option: some answers have no body"
)]
fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Option<Value> {
    Some(generator.subschema_for::<T>().to_value())
}

fn path_id() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0}})
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description,
           "schema": {"type": "boolean"}})
}

#[allow(clippy::too_many_lines, reason = "one table of every route")]
fn operations(generator: &mut SchemaGenerator) -> Vec<Operation> {
    let error = schema::<ErrorBody>(generator);
    let validation = schema::<ValidationError>(generator);
    let a1111_error = schema::<A1111ErrorBody>(generator);
    let null = Some(json!({"type": "null"}));
    let op = |method, path, summary, tag| Operation {
        method,
        path,
        summary,
        tag,
        body: None,
        answers: Vec::new(),
        parameters: Vec::new(),
    };
    vec![
        Operation {
            answers: vec![("200", "Engine state", schema::<Health>(generator))],
            ..op("get", "/health", "Engine state, device, loaded model, queue counts", "imagelab")
        },
        Operation {
            answers: vec![("200", "Catalog models", schema::<ModelsResponse>(generator))],
            ..op(
                "get",
                "/models",
                "Catalog models and their state in the Hugging Face cache",
                "imagelab",
            )
        },
        Operation {
            body: schema::<PreloadRequest>(generator),
            answers: vec![
                ("202", "Queued as a job", schema::<PreloadAccepted>(generator)),
                ("422", "A bad field, named", error.clone()),
                ("503", "Queue full or shutting down", error.clone()),
            ],
            ..op(
                "post",
                "/models/preload",
                "Load a model ahead of the jobs queued after it",
                "imagelab",
            )
        },
        Operation {
            answers: vec![(
                "200",
                "Jobs remembered, oldest first",
                schema::<Vec<JobView>>(generator),
            )],
            ..op("get", "/jobs", "Every job remembered", "imagelab")
        },
        Operation {
            body: schema::<Request>(generator),
            answers: vec![
                ("202", "Queued", schema::<Accepted>(generator)),
                ("413", "Body too large", None),
                ("422", "A bad field (or an unknown one), named", error.clone()),
                ("503", "Queue full or shutting down", error.clone()),
            ],
            ..op(
                "post",
                "/jobs",
                "Queue a request (the same one the CLI builds; sweeps included)",
                "imagelab",
            )
        },
        Operation {
            parameters: vec![path_id()],
            answers: vec![
                ("200", "The job", schema::<JobView>(generator)),
                ("404", "Unknown or forgotten job", error.clone()),
            ],
            ..op(
                "get",
                "/jobs/{id}",
                "A job: state, request, images, progress, summary",
                "imagelab",
            )
        },
        Operation {
            parameters: vec![path_id()],
            answers: vec![
                ("202", "Cancel requested", schema::<CancelAnswer>(generator)),
                ("404", "Unknown or forgotten job", error.clone()),
                ("409", "Already finished", error.clone()),
            ],
            ..op(
                "delete",
                "/jobs/{id}",
                "Cancel a job (waiting: dropped; running: stops within a step)",
                "imagelab",
            )
        },
        Operation {
            parameters: vec![
                path_id(),
                query(
                    "cancel_on_disconnect",
                    "Cancel the job if this stream closes before it ends",
                ),
                query("previews", "Send preview events (default true)"),
            ],
            answers: vec![
                (
                    "200",
                    "text/event-stream: each event's name is its `event` field, its data this JSON; ends after `finished`",
                    schema::<ApiEvent>(generator),
                ),
                ("404", "Unknown or forgotten job", error.clone()),
            ],
            ..op(
                "get",
                "/jobs/{id}/events",
                "The job's events as Server-Sent Events, from its start",
                "imagelab",
            )
        },
        Operation {
            parameters: vec![
                json!({"name": "path", "in": "path", "required": true, "schema": {"type": "string"}}),
            ],
            answers: vec![
                ("200", "The file (image/png, image/jpeg, image/webp)", None),
                ("403", "Outside the output folder", error.clone()),
                ("404", "No such file", error.clone()),
            ],
            ..op("get", "/images/{path}", "A file below the output folder", "imagelab")
        },
        Operation {
            answers: vec![("200", "This document", Some(json!({"type": "object"})))],
            ..op("get", "/openapi.json", "This document", "imagelab")
        },
        Operation {
            body: schema::<GenerationRequest>(generator),
            answers: vec![
                ("200", "The images", schema::<GenerationResponse>(generator)),
                ("422", "FastAPI's validation error naming the field", validation.clone()),
                ("500", "Generation failed", a1111_error.clone()),
            ],
            ..op("post", "/sdapi/v1/txt2img", "A1111 txt2img (waits for the images)", "a1111")
        },
        Operation {
            body: schema::<GenerationRequest>(generator),
            answers: vec![
                ("200", "The images", schema::<GenerationResponse>(generator)),
                ("422", "FastAPI's validation error naming the field", validation.clone()),
                ("500", "Generation failed", a1111_error.clone()),
            ],
            ..op("post", "/sdapi/v1/img2img", "A1111 img2img (one init image; no masks)", "a1111")
        },
        Operation {
            answers: vec![("200", "Checkpoints", schema::<Vec<SdModelItem>>(generator))],
            ..op("get", "/sdapi/v1/sd-models", "A1111 checkpoint list (our catalog)", "a1111")
        },
        Operation {
            answers: vec![("200", "Samplers", schema::<Vec<SamplerItem>>(generator))],
            ..op("get", "/sdapi/v1/samplers", "A1111 sampler list (those that run here)", "a1111")
        },
        Operation {
            answers: vec![("200", "Schedule types", schema::<Vec<SchedulerItem>>(generator))],
            ..op(
                "get",
                "/sdapi/v1/schedulers",
                "A1111 schedule types (those that run here)",
                "a1111",
            )
        },
        Operation {
            answers: vec![("200", "Style profiles", schema::<Vec<PromptStyleItem>>(generator))],
            ..op("get", "/sdapi/v1/prompt-styles", "Our style profiles as A1111 styles", "a1111")
        },
        Operation {
            answers: vec![(
                "200",
                "`sd_model_checkpoint` and the few settings that exist here",
                Some(json!({"type": "object"})),
            )],
            ..op("get", "/sdapi/v1/options", "A1111 options", "a1111")
        },
        Operation {
            body: Some(
                json!({"type": "object", "properties": {"sd_model_checkpoint": {"type": "string"}}}),
            ),
            answers: vec![
                ("200", "null", null.clone()),
                ("422", "Unknown model", validation.clone()),
            ],
            ..op(
                "post",
                "/sdapi/v1/options",
                "Pick the default model (queued for loading); other keys are ignored",
                "a1111",
            )
        },
        Operation {
            parameters: vec![query("skip_current_image", "Leave current_image out")],
            answers: vec![("200", "Progress", schema::<ProgressResponse>(generator))],
            ..op("get", "/sdapi/v1/progress", "A1111 progress of the running job", "a1111")
        },
        Operation {
            answers: vec![("200", "{}", Some(json!({"type": "object"})))],
            ..op(
                "post",
                "/sdapi/v1/interrupt",
                "Cancel the running job (its saved images are kept)",
                "a1111",
            )
        },
        Operation {
            answers: vec![("200", "null", null.clone())],
            ..op("post", "/sdapi/v1/skip", "Skip the running item", "a1111")
        },
        Operation {
            answers: vec![("200", "No scripts", Some(json!({"type": "object"})))],
            ..op("get", "/sdapi/v1/scripts", "A1111 script list (empty)", "a1111")
        },
        Operation {
            answers: vec![("200", "null", null.clone())],
            ..op("post", "/sdapi/v1/refresh-checkpoints", "No-op (the catalog is fixed)", "a1111")
        },
        Operation {
            answers: vec![("200", "Stopping.", Some(json!({"type": "string"})))],
            ..op(
                "post",
                "/sdapi/v1/server-stop",
                "Graceful stop (only with --api-server-stop)",
                "a1111",
            )
        },
        Operation {
            answers: vec![("200", "null", null)],
            ..op(
                "post",
                "/sdapi/v1/server-kill",
                "Immediate stop: the running job is cancelled (only with --api-server-stop)",
                "a1111",
            )
        },
    ]
}

/// The document.
pub fn document() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    let mut generator = settings.into_generator();
    let mut paths = Map::new();
    for operation in operations(&mut generator) {
        let mut responses = Map::new();
        for (status, description, schema) in operation.answers {
            let mut answer = json!({"description": description});
            if let Some(schema) = schema {
                let media = if operation.path.ends_with("/events") && status == "200" {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                answer["content"] = json!({media: {"schema": schema}});
            }
            responses.insert(status.to_owned(), answer);
        }
        responses.insert(
            "401".into(),
            json!({"description": "Credentials required (--api-auth / --api-token-file)"}),
        );
        let mut entry = json!({
            "summary": operation.summary,
            "tags": [operation.tag],
            "responses": responses,
        });
        if let Some(body) = operation.body {
            entry["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": body}}});
        }
        if !operation.parameters.is_empty() {
            entry["parameters"] = Value::Array(operation.parameters);
        }
        let path = paths.entry(operation.path.to_owned()).or_insert_with(|| json!({}));
        path[operation.method] = entry;
    }
    // stdio mode speaks the same JSON; its line types are documented alongside.
    let _ = generator.subschema_for::<StdioCommand>();
    let _ = generator.subschema_for::<StdioLine>();
    let schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "imagelab",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "SDXL Image Lab's HTTP API (`imagelab serve`): our own routes and an \
                AUTOMATIC1111-compatible subset of /sdapi/v1. The schemas StdioCommand and \
                StdioLine describe `imagelab serve --stdio`'s JSON lines.",
        },
        "tags": [
            {"name": "imagelab", "description": "Our API"},
            {"name": "a1111", "description": "The AUTOMATIC1111-compatible subset"},
        ],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{}, {"basic": []}, {"bearer": []}],
        "paths": paths,
    })
}

/// The document as the checked-in file holds it (pretty, with a final newline).
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}
