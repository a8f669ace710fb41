//! Headers every response carries, whatever produced it (handlers, extractor rejections,
//! 404s of the router): a request id, browser security headers and, on the stream routes,
//! CORS (protocol 12.7). Errors that no handler produced get the API's JSON shape here too.

use axum::extract::{Request, State};
use axum::http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::headers::PREFIX;
use crate::request_id::{new_request_id, RequestId, CURRENT_REQUEST};
use crate::{metrics, stamp, AppState};

const ALLOWED_HEADERS: &str = "Content-Type, Authorization, If-None-Match, Last-Event-ID, \
    Stream-TTL, Stream-Expires-At, Stream-Seq, Stream-Closed, Stream-Forked-From, \
    Stream-Fork-Offset, Stream-Fork-Sub-Offset, Producer-Id, Producer-Epoch, Producer-Seq";

pub async fn common_headers(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let stream = req.uri().path().starts_with(PREFIX);
    let method = req.method().clone();
    let id = new_request_id();
    req.extensions_mut().insert(RequestId(id.clone()));
    // Only the stream routes answer browsers of other origins (protocol 12.7); a preflight
    // for any other route finds no route.
    let preflight = stream && method == Method::OPTIONS;
    let requested_headers = req.headers().get("access-control-request-headers").cloned();
    let checked = crate::guard::check(&state, &method, req.uri(), req.headers(), stream);
    let mut response = match checked {
        Err(e) => e.for_request(&RequestId(id.clone())).into_response(),
        Ok(()) if preflight => StatusCode::NO_CONTENT.into_response(),
        Ok(()) => CURRENT_REQUEST.scope(id.clone(), next.run(req)).await,
    };
    if stream {
        metrics::observe_stream(&state, &method, &response, started);
    }
    if response.status().as_u16() >= 400 && method != Method::HEAD && !is_json(&response) {
        response = as_api_error(response, &id).await;
    }
    stamp::stamp(response.headers_mut(), &id, stream);
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

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"))
}

/// Longest text of an error answered without a handler that is kept as its message.
const REJECTION_TEXT: usize = 4 << 10;

/// An error the router answered without a handler (axum's empty 404 and 405, its plain-text
/// rejections of a body past the limit or a path it cannot decode) as the API's JSON error,
/// with its status and its other headers (`Allow`) kept.
async fn as_api_error(response: Response, id: &str) -> Response {
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, REJECTION_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (text.is_empty(), parts.status) {
        (false, _) => text,
        (true, StatusCode::NOT_FOUND) => "no route matches this path".to_string(),
        (true, StatusCode::METHOD_NOT_ALLOWED) => {
            let allowed = parts.headers.get(ALLOW).and_then(|v| v.to_str().ok());
            format!(
                "this route does not take this method; it takes {}",
                allowed.unwrap_or("none")
            )
        }
        (true, status) => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let rid = RequestId(id.to_string());
    let mut response = ApiError::from_status(parts.status, message)
        .for_request(&rid)
        .into_response();
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}
