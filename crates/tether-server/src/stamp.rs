//! The headers every response carries, whichever path answered it (the router's middleware
//! or the direct append path): a request id, browser security headers and, on the stream
//! routes, CORS (protocol 12.7). A leaf.

use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS};
use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// Headers a browser may read from our responses.
const EXPOSED: &str = "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, \
    Stream-TTL, Stream-Expires-At, Stream-Sse-Data-Encoding, Producer-Epoch, Producer-Seq, \
    Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, X-Request-Id";

/// The headers every response carries: its request id and the security headers; and on the
/// stream routes (`cors`), the CORS headers that let a browser of any origin read them. The
/// task and admin API gives no such permission.
pub fn stamp(headers: &mut HeaderMap, id: &str, cors: bool) {
    // Names parsed once, not on every response.
    const NOSNIFF: HeaderName = HeaderName::from_static("x-content-type-options");
    const RESOURCE_POLICY: HeaderName = HeaderName::from_static("cross-origin-resource-policy");
    const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    if let Ok(v) = HeaderValue::from_str(id) {
        headers.insert(REQUEST_ID, v);
    }
    headers.insert(NOSNIFF, HeaderValue::from_static("nosniff"));
    if !cors {
        headers.insert(RESOURCE_POLICY, HeaderValue::from_static("same-origin"));
        return;
    }
    headers.insert(RESOURCE_POLICY, HeaderValue::from_static("cross-origin"));
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
}
