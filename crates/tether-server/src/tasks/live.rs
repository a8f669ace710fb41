//! `live=sse` for task events: catch up from the log, then wait for the tail to move and
//! read again (G3: no second buffer). Frames carry `id: <offset>`; the stream ends after
//! the task's terminal event, or on server shutdown.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use tether_store::tail::Wake;
use tether_types::{Offset, TaskId};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{log, stopped};
use crate::AppState;

/// Events per read while catching up.
const BATCH: usize = 500;

type Tx = mpsc::Sender<Result<Bytes, Infallible>>;

pub fn sse(state: AppState, id: TaskId, after: Offset, timeline: bool) -> Response {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let _live = state.metrics.live_reader();
        if let Err(message) = pump(&state, &id, after, timeline, &tx).await {
            let frame = format!(
                "event: error\ndata: {}\n\n",
                json!({"error": {"code": "STREAM_FAILED", "message": message, "request_id": null}})
            );
            let _ = tx.send(Ok(Bytes::from(frame))).await;
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

/// Sends frames until the task ends, the client leaves (Ok) or reading fails (Err).
async fn pump(
    state: &AppState,
    id: &TaskId,
    after: Offset,
    timeline: bool,
    tx: &Tx,
) -> Result<(), String> {
    let store = state.store.as_ref();
    let max = state.config.max_read_bytes;
    let fail = |e: crate::error::ApiError| e.message;
    let (_, mut watch) = store
        .watch(&id.stream_path())
        .await
        .map_err(|e| e.to_string())?;
    let mut rewinds = if timeline {
        state
            .views
            .current(store, id, max)
            .await
            .map_err(fail)?
            .rewinds
    } else {
        Default::default()
    };
    let mut shutdown = state.shutdown.clone();
    let mut cursor = after;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let read = log::read(store, id, cursor, BATCH, None, max)
            .await
            .map_err(fail)?;
        if timeline {
            for e in &read.events {
                rewinds.note(e.offset, &e.event);
            }
        }
        for e in &read.events {
            if timeline && rewinds.supersedes(e.offset, &e.event) {
                continue;
            }
            let data = serde_json::to_string(e).map_err(|e| e.to_string())?;
            let frame = format!("id: {}\ndata: {data}\n\n", e.offset);
            if tx.send(Ok(Bytes::from(frame))).await.is_err() {
                return Ok(());
            }
        }
        cursor = read.next;
        if !read.at_end() {
            continue;
        }
        if read.closed {
            return Ok(());
        }
        tokio::select! {
            wake = watch.wait_past(cursor.0, state.config.sse_keepalive) => match wake {
                Wake::TimedOut(_) => {
                    if tx.send(Ok(Bytes::from_static(b": keep-alive\n\n"))).await.is_err() {
                        return Ok(());
                    }
                }
                Wake::Changed(tail) if tail.deleted => {
                    return Err("the task's stream is gone".into());
                }
                Wake::Changed(_) => {}
            },
            _ = stopped(&mut shutdown) => return Ok(()),
        }
    }
}
