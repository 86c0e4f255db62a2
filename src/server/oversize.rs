//! Bodies over the limit: refused with a 413 the client can actually read.
//!
//! Answering before the body has arrived and then closing leaves the rest of the body unread in
//! the socket, and the kernel answers that with a reset: a client still sending (every simple
//! client sends the whole body before it reads) sees "broken pipe" or "connection reset" instead
//! of the 413. So a request whose declared `Content-Length` is over the limit has its body read
//! and thrown away first, within bounds (at most [`DRAIN_MAX_BYTES`] and [`DRAIN_TIME`], as a web
//! server's lingering close), and is then answered with our JSON error naming the limit. Bodies
//! without a declared length are still cut off by axum's `DefaultBodyLimit` when they pass it.

use std::time::Duration;

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;

/// The most of a refused body that is read to keep the connection orderly; past it the answer
/// goes out at once and the client may see a reset.
pub const DRAIN_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The longest a refused body is read for.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The declared body length, when the request has a valid `Content-Length`.
fn declared_length(request: &Request) -> Option<u64> {
    request.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Reads and discards at most `limit` bytes of `body` (the whole of it when it is shorter).
async fn discard(mut body: Body, limit: u64) {
    let mut read = 0u64;
    while read < limit {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read = read.saturating_add(data.len() as u64);
                }
            }
            Some(Err(_)) | None => return,
        }
    }
}

/// Middleware: a declared body over `limit` bytes gets a 413 (after its body is drained) and the
/// connection is closed; anything else goes on.
pub async fn refuse(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let Some(length) = declared_length(&request) else {
        return next.run(request).await;
    };
    if length <= limit as u64 {
        return next.run(request).await;
    }
    if length <= DRAIN_MAX_BYTES {
        let _ = tokio::time::timeout(DRAIN_TIME, discard(request.into_body(), length)).await;
    }
    let mut response = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is {length} bytes; this server accepts at most {limit} \
             (--max-body-mb)"
        ),
    )
    .into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
