//! `live=sse`: a data event for each chunk read from the log, then a control event.
//!
//! The pump follows G3 literally: read from the log at its position, send, then wait until the
//! committed tail passes that position. It has no buffer of its own, so a slow client simply
//! reads later from the log (or the store's recent-records cache); nothing is skipped or sent
//! twice, and `id:` on every data event lets a client resume with `Last-Event-ID`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tokio::sync::watch;
use tokio::time::Instant;

use tether_store::{Access, ReadChunk, StreamId, Tail, TailWatch};
use tether_types::headers::is_sse_text;
use tether_types::{Offset, ReadFrom};

use super::frames::{Frame, FrameSlot};
use super::read::ReadQuery;
use super::response::ResponseHeaders;
use crate::cursor::{cursor_after, cursor_since};
use crate::error::ApiError;
use crate::extract::text;
use crate::headers::{self as h, LAST_EVENT_ID};
use crate::live::{self, Next, KEEPALIVE};
use crate::takeover::RawResponse;
use crate::AppState;

pub async fn serve(
    state: AppState,
    access: Access,
    path: String,
    q: ReadQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    // The query parameter wins over the header (G3).
    let from = match q.from {
        Some(from) => from,
        None => match text(headers, &LAST_EVENT_ID)? {
            Some(id) => id
                .trim()
                .parse::<ReadFrom>()
                .map_err(|e| ApiError::bad_request(format!("invalid Last-Event-ID: {e}")))?,
            None => return Err(ApiError::bad_request("live=sse needs an offset")),
        },
    };
    // Checked once: the pump reads on only while the path names this stream (by id), whose
    // owner never changes.
    let (info, watch) = state.store.watch_as(access, &path).await?;
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
    let base64 = !is_sse_text(&info.config.content_type);
    let takeover = state.config.sse_takeover;
    let pump = Pump {
        _live: state.metrics.live_reader(),
        shutdown: state.shutdown.clone(),
        frames: state.frames.slot(info.id),
        deadline: Instant::now() + state.config.sse_max_duration,
        state,
        path,
        id: info.id,
        pos: start,
        watch,
        base64,
        cursor: cursor_after(q.cursor.as_deref()),
        first: true,
        waiting: false,
        done: false,
        parks: false,
    };
    // Driven by hyper or on its own socket: see `crate::live`.
    let (body, takeover) = live::body(pump, takeover);

    let mut out = ResponseHeaders::new();
    out.content_type("text/event-stream");
    out.set(CACHE_CONTROL, "no-cache");
    if base64 {
        out.set(h::STREAM_SSE_DATA_ENCODING, "base64");
    }
    let mut response = (StatusCode::OK, out.into_map(), body).into_response();
    if let Some(takeover) = takeover {
        response.extensions_mut().insert(takeover);
    }
    Ok(response)
}

impl live::Pump for Pump {
    // The first frame is always at hand (it is sent even without data): the head goes with it.
    const HEAD_FIRST: bool = false;

    fn next(&mut self) -> impl Future<Output = Next> + Send {
        self.next_event()
    }

    fn on_socket(&mut self) {
        self.parks = true;
    }

    fn park(self, out: RawResponse, keepalive_at: Instant) {
        // An error: the connection is gone, and the subscriber with it.
        if let Ok(out) = out.park() {
            let parking = self.state.parking.clone();
            parking.park(self, out, keepalive_at);
        }
    }
}

pub(super) struct Pump {
    /// Counted as a live subscriber until the client goes away.
    _live: crate::metrics::LiveReader,
    /// Turns true when the server starts shutting down.
    shutdown: watch::Receiver<bool>,
    state: AppState,
    frames: Arc<FrameSlot>,
    path: String,
    id: StreamId,
    pos: u64,
    watch: TailWatch,
    base64: bool,
    /// The cursor of this connection's first control event.
    cursor: i64,
    deadline: Instant,
    /// Nothing sent yet: the first frame is sent even without data.
    first: bool,
    /// Caught up: wait for the tail to move before reading again.
    waiting: bool,
    done: bool,
    /// Driven on its own socket, so it may park when idle.
    parks: bool,
}

/// Why the pump stopped; every reason just ends the response.
enum Stop {
    Finished,
}

/// What a wait for the tail ended with.
enum Waited {
    Moved,
    KeepAlive,
    /// Nothing happened for `sse_park_after`; a keep-alive is due at the given time.
    Idle(Instant),
}

impl Pump {
    pub(super) fn stream(&self) -> StreamId {
        self.id
    }

    pub(super) fn position(&self) -> u64 {
        self.pos
    }

    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    pub(super) fn tail_watch(&self) -> TailWatch {
        self.watch.clone()
    }

    pub(super) fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    pub(super) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.state.metrics
    }

    /// The next bytes for the client, the end of the response, or time to park.
    async fn next_event(&mut self) -> Next {
        while !self.done {
            if self.waiting {
                match self.wait().await {
                    Ok(Waited::Moved) => self.waiting = false,
                    Ok(Waited::KeepAlive) => return Next::Send(Bytes::from_static(KEEPALIVE)),
                    Ok(Waited::Idle(keepalive_at)) => return Next::Park(keepalive_at),
                    Err(Stop::Finished) => return Next::End,
                }
            }
            let frame = match self.next_frame(self.first).await {
                Ok(Some(frame)) => frame,
                // Nothing new (a spurious wake): wait again.
                Ok(None) => {
                    self.waiting = true;
                    continue;
                }
                Err(Stop::Finished) => return Next::End,
            };
            self.first = false;
            self.pos = frame.next;
            self.done = frame.closed_end;
            self.waiting = frame.up_to_date;
            if !frame.bytes.is_empty() {
                return Next::Send(frame.bytes);
            }
        }
        Next::End
    }

    /// The frame for what follows `pos`: shared if another reader just rendered it, else
    /// read from the log and rendered. `None` when there is nothing to send.
    async fn next_frame(&mut self, first: bool) -> Result<Option<Frame>, Stop> {
        let cursor = cursor_since(self.cursor);
        let tail = self.watch.current();
        if let Some(frame) = self.frames.get(self.pos, tail, cursor) {
            // A control-only frame carries news only to a reader that just connected, or
            // when it announces the close.
            let news = first || frame.closed_end || frame.next != self.pos;
            return Ok(news.then_some(frame));
        }
        let max = self.state.config.max_read_bytes;
        let chunk = match self
            .state
            .store
            .read(&self.path, ReadFrom::At(Offset(self.pos)), max)
            .await
        {
            Ok(chunk) if chunk.info.id == self.id => chunk,
            // Deleted, expired or re-created under the same path: this stream is over.
            _ => return Err(Stop::Finished),
        };
        // A control event follows every data event, opens the stream, and announces the
        // close even when the close brought no data. Both go out as one write.
        if chunk.is_empty() && !first && !chunk.at_closed_end() {
            return Ok(None);
        }
        let control = control_event(&chunk, &cursor.to_string());
        let bytes = if chunk.is_empty() {
            control
        } else {
            let data = data_event(&chunk, self.base64);
            let mut both = Vec::with_capacity(data.len() + control.len());
            both.extend_from_slice(&data);
            both.extend_from_slice(&control);
            Bytes::from(both)
        };
        let frame = Frame {
            bytes,
            next: chunk.next.0,
            up_to_date: chunk.up_to_date,
            closed_end: chunk.at_closed_end(),
        };
        let seen = Tail {
            next: chunk.info.next.0,
            closed: chunk.info.closed,
            deleted: false,
        };
        self.frames.put(self.pos, seen, cursor, frame.clone());
        Ok(Some(frame))
    }

    /// Waits until there is something past `pos`, or it is time for a keep-alive. An idle
    /// subscriber spends its life here, so the wait holds no more than it must: one wait on
    /// each channel and one timer.
    async fn wait(&mut self) -> Result<Waited, Stop> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || *self.shutdown.borrow() {
            return Err(Stop::Finished);
        }
        let keepalive = self.state.config.sse_keepalive;
        let mut wait = keepalive.min(left);
        // Parking first if that comes first; the keep-alive stays due when it was.
        let park_after = self.state.config.sse_park_after;
        let parking = self.parks && park_after < wait;
        if parking {
            wait = park_after;
        }
        let wait = wait.max(Duration::from_millis(1));
        let keepalive_at = Instant::now() + keepalive;
        let tail = tokio::select! {
            tail = self.watch.past(self.pos) => tail,
            () = tokio::time::sleep(wait) => {
                return Ok(if parking { Waited::Idle(keepalive_at) } else { Waited::KeepAlive });
            }
            // Changed (it only ever turns true) or gone: the server is stopping.
            _ = self.shutdown.changed() => return Err(Stop::Finished),
        };
        if tail.deleted {
            Err(Stop::Finished)
        } else {
            Ok(Waited::Moved)
        }
    }
}

/// `event: data` with the chunk's payload, one `data:` line per line of it. Any line break
/// (CR, LF or CRLF) starts a new `data:` line, so payload text can never end the event or
/// inject one.
pub fn data_event(chunk: &ReadChunk, base64: bool) -> Bytes {
    let mut payload = Vec::new();
    if chunk.info.is_json() {
        tether_types::json::frame_array(chunk.records.iter().map(|r| &r[..]), &mut payload);
    } else {
        for r in &chunk.records {
            payload.extend_from_slice(r);
        }
    }
    if base64 {
        payload = base64::engine::general_purpose::STANDARD
            .encode(&payload)
            .into_bytes();
    }
    let mut out = Vec::with_capacity(payload.len() + 64);
    out.extend_from_slice(b"event: data\n");
    for line in split_lines(&payload) {
        // `data:` takes one optional space before the value; add it only when the line itself
        // starts with a space, so that space survives.
        out.extend_from_slice(if line.starts_with(b" ") {
            b"data: "
        } else {
            b"data:"
        });
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"id:");
    out.extend_from_slice(chunk.next.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn split_lines(payload: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < payload.len() {
        match payload[i] {
            b'\n' => {
                lines.push(&payload[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                lines.push(&payload[start..i]);
                i += if payload.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    lines.push(&payload[start..]);
    lines
}

/// `event: control` with where to continue and whether the reader is caught up or done.
pub fn control_event(chunk: &ReadChunk, cursor: &str) -> Bytes {
    let mut control = serde_json::Map::new();
    control.insert("streamNextOffset".into(), chunk.next.to_string().into());
    if chunk.at_closed_end() {
        control.insert("streamClosed".into(), true.into());
        control.insert("upToDate".into(), true.into());
    } else {
        control.insert("streamCursor".into(), cursor.into());
        if chunk.up_to_date {
            control.insert("upToDate".into(), true.into());
        }
    }
    let json = serde_json::Value::Object(control).to_string();
    Bytes::from(format!(
        "event: control\ndata:{json}\nid:{}\n\n",
        chunk.next
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_kind_of_line_break_starts_a_new_data_line() {
        let lines = split_lines(b"a\r\nb\rc\nd");
        assert_eq!(lines, vec![&b"a"[..], b"b", b"c", b"d"]);
        assert_eq!(split_lines(b""), vec![&b""[..]]);
        assert_eq!(split_lines(b"x\n"), vec![&b"x"[..], b""]);
    }

    proptest! {
        #[test]
        fn no_data_line_contains_a_line_break(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            for line in split_lines(&payload) {
                prop_assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
            }
        }
    }
}
