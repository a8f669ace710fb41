//! `live=sse`: a data event for each chunk read from the log, then a control event.
//!
//! The pump follows G3 literally: read from the log at its position, send, then wait until the
//! committed tail passes that position. It has no buffer of its own, so a slow client simply
//! reads later from the log (or the store's recent-records cache); nothing is skipped or sent
//! twice, and `id:` on every data event lets a client resume with `Last-Event-ID`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use tether_store::tail::Wake;
use tether_store::{ReadChunk, StreamId, TailWatch};
use tether_types::headers::is_sse_text;
use tether_types::{Offset, ReadFrom};

use super::headers::{self as h, text};
use super::read::ReadQuery;
use super::response::ResponseHeaders;
use crate::cursor::next_cursor;
use crate::error::ApiError;
use crate::AppState;

pub async fn serve(
    state: AppState,
    path: String,
    q: ReadQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    // The query parameter wins over the header (G3).
    let from = match q.from {
        Some(from) => from,
        None => match text(headers, "last-event-id")? {
            Some(id) => id
                .trim()
                .parse::<ReadFrom>()
                .map_err(|e| ApiError::bad_request(format!("invalid Last-Event-ID: {e}")))?,
            None => return Err(ApiError::bad_request("live=sse needs an offset")),
        },
    };
    let (info, watch) = state.store.watch(&path).await?;
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
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let pump = Pump {
        state,
        path,
        id: info.id,
        pos: start,
        watch,
        base64,
        cursor: q.cursor,
        tx,
    };
    tokio::spawn(pump.run());

    let mut out = ResponseHeaders::new();
    out.content_type("text/event-stream");
    out.set("cache-control", "no-cache");
    if base64 {
        out.set(h::STREAM_SSE_DATA_ENCODING, "base64");
    }
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    Ok((StatusCode::OK, out.into_map(), body).into_response())
}

struct Pump {
    state: AppState,
    path: String,
    id: StreamId,
    pos: u64,
    watch: TailWatch,
    base64: bool,
    cursor: Option<String>,
    tx: mpsc::Sender<Bytes>,
}

/// Why the pump stopped; every reason just ends the response.
enum Stop {
    ClientGone,
    Finished,
}

impl Pump {
    async fn run(mut self) {
        let deadline = Instant::now() + self.state.config.sse_max_duration;
        let _ = self.pump(deadline).await;
    }

    async fn pump(&mut self, deadline: Instant) -> Result<(), Stop> {
        let max = self.state.config.max_read_bytes;
        let mut first = true;
        loop {
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
            if !chunk.is_empty() {
                self.send(data_event(&chunk, self.base64)).await?;
            }
            // A control event follows every data event, opens the stream, and announces the
            // close even when the close brought no data.
            if !chunk.is_empty() || first || chunk.at_closed_end() {
                let cursor = next_cursor(self.cursor.as_deref());
                let event = control_event(&chunk, &cursor);
                self.cursor = Some(cursor);
                self.send(event).await?;
            }
            first = false;
            self.pos = chunk.next.0;
            if chunk.at_closed_end() {
                return Err(Stop::Finished);
            }
            if !chunk.up_to_date {
                continue;
            }
            self.wait(deadline).await?;
        }
    }

    /// Waits until there is something past `pos`, sending keep-alives meanwhile.
    async fn wait(&mut self, deadline: Instant) -> Result<(), Stop> {
        let keepalive = self.state.config.sse_keepalive;
        let mut shutdown = self.state.shutdown.clone();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Stop::Finished);
            }
            let wait = keepalive.min(left).max(Duration::from_millis(1));
            let wake = tokio::select! {
                wake = self.watch.wait_past(self.pos, wait) => wake,
                _ = shutdown.wait_for(|stop| *stop) => return Err(Stop::Finished),
                _ = self.tx.closed() => return Err(Stop::ClientGone),
            };
            match wake {
                Wake::Changed(t) if t.deleted => return Err(Stop::Finished),
                Wake::Changed(_) => return Ok(()),
                Wake::TimedOut(_) => self.send(Bytes::from_static(b": keep-alive\n\n")).await?,
            }
        }
    }

    async fn send(&self, frame: Bytes) -> Result<(), Stop> {
        self.tx.send(frame).await.map_err(|_| Stop::ClientGone)
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
