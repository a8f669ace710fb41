//! GET (catch-up and long-poll; SSE is in [`super::sse`]) and HEAD.

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use axum::http::Method;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use tether_store::tail::Wake;
use tether_store::{Access, ReadChunk};
use tether_types::{Offset, ReadFrom};

use super::response::ResponseHeaders;
use crate::cursor::next_cursor;
use crate::error::ApiError;
use crate::extract::text;
use crate::headers as h;
use crate::request_id::RequestId;
use crate::{query, AppState};

/// Cacheable: a chunk that does not reach the tail never changes.
const CACHE_CHUNK: &str = "public, max-age=60, stale-while-revalidate=300";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    No,
    LongPoll,
    Sse,
}

/// The parsed query of a read.
pub struct ReadQuery {
    pub from: Option<ReadFrom>,
    pub live: Live,
    pub cursor: Option<String>,
}

pub fn parse_query(raw: Option<&str>) -> Result<ReadQuery, ApiError> {
    let mut offset: Option<String> = None;
    let mut live = Live::No;
    let mut cursor = None;
    for (key, value) in query::pairs(raw) {
        match key.as_str() {
            "offset" => {
                if offset.is_some() {
                    return Err(ApiError::bad_request("offset given more than once"));
                }
                offset = Some(value);
            }
            "live" => {
                live = match value.as_str() {
                    "long-poll" => Live::LongPoll,
                    "sse" => Live::Sse,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "live must be long-poll or sse, not {other:?}"
                        )))
                    }
                }
            }
            "cursor" => cursor = Some(value),
            _ => {} // unknown parameters are ignored (protocol 11.1)
        }
    }
    let from = offset
        .map(|o| o.parse::<ReadFrom>())
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("invalid offset: {e}")))?;
    Ok(ReadQuery { from, live, cursor })
}

pub async fn get(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Path(path): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let access = match super::admit(&state, &headers, &path, &Method::GET).await {
        Ok(admitted) => admitted.access,
        Err(e) => return e.for_request(&rid).into_response(),
    };
    let result = match parse_query(raw.as_deref()) {
        Ok(q) => match q.live {
            Live::No => catch_up(&state, access, &path, &q, &headers).await,
            Live::LongPoll => long_poll(&state, access, &path, &q).await,
            Live::Sse => super::sse::serve(state, access, path, q, &headers).await,
        },
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| e.for_request(&rid).into_response())
}

async fn catch_up(
    state: &AppState,
    access: Access,
    path: &str,
    q: &ReadQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let from = q.from.unwrap_or(ReadFrom::Start);
    let chunk = state
        .store
        .read_as(access, path, from, state.config.max_read_bytes)
        .await?;
    if from == ReadFrom::Now {
        // The tail position itself: nothing to cache, nothing to validate.
        let mut out = chunk_headers(&chunk);
        out.set(CACHE_CONTROL, "no-store");
        return Ok((StatusCode::OK, out.into_map(), body(&chunk)).into_response());
    }
    let etag = etag(&chunk);
    let mut out = chunk_headers(&chunk);
    out.set(ETAG, &etag);
    out.set(
        CACHE_CONTROL,
        if chunk.up_to_date {
            "no-cache"
        } else {
            CACHE_CHUNK
        },
    );
    if if_none_match(headers, &etag)? {
        return Ok((StatusCode::NOT_MODIFIED, out.into_map()).into_response());
    }
    Ok((StatusCode::OK, out.into_map(), body(&chunk)).into_response())
}

async fn long_poll(
    state: &AppState,
    access: Access,
    path: &str,
    q: &ReadQuery,
) -> Result<Response, ApiError> {
    let Some(from) = q.from else {
        return Err(ApiError::bad_request("live=long-poll needs an offset"));
    };
    let (info, mut watch) = state.store.watch_as(access, path).await?;
    let _live = state.metrics.live_reader();
    let start = match from {
        ReadFrom::Start => 0,
        ReadFrom::Now => info.next.0,
        ReadFrom::At(o) => o.0,
    };
    if start > info.next.0 {
        return Err(ApiError::bad_request(
            "offset is past the end of the stream",
        ));
    }
    let tail = watch.current();
    if start >= tail.next && !tail.closed {
        let mut shutdown = state.shutdown.clone();
        let wake = tokio::select! {
            wake = watch.wait_past(start, state.config.long_poll_timeout) => wake,
            _ = shutdown.wait_for(|stop| *stop) => Wake::TimedOut(watch.current()),
        };
        match wake {
            Wake::Changed(t) if t.deleted => {
                return Err(ApiError::from(tether_store::LookupError::NotFound));
            }
            Wake::Changed(_) => {}
            Wake::TimedOut(t) => {
                let mut out = ResponseHeaders::new();
                out.next_offset(Offset(start))
                    .up_to_date(true)
                    .closed(t.closed);
                out.set(CACHE_CONTROL, "no-store");
                if !t.closed {
                    out.set(h::STREAM_CURSOR, &next_cursor(q.cursor.as_deref()));
                }
                return Ok((StatusCode::NO_CONTENT, out.into_map()).into_response());
            }
        }
    }
    let chunk = state
        .store
        .read_as(
            access,
            path,
            ReadFrom::At(Offset(start)),
            state.config.max_read_bytes,
        )
        .await?;
    let mut out = chunk_headers(&chunk);
    if !chunk.at_closed_end() {
        out.set(h::STREAM_CURSOR, &next_cursor(q.cursor.as_deref()));
    }
    if chunk.is_empty() {
        // Woken by the close: EOF.
        out.set(CACHE_CONTROL, "no-store");
        return Ok((StatusCode::NO_CONTENT, out.into_map()).into_response());
    }
    out.set(ETAG, &etag(&chunk));
    out.set(CACHE_CONTROL, CACHE_CHUNK);
    Ok((StatusCode::OK, out.into_map(), body(&chunk)).into_response())
}

pub async fn head(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let access = match super::admit(&state, &headers, &path, &Method::HEAD).await {
        Ok(admitted) => admitted.access,
        Err(e) => return e.for_request(&rid).into_response(),
    };
    match state.store.head_as(access, &path).await {
        Ok(info) => {
            let mut out = ResponseHeaders::new();
            out.content_type(&info.config.content_type)
                .next_offset(info.next)
                .closed(info.closed);
            if let Some(ttl) = info.config.ttl_secs {
                out.set(h::STREAM_TTL, &ttl.to_string());
            }
            if let Some(at) = info.config.expires_at {
                out.set(
                    h::STREAM_EXPIRES_AT,
                    &tether_types::event::format_timestamp(at),
                );
            }
            out.set(CACHE_CONTROL, "no-store");
            (StatusCode::OK, out.into_map()).into_response()
        }
        Err(e) => ApiError::from(e).for_request(&rid).into_response(),
    }
}

fn chunk_headers(chunk: &ReadChunk) -> ResponseHeaders {
    let mut out = ResponseHeaders::new();
    out.content_type(&chunk.info.config.content_type)
        .next_offset(chunk.next)
        .up_to_date(chunk.up_to_date)
        .closed(chunk.at_closed_end());
    out
}

/// The chunk as the protocol's body: a JSON array for JSON streams, raw bytes otherwise.
///
/// Large stored pieces go out as they are, without a copy; runs of small ones are merged
/// so a read of many tiny appends does not become one write per append.
pub fn body(chunk: &ReadChunk) -> Body {
    const MERGE_BELOW: usize = 16 << 10;
    let json = chunk.info.is_json();
    let mut parts: Vec<Bytes> = Vec::new();
    let mut small: Vec<u8> = Vec::new();
    if json {
        small.push(b'[');
    }
    for (i, piece) in chunk.records.iter().enumerate() {
        if json && i > 0 {
            small.push(b',');
        }
        if piece.len() < MERGE_BELOW {
            small.extend_from_slice(piece);
        } else {
            if !small.is_empty() {
                parts.push(Bytes::from(std::mem::take(&mut small)));
            }
            parts.push(piece.clone());
        }
    }
    if json {
        small.push(b']');
    }
    if !small.is_empty() {
        parts.push(Bytes::from(small));
    }
    match parts.len() {
        0 => Body::empty(),
        1 => Body::from(parts.pop().unwrap_or_default()),
        _ => Body::from_stream(futures::stream::iter(
            parts.into_iter().map(Ok::<_, std::convert::Infallible>),
        )),
    }
}

/// Changes with the range served and with closure, so a 304 never hides an EOF.
fn etag(chunk: &ReadChunk) -> String {
    let closed = if chunk.at_closed_end() { ":c" } else { "" };
    format!(
        "\"{}:{}:{}{closed}\"",
        chunk.info.id, chunk.from, chunk.next
    )
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> Result<bool, ApiError> {
    Ok(text(headers, &IF_NONE_MATCH)?.is_some_and(|v| {
        v.split(',').map(str::trim).any(|candidate| {
            candidate == etag || candidate == "*" || candidate.strip_prefix("W/") == Some(etag)
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repeated_or_empty_offsets_are_rejected() {
        assert!(parse_query(Some("offset=-1&offset=-1")).is_err());
        assert!(parse_query(Some("offset=")).is_err());
        assert!(parse_query(Some("offset=1,2")).is_err());
        assert!(parse_query(Some("live=forever")).is_err());
        let q = parse_query(Some("offset=now&live=sse&zzz=1")).unwrap();
        assert_eq!(q.from, Some(ReadFrom::Now));
        assert_eq!(q.live, Live::Sse);
    }

    proptest! {
        #[test]
        fn any_query_parses_or_fails_cleanly(q in "\\PC*") {
            let _ = parse_query(Some(&q));
        }
    }
}
