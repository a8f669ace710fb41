//! Headers every response carries, whatever produced it (handlers, extractor rejections,
//! 404s of the router): a request id, browser security headers (protocol 12.7) and CORS.

use axum::extract::{Request, State};
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;

use crate::AppState;

/// A per-request id, echoed in `X-Request-Id` and in error bodies.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

tokio::task_local! {
    /// The id of the request being handled, so every error body can carry it.
    pub static CURRENT_REQUEST: String;
}

/// Headers a browser may read from our responses.
const EXPOSED: &str = "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, \
    Stream-TTL, Stream-Expires-At, Stream-Sse-Data-Encoding, Producer-Epoch, Producer-Seq, \
    Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, X-Request-Id";

const ALLOWED_HEADERS: &str = "Content-Type, Authorization, If-None-Match, Last-Event-ID, \
    Stream-TTL, Stream-Expires-At, Stream-Seq, Stream-Closed, Stream-Forked-From, \
    Stream-Fork-Offset, Stream-Fork-Sub-Offset, Producer-Id, Producer-Epoch, Producer-Seq";

pub async fn common_headers(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let stream_method = req
        .uri()
        .path()
        .starts_with(crate::streams::PREFIX)
        .then(|| req.method().clone());
    let id = new_request_id();
    req.extensions_mut().insert(RequestId(id.clone()));
    let preflight = req.method() == Method::OPTIONS;
    let requested_headers = req.headers().get("access-control-request-headers").cloned();
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        CURRENT_REQUEST.scope(id.clone(), next.run(req)).await
    };
    if let Some(method) = stream_method {
        observe_stream(&state, &method, &response, started);
    }
    stamp(response.headers_mut(), &id);
    if preflight {
        let headers = response.headers_mut();
        headers.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
        );
        // Allow what the browser asked for, plus everything the protocol uses.
        let allowed = match requested_headers.as_ref().and_then(|v| v.to_str().ok()) {
            Some(asked) if !asked.is_empty() => format!("{ALLOWED_HEADERS}, {asked}"),
            _ => ALLOWED_HEADERS.to_string(),
        };
        set(headers, "access-control-allow-headers", &allowed);
        set(headers, "access-control-max-age", "86400");
    }
    response
}

/// A fresh request id: 64 random bits in hex.
pub fn new_request_id() -> String {
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

/// Records a Durable Streams request's latency under the one stream route.
pub fn observe_stream(
    state: &AppState,
    method: &Method,
    response: &Response,
    started: std::time::Instant,
) {
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    state
        .metrics
        .observe(method, crate::metrics::STREAM_ROUTE, status, seconds);
}

/// The headers every response carries: its request id, the security headers and CORS.
pub fn stamp(headers: &mut HeaderMap, id: &str) {
    // Names parsed once, not on every response.
    const NOSNIFF: HeaderName = HeaderName::from_static("x-content-type-options");
    const RESOURCE_POLICY: HeaderName = HeaderName::from_static("cross-origin-resource-policy");
    const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    if let Ok(v) = HeaderValue::from_str(id) {
        headers.insert(REQUEST_ID, v);
    }
    headers.insert(NOSNIFF, HeaderValue::from_static("nosniff"));
    headers.insert(RESOURCE_POLICY, HeaderValue::from_static("cross-origin"));
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}
