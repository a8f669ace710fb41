//! Durable Streams header names and small helpers to read request headers.

use axum::http::{HeaderMap, HeaderName};

use crate::error::ApiError;

pub const STREAM_NEXT_OFFSET: HeaderName = HeaderName::from_static("stream-next-offset");
pub const STREAM_UP_TO_DATE: HeaderName = HeaderName::from_static("stream-up-to-date");
pub const STREAM_CLOSED: HeaderName = HeaderName::from_static("stream-closed");
pub const STREAM_CURSOR: HeaderName = HeaderName::from_static("stream-cursor");
pub const STREAM_TTL: HeaderName = HeaderName::from_static("stream-ttl");
pub const STREAM_EXPIRES_AT: HeaderName = HeaderName::from_static("stream-expires-at");
pub const STREAM_SEQ: HeaderName = HeaderName::from_static("stream-seq");
pub const STREAM_FORKED_FROM: HeaderName = HeaderName::from_static("stream-forked-from");
pub const STREAM_FORK_OFFSET: HeaderName = HeaderName::from_static("stream-fork-offset");
pub const STREAM_FORK_SUB_OFFSET: HeaderName = HeaderName::from_static("stream-fork-sub-offset");
pub const STREAM_SSE_DATA_ENCODING: HeaderName =
    HeaderName::from_static("stream-sse-data-encoding");
pub const PRODUCER_ID: HeaderName = HeaderName::from_static("producer-id");
pub const PRODUCER_EPOCH: HeaderName = HeaderName::from_static("producer-epoch");
pub const PRODUCER_SEQ: HeaderName = HeaderName::from_static("producer-seq");
pub const PRODUCER_EXPECTED_SEQ: HeaderName = HeaderName::from_static("producer-expected-seq");
/// Standard in SSE, not in `http`'s list.
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
pub const PRODUCER_RECEIVED_SEQ: HeaderName = HeaderName::from_static("producer-received-seq");

/// A header as text; a value that is not visible ASCII is a client error, not something to
/// guess about.
pub fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            ApiError::bad_request(format!("header {} is not valid text", name.as_str()))
        }),
    }
}
