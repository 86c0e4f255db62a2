//! Error answers: our API's `{"error", "field"}`, and for the AUTOMATIC1111 routes FastAPI's
//! 422 validation shape and A1111's exception envelope, as its clients expect them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use super::service::ServiceError;
use crate::request::RequestError;

/// An error from our own routes: `{"error": "...", "field": "..."}` (`field` when one is to
/// blame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
    /// The request field to blame.
    pub field: Option<String>,
}

/// The body of an error from our own routes.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong (`field: message` when a field is to blame).
    pub error: String,
    /// The request field to blame, as the request spells it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// An error with a status and a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), field: None }
    }

    /// A 422 naming `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// 404 for a job that is not (or no longer) known.
    pub fn unknown_job(job: u64) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no job {job} (never submitted, or forgotten)"))
    }
}

impl From<RequestError> for ApiError {
    fn from(err: RequestError) -> Self {
        Self::field(err.field.clone(), err.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Request(err) => err.into(),
            ServiceError::UnknownJob(job) => Self::unknown_job(job),
            ServiceError::QueueFull(_)
            | ServiceError::Stopping
            | ServiceError::Engine(_)
            | ServiceError::Start(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.message, field: self.field };
        (self.status, crate::server::Json(body)).into_response()
    }
}

/// One entry of FastAPI's validation error list.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ValidationDetail {
    /// Where: `["body", "steps"]`, `["body", "override_settings", "sd_model_checkpoint"]`.
    pub loc: Vec<serde_json::Value>,
    /// pydantic's message.
    pub msg: String,
    /// pydantic's error type (`type_error.integer`, `value_error`, …).
    #[serde(rename = "type")]
    pub kind: String,
}

/// FastAPI's 422 answer: `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ValidationError {
    /// What is wrong, one entry per field.
    pub detail: Vec<ValidationDetail>,
}

impl ValidationError {
    /// One bad field at `loc` below the body.
    pub fn at(loc: &[&str], kind: impl Into<String>, msg: impl Into<String>) -> Self {
        let mut path = vec![serde_json::Value::from("body")];
        path.extend(loc.iter().map(|part| serde_json::Value::from(*part)));
        Self { detail: vec![ValidationDetail { loc: path, msg: msg.into(), kind: kind.into() }] }
    }

    /// A value error (wrong value, right type) on one field.
    pub fn value(loc: &[&str], msg: impl Into<String>) -> Self {
        Self::at(loc, "value_error", msg)
    }

    /// The body is not JSON: FastAPI reports the byte offset where parsing stopped.
    pub fn json_decode(offset: usize, msg: impl Into<String>) -> Self {
        Self {
            detail: vec![ValidationDetail {
                loc: vec!["body".into(), offset.into()],
                msg: msg.into(),
                kind: "value_error.jsondecode".into(),
            }],
        }
    }
}

impl IntoResponse for ValidationError {
    fn into_response(self) -> Response {
        (StatusCode::UNPROCESSABLE_ENTITY, crate::server::Json(self)).into_response()
    }
}

/// A1111's answer to an exception: `{"error": "HTTPException", "detail": …, "body": "",
/// "errors": …}` with the exception's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct A1111Error {
    /// The status.
    pub status: StatusCode,
    /// The exception's class name as A1111 reports it.
    pub error: &'static str,
    /// `detail` (HTTPException) or the message (`errors`) for other exceptions.
    pub detail: String,
}

/// A1111's exception envelope.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct A1111ErrorBody {
    /// The exception class (`HTTPException`, `RuntimeError`).
    pub error: String,
    /// The HTTPException's detail.
    pub detail: String,
    /// The request body A1111 echoes (always empty here).
    pub body: String,
    /// `str(exception)`.
    pub errors: String,
}

impl A1111Error {
    /// An HTTPException with a status and detail.
    pub fn http(status: StatusCode, detail: impl Into<String>) -> Self {
        Self { status, error: "HTTPException", detail: detail.into() }
    }

    /// A failure during generation (A1111 answers a `RuntimeError` with 500).
    pub fn runtime(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "RuntimeError",
            detail: message.into(),
        }
    }
}

impl From<ServiceError> for A1111Error {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::UnknownJob(_) => Self::http(StatusCode::NOT_FOUND, err.to_string()),
            ServiceError::Request(err) => {
                Self::http(StatusCode::UNPROCESSABLE_ENTITY, err.to_string())
            }
            _ => Self::http(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
        }
    }
}

impl IntoResponse for A1111Error {
    fn into_response(self) -> Response {
        let (detail, errors) = if self.error == "HTTPException" {
            (self.detail.clone(), self.detail)
        } else {
            (String::new(), self.detail)
        };
        let body = json!({"error": self.error, "detail": detail, "body": "", "errors": errors});
        (self.status, crate::server::Json(body)).into_response()
    }
}
