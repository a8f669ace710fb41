//! `GET` and `POST /v1/tasks/{id}/events`: pages, long-poll, SSE, and producer batches.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;
use serde_json::value::RawValue;
use tether_store::{EventAppend, StreamStore};
use tether_types::event::{format_timestamp, Appended};
use tether_types::{EventPage, Offset, Role, TaskId};

use super::{live, log};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{limit_param, parse_json};
use crate::headers as h;
use crate::shared::{accept_batch, producer_stamp, visible_task};
use crate::shutdown::stopped;
use crate::AppState;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Live {
    Sse,
    LongPoll,
}

#[derive(Debug)]
struct EventsQuery {
    after: Option<Offset>,
    before: Option<Offset>,
    limit: usize,
    desc: bool,
    timeline: bool,
    live: Option<Live>,
}

fn offset_param(q: &HashMap<String, String>, name: &str) -> Result<Option<Offset>, ApiError> {
    q.get(name)
        .map(|v| {
            v.parse::<Offset>()
                .map_err(|e| ApiError::bad_request(format!("{name}={v:?} is not an offset: {e}")))
        })
        .transpose()
}

fn bool_param(q: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}

fn parse_query(q: &HashMap<String, String>) -> Result<EventsQuery, ApiError> {
    const KNOWN: [&str; 6] = ["after", "before", "limit", "desc", "view", "live"];
    if let Some(unknown) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter {unknown:?}; use {}",
            KNOWN.join(", ")
        )));
    }
    let limit = limit_param(q, DEFAULT_LIMIT, MAX_LIMIT)?;
    let timeline = match q.get("view").map(String::as_str) {
        None | Some("raw") => false,
        Some("timeline") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "view must be raw or timeline, not {other:?}"
            )))
        }
    };
    let live = match q.get("live").map(String::as_str) {
        None => None,
        Some("sse") => Some(Live::Sse),
        Some("long-poll") => Some(Live::LongPoll),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "live must be sse or long-poll, not {other:?}"
            )))
        }
    };
    let query = EventsQuery {
        after: offset_param(q, "after")?,
        before: offset_param(q, "before")?,
        limit,
        desc: bool_param(q, "desc")?,
        timeline,
        live,
    };
    if query.desc && query.after.is_some() {
        return Err(ApiError::bad_request(
            "desc=true reads backwards from the end: use before=, not after=",
        ));
    }
    if !query.desc && query.before.is_some() {
        return Err(ApiError::bad_request("before= needs desc=true"));
    }
    if query.desc && query.live.is_some() {
        return Err(ApiError::bad_request(
            "desc=true cannot be combined with live",
        ));
    }
    Ok(query)
}

#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/events",
    tag = "events",
    operation_id = "read_events",
    summary = "Read a task's events: a page, a long-poll, or a live SSE stream",
    params(
        ("id" = tether_types::TaskId, Path, description = "The task's id"),
        ("after" = Option<tether_types::Offset>, Query,
            description = "Events after this offset (default: from the start)"),
        ("before" = Option<tether_types::Offset>, Query,
            description = "With `desc=true`: events before this offset, for the next page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size; default 100"),
        ("desc" = Option<bool>, Query, description = "Newest first; not together with `after` or `live`"),
        ("view" = Option<String>, Query, pattern = "^(raw|timeline)$",
            description = "`timeline` leaves out events superseded by a later `stream_rewind`; default `raw`"),
        ("live" = Option<String>, Query, pattern = "^(sse|long-poll)$",
            description = "`sse`: a `text/event-stream` that ends after the terminal event; \
                `long-poll`: a page as soon as an event exists after `after`, or empty at the timeout"),
        ("Last-Event-ID" = Option<tether_types::Offset>, Header,
            description = "With `live=sse`: resume after this offset (an `after` parameter wins)"),
    ),
    responses(
        (status = 200, description = "A page of events (`closed` once the task has ended and the page \
            reaches the end of its stream), or with `live=sse` one frame per event: \
            `id: <offset>`, `data: <EventAt>`, and `: keep-alive` comments at least every 15 s",
            content(
                (tether_types::EventPage = "application/json"),
                (String = "text/event-stream"),
            )),
        (status = 400, description = "`VALIDATION_ERROR`: a malformed offset or parameter, or one past the end",
            body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 404, description = "`TASK_NOT_FOUND`", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(raw): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let task = visible_task(&state, &caller, &id).await?;
    let q = parse_query(&raw)?;
    match q.live {
        Some(Live::Sse) => {
            // The query parameter wins over the header (G3).
            let after = match q.after {
                Some(after) => after,
                None => match headers.get(h::LAST_EVENT_ID) {
                    None => Offset(0),
                    Some(v) => v
                        .to_str()
                        .ok()
                        .and_then(|s| s.trim().parse::<Offset>().ok())
                        .ok_or_else(|| ApiError::bad_request("Last-Event-ID is not an offset"))?,
                },
            };
            // Fail early on a cursor past the end, while a status code can still say so.
            state
                .store
                .read(&task.id.stream_path(), tether_types::ReadFrom::At(after), 1)
                .await
                .map_err(|e| match e {
                    tether_store::LookupError::OffsetBeyondTail => ApiError::bad_request(format!(
                        "offset {after} is past the end of this task's events"
                    )),
                    other => ApiError::from(other),
                })?;
            Ok(live::sse(state, task.id, after, q.timeline))
        }
        Some(Live::LongPoll) => {
            Ok(Json(long_poll(&state, &task.id, &q, &headers).await?).into_response())
        }
        None if q.desc => Ok(Json(desc_page(&state, &task.id, &q).await?).into_response()),
        None => Ok(Json(page(&state, &task.id, &q).await?).into_response()),
    }
}

async fn page(state: &AppState, id: &TaskId, q: &EventsQuery) -> Result<EventPage, ApiError> {
    let store: &dyn StreamStore = state.store.as_ref();
    let max = state.config.max_read_bytes;
    let after = q.after.unwrap_or(Offset(0));
    let read = log::read(store, id, after, q.limit, None, max).await?;
    let mut data = read.events;
    if q.timeline {
        let view = state.views.current(store, id, max).await?;
        data.retain(|e| !view.rewinds.supersedes(e.offset, &e.event));
    }
    Ok(EventPage {
        data,
        next_after: read.next,
        has_more: read.next < read.tail,
        closed: read.closed && read.next >= read.tail,
    })
}

async fn desc_page(state: &AppState, id: &TaskId, q: &EventsQuery) -> Result<EventPage, ApiError> {
    let store: &dyn StreamStore = state.store.as_ref();
    let max = state.config.max_read_bytes;
    let info = store.head(&id.stream_path()).await?;
    let before = q.before.unwrap_or(info.next).min(info.next);
    let from = before.0.saturating_sub(q.limit as u64);
    let read = log::read(store, id, Offset(from), q.limit, Some(before), max).await?;
    let mut data = read.events;
    if q.timeline {
        let view = state.views.current(store, id, max).await?;
        data.retain(|e| !view.rewinds.supersedes(e.offset, &e.event));
    }
    data.reverse();
    Ok(EventPage {
        data,
        next_after: Offset(from),
        has_more: from > 0,
        closed: info.closed,
    })
}

/// A page as soon as there is something after the cursor, or an empty one at the timeout. A
/// poll that waited authenticates again before it answers: a token revoked while it waited
/// gets 401, not the events that came meanwhile. One token lookup per wait, off the append
/// path.
async fn long_poll(
    state: &AppState,
    id: &TaskId,
    q: &EventsQuery,
    headers: &HeaderMap,
) -> Result<EventPage, ApiError> {
    let after = q.after.unwrap_or(Offset(0));
    let first = page(state, id, q).await?;
    if first.next_after > after || first.closed {
        return Ok(first);
    }
    let (_, mut watch) = state.store.watch(&id.stream_path()).await?;
    let _live = state.metrics.live_reader();
    let mut shutdown = state.shutdown.clone();
    tokio::select! {
        _ = watch.wait_past(after.0, state.config.long_poll_timeout) => {}
        _ = stopped(&mut shutdown) => {}
    }
    crate::auth::authenticate(state, &axum::http::Method::GET, headers).await?;
    page(state, id, q).await
}

/// A batch of events as it arrives: each event kept as its raw JSON, so its size is its
/// length as sent and it is parsed once, into the envelope.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    events: Vec<Box<RawValue>>,
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/events",
    tag = "events",
    operation_id = "append_events",
    summary = "Append events to a task (worker or admin)",
    request_body = tether_types::event::EventBatch,
    params(
        ("id" = tether_types::TaskId, Path, description = "The task's id"),
        ("Producer-Id" = Option<String>, Header,
            description = "An idempotent producer's id, as in the Durable Streams protocol"),
        ("Producer-Epoch" = Option<u64>, Header, description = "The producer's epoch"),
        ("Producer-Seq" = Option<u64>, Header,
            description = "The batch's sequence number: a retried batch is stored once"),
    ),
    responses(
        (status = 200, description = "Stored (or, for a repeated producer batch, already stored)",
            body = tether_types::event::Appended),
        (status = 400, description = "`VALIDATION_ERROR`: a bad event, or a type the server reserves",
            body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a user token; `STALE_PRODUCER_EPOCH`",
            body = tether_types::ErrorBody),
        (status = 404, description = "`TASK_NOT_FOUND`", body = tether_types::ErrorBody),
        (status = 409, description = "`TASK_ALREADY_TERMINAL`; `PRODUCER_SEQ_GAP`",
            body = tether_types::ErrorBody),
        (status = 413, description = "`EVENT_TOO_LARGE`: an event over 1 MiB", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn append(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let task = visible_task(&state, &caller, &id).await?;
    caller.require(&[Role::Admin, Role::Worker])?;
    let batch: RawBatch = parse_json(&body)?;
    let events = accept_batch(&batch.events, &format_timestamp(Utc::now()))?
        .iter()
        .map(|e| serde_json::to_vec(e).map(Bytes::from))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::internal("an event could not be encoded", e))?;
    let producer = producer_stamp(&headers)?;
    let count = events.len();
    let out = state
        .control
        .append_events(&task.id, EventAppend { events, producer })
        .await?;
    if out.appended {
        state.metrics.task_events(count);
    }
    Ok(Json(Appended {
        next_after: out.next,
        appended: out.appended,
    })
    .into_response())
}
