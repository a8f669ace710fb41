//! Typed helpers for the Durable Streams routes at `/v1/stream/{path}`.

use hyper::{Method, StatusCode};
use serde_json::Value;

use super::http::{BoxError, HttpClient, Response};

pub const HEADER_NEXT_OFFSET: &str = "Stream-Next-Offset";
pub const HEADER_UP_TO_DATE: &str = "Stream-Up-To-Date";
pub const HEADER_CLOSED: &str = "Stream-Closed";
pub const HEADER_CURSOR: &str = "Stream-Cursor";

/// The sentinel offset for "from the beginning of the stream".
pub const START: &str = "-1";

/// The route of a stream, without scheme and host: `/v1/stream/{path}`.
pub fn stream_route(path: &str) -> String {
    format!("/v1/stream/{path}")
}

pub fn stream_url(base_url: &str, path: &str) -> String {
    format!("{base_url}{}", stream_route(path))
}

/// Offsets are opaque, so the tests never assume they are URL-safe.
pub use tether_types::percent_encode as encode_query;

/// Creates a JSON-mode stream; fails unless the server answers 201 (or 200 for an identical
/// existing stream).
pub async fn create_json_stream(
    http: &HttpClient,
    base_url: &str,
    path: &str,
) -> Result<(), BoxError> {
    let url = stream_url(base_url, path);
    let response = http
        .send(
            Method::PUT,
            &url,
            &[("Content-Type", "application/json")],
            "",
        )
        .await?;
    if response.status != StatusCode::CREATED && response.status != StatusCode::OK {
        return Err(format!(
            "PUT {url}: expected 201 Created, got {} {}",
            response.status,
            response.body_text()
        )
        .into());
    }
    Ok(())
}

/// POSTs a JSON body (one message, or an array that the server flattens into messages).
/// Returns the response whatever its status: callers decide what an answer means.
pub async fn append_json(
    http: &HttpClient,
    base_url: &str,
    path: &str,
    body: &Value,
) -> Result<Response, BoxError> {
    http.send(
        Method::POST,
        &stream_url(base_url, path),
        &[("Content-Type", "application/json")],
        body.to_string(),
    )
    .await
}

/// Closes a stream with an empty `Stream-Closed: true` POST and checks the answer.
pub async fn close_stream(http: &HttpClient, base_url: &str, path: &str) -> Result<(), BoxError> {
    let url = stream_url(base_url, path);
    let response = http
        .send(Method::POST, &url, &[(HEADER_CLOSED, "true")], "")
        .await?;
    if !response.status.is_success() || !response.flag(HEADER_CLOSED) {
        return Err(format!(
            "POST {url} with Stream-Closed: true and an empty body: expected 2xx with \
             Stream-Closed: true, got {} (Stream-Closed: {:?}) {}",
            response.status,
            response.header(HEADER_CLOSED),
            response.body_text()
        )
        .into());
    }
    Ok(())
}

/// Parses a JSON-mode read body: a JSON array of messages. An empty body counts as no messages.
pub fn parse_messages(body: &[u8]) -> Result<Vec<Value>, BoxError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    match serde_json::from_slice::<Value>(body)? {
        Value::Array(messages) => Ok(messages),
        other => Err(format!("expected a JSON array of messages, got {other}").into()),
    }
}

/// The whole log of a stream as read by catch-up.
#[derive(Debug)]
pub struct Log {
    pub messages: Vec<Value>,
    pub next_offset: String,
    pub closed: bool,
}

/// Reads a JSON stream from the start by catch-up GETs, following `Stream-Next-Offset` until
/// `Stream-Up-To-Date` (or `Stream-Closed`).
pub async fn read_all_json(http: &HttpClient, base_url: &str, path: &str) -> Result<Log, BoxError> {
    read_json_from(http, base_url, path, START).await
}

/// Like [`read_all_json`], from `offset` on.
pub async fn read_json_from(
    http: &HttpClient,
    base_url: &str,
    path: &str,
    offset: &str,
) -> Result<Log, BoxError> {
    let mut offset = offset.to_string();
    let mut messages = Vec::new();
    for _ in 0..100_000 {
        let url = format!(
            "{}?offset={}",
            stream_url(base_url, path),
            encode_query(&offset)
        );
        let response = http.send(Method::GET, &url, &[], "").await?;
        if response.status != StatusCode::OK {
            return Err(format!(
                "GET {url}: expected 200, got {} {}",
                response.status,
                response.body_text()
            )
            .into());
        }
        let next = response
            .header(HEADER_NEXT_OFFSET)
            .ok_or_else(|| format!("GET {url}: no {HEADER_NEXT_OFFSET} header"))?
            .to_string();
        let chunk = parse_messages(&response.body).map_err(|e| format!("GET {url}: {e}"))?;
        let closed = response.flag(HEADER_CLOSED);
        let up_to_date = response.flag(HEADER_UP_TO_DATE);
        if chunk.is_empty() && next == offset && !up_to_date && !closed {
            return Err(format!("GET {url}: no data, same offset, and not up to date").into());
        }
        messages.extend(chunk);
        offset = next;
        if closed || up_to_date {
            return Ok(Log {
                messages,
                next_offset: offset,
                closed,
            });
        }
    }
    Err(format!("reading {path} did not reach the tail in 100000 requests").into())
}
