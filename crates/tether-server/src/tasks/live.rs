//! `live=sse` for task events: catch up from the log, then wait for the tail to move and
//! read again (G3: no second buffer). Frames carry `id: <offset>`; the stream ends after
//! the task's terminal event, on server shutdown, or after `sse_max_duration`.
//!
//! The last bound is what ends a feed whose token was revoked: like a stream's SSE response,
//! a task's is recycled (default every 60 s) and the client's reconnect, which resumes after
//! its last event, is authenticated again and refused. A timer costs a watcher nothing while
//! it waits, works whichever node the revocation reached, and needs no token lookup per
//! connection per keep-alive, which is what re-checking the token periodically would cost.
//!
//! Like a stream's SSE response, the pump is driven by hyper or on a socket of its own (see
//! `crate::live`), so that a watcher waiting on a quiet task costs its pump and its socket,
//! not a whole HTTP connection. There is no channel between the log and the socket either way.

use std::io::Write;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use tether_core::Rewinds;
use tether_store::tail::Wake;
use tether_store::TailWatch;
use tether_types::{Offset, TaskId};
use tokio::sync::watch;
use tokio::time::Instant;

use super::log;
use crate::live::{self, Next, KEEPALIVE};
use crate::shutdown::stopped;
use crate::AppState;

/// Events per read while catching up.
const BATCH: usize = 500;

pub fn sse(state: AppState, id: TaskId, after: Offset, timeline: bool) -> Response {
    let deadline = Instant::now() + state.config.sse_max_duration;
    let takeover = state.config.sse_takeover;
    let pump = Pump {
        _live: state.metrics.live_reader(),
        shutdown: state.shutdown.clone(),
        state,
        id,
        cursor: after,
        timeline,
        follow: None,
        done: false,
        deadline,
    };
    let (body, takeover) = live::body(pump, takeover);
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    let mut response = (headers, body).into_response();
    if let Some(takeover) = takeover {
        response.extensions_mut().insert(takeover);
    }
    response
}

impl live::Pump for Pump {
    // A quiet task has nothing to send for a while: the head goes out at once.
    const HEAD_FIRST: bool = true;

    async fn next(&mut self) -> Next {
        match self.frames_or_error().await {
            Some(bytes) => Next::Send(bytes),
            None => Next::End,
        }
    }
}

struct Pump {
    /// Counted as a live reader until the client goes away.
    _live: crate::metrics::LiveReader,
    /// Turns true when the server starts shutting down.
    shutdown: watch::Receiver<bool>,
    state: AppState,
    id: TaskId,
    /// The offset of the last event sent (or the client's starting point).
    cursor: Offset,
    timeline: bool,
    /// Set up on the first read: the task stream's tail, and for a timeline the rewinds so
    /// far.
    follow: Option<(TailWatch, Rewinds)>,
    done: bool,
    /// When the response ends even if the task has not: the client reconnects, and its
    /// token is checked again.
    deadline: Instant,
}

impl Pump {
    /// The next frames for the client, a keep-alive, or `None` once the response is over. A
    /// failed read ends the response with an `error` event.
    async fn frames_or_error(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        match self.frames().await {
            Ok(Some(bytes)) => Some(bytes),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(message) => {
                self.done = true;
                let error = json!({"error": {
                    "code": tether_types::ErrorCode::StreamFailed,
                    "message": message,
                    "request_id": null,
                }});
                Some(Bytes::from(format!("event: error\ndata: {error}\n\n")))
            }
        }
    }

    /// Reads from the cursor until there are events to send, waiting for the tail to move
    /// when caught up; a keep-alive when it stays still for a while. `None` once the task's
    /// stream is closed and everything in it was sent, the server is stopping, or the
    /// response has lived its time.
    async fn frames(&mut self) -> Result<Option<Bytes>, String> {
        let store = self.state.store.as_ref();
        let max = self.state.config.max_read_bytes;
        let fail = |e: crate::error::ApiError| e.message;
        let (watch, rewinds) = match &mut self.follow {
            Some(follow) => follow,
            None => {
                let (_, watch) = store
                    .watch(&self.id.stream_path())
                    .await
                    .map_err(|e| e.to_string())?;
                let rewinds = if self.timeline {
                    let view = self.state.views.current(store, &self.id, max).await;
                    view.map_err(fail)?.rewinds
                } else {
                    Rewinds::default()
                };
                self.follow.insert((watch, rewinds))
            }
        };
        loop {
            if *self.shutdown.borrow() || Instant::now() >= self.deadline {
                return Ok(None);
            }
            let read = log::read(store, &self.id, self.cursor, BATCH, None, max)
                .await
                .map_err(fail)?;
            if self.timeline {
                for e in &read.events {
                    rewinds.note(e.offset, &e.event);
                }
            }
            let mut frames = Vec::new();
            for e in &read.events {
                if self.timeline && rewinds.supersedes(e.offset, &e.event) {
                    continue;
                }
                write!(frames, "id: {}\ndata: ", e.offset).map_err(|e| e.to_string())?;
                serde_json::to_writer(&mut frames, e).map_err(|e| e.to_string())?;
                frames.extend_from_slice(b"\n\n");
            }
            self.cursor = read.next;
            if !frames.is_empty() {
                return Ok(Some(Bytes::from(frames)));
            }
            if !read.at_end() {
                continue;
            }
            if read.closed {
                return Ok(None);
            }
            let keepalive = self.state.config.sse_keepalive;
            tokio::select! {
                wake = watch.wait_past(self.cursor.0, keepalive) => match wake {
                    Wake::TimedOut(_) => return Ok(Some(Bytes::from_static(KEEPALIVE))),
                    Wake::Changed(tail) if tail.deleted => {
                        return Err("the task's stream is gone".into());
                    }
                    Wake::Changed(_) => {}
                },
                () = stopped(&mut self.shutdown) => return Ok(None),
                () = tokio::time::sleep_until(self.deadline) => return Ok(None),
            }
        }
    }
}
