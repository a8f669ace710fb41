//! Following a task's events live, through failures.
//!
//! The subscription remembers the offset of the last event it delivered and every
//! (re)connection asks for events strictly after it, so a reconnect can neither repeat nor skip
//! an event (G2, G3). Only the server's log decides what comes next; there is no local buffer
//! that could disagree with it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use tether_types::event::kind;
use tether_types::{ErrorBody, EventAt, Offset, TaskId};

use crate::backoff::Backoff;
use crate::client::{check, CALL_TIMEOUT};
use crate::sse::{Frame, SseParser};
use crate::{Client, Error, EventsQuery};

/// The server sends a keep-alive at least every 15 s; this much silence means the connection
/// is dead even if no error reached us (a half-open TCP connection after a network change).
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// How the subscription waits for new events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Server-sent events, falling back to long-poll if the answer is not an event stream.
    Sse,
    /// Repeated long-polls only.
    LongPoll,
}

/// What a subscription yields besides the events themselves: notices a UI may show.
#[derive(Debug)]
pub enum Item {
    Event(EventAt),
    /// The connection failed; the subscription waits `delay`, then resumes after `after`.
    /// `attempt` counts the failures since the last successful connection: 1 starts an outage.
    Reconnecting {
        after: Option<Offset>,
        attempt: u32,
        delay: Duration,
        cause: Error,
    },
    /// The server answered the SSE request with another content type (a proxy that buffers,
    /// say); from now on the subscription long-polls, with the same cursor.
    FellBackToLongPoll {
        content_type: String,
    },
}

/// A live stream of a task's events that ends after the terminal event. An `Err` item ends it
/// too: an error that retrying cannot fix (404, 401, 403, an answer it cannot read).
pub struct Subscription {
    inner: BoxStream<'static, Result<Item, Error>>,
}

impl Stream for Subscription {
    type Item = Result<Item, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl Client {
    /// Follows the task's events after `after` (from the start when `None`) over SSE; with
    /// `timeline`, the server leaves out events that a rewind already superseded.
    pub fn subscribe(&self, id: &TaskId, after: Option<Offset>, timeline: bool) -> Subscription {
        self.subscribe_with(id, after, timeline, Transport::Sse)
    }

    pub fn subscribe_with(
        &self,
        id: &TaskId,
        after: Option<Offset>,
        timeline: bool,
        transport: Transport,
    ) -> Subscription {
        let follower = Follower {
            client: self.clone(),
            task: id.clone(),
            timeline,
            transport,
            last: after,
            body: None,
            pending: VecDeque::new(),
            backoff: Backoff::default(),
            wait: None,
            done: false,
        };
        let inner = futures::stream::unfold(follower, |mut follower| async move {
            let item = follower.next().await?;
            Some((item, follower))
        })
        .boxed();
        Subscription { inner }
    }
}

/// An open SSE response.
struct SseBody {
    chunks: BoxStream<'static, Result<Bytes, reqwest::Error>>,
    parser: SseParser,
    /// Frames or keep-alives received: a connection that got nothing before it ended counts
    /// as a failure, one that did was just closed by the server and is reopened at once.
    heard: bool,
}

/// What one step of reading produced.
enum Step {
    /// Events were queued, or nothing happened worth reporting: go on.
    Continue,
    Notice(Item),
    /// The task's stream is closed and everything in it was delivered.
    End,
}

struct Follower {
    client: Client,
    task: TaskId,
    timeline: bool,
    transport: Transport,
    /// The offset of the last event delivered: the cursor of every (re)connection.
    last: Option<Offset>,
    body: Option<SseBody>,
    /// Events read but not yet delivered (a long-poll page, a catch-up probe).
    pending: VecDeque<EventAt>,
    backoff: Backoff,
    /// The backoff to sleep before the next attempt.
    wait: Option<Duration>,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<Item, Error>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                if let Some(item) = self.deliver(event) {
                    return Some(Ok(item));
                }
                continue;
            }
            if let Some(delay) = self.wait.take() {
                tokio::time::sleep(delay).await;
            }
            let step = match self.transport {
                Transport::Sse => self.read_sse().await,
                Transport::LongPoll => self.long_poll().await,
            };
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::Notice(item)) => return Some(Ok(item)),
                Ok(Step::End) => {
                    self.done = true;
                    return None;
                }
                Err(cause) => {
                    self.body = None;
                    if !cause.is_retryable() {
                        self.done = true;
                        return Some(Err(cause));
                    }
                    let delay = self.backoff.next_delay();
                    self.wait = Some(delay);
                    return Some(Ok(Item::Reconnecting {
                        after: self.last,
                        attempt: self.backoff.attempts(),
                        delay,
                        cause,
                    }));
                }
            }
        }
    }

    /// Moves the cursor past `event` and hands it out, unless the cursor is already past it:
    /// a server that repeated itself must not make the reader see an event twice.
    fn deliver(&mut self, event: EventAt) -> Option<Item> {
        if self.last.is_some_and(|last| event.offset <= last) {
            return None;
        }
        self.last = Some(event.offset);
        if kind::is_terminal(&event.event.kind) {
            self.done = true;
            self.body = None;
            self.pending.clear();
        }
        Some(Item::Event(event))
    }

    fn query(&self) -> EventsQuery {
        EventsQuery {
            after: self.last,
            timeline: self.timeline,
            ..EventsQuery::default()
        }
    }

    async fn read_sse(&mut self) -> Result<Step, Error> {
        if self.body.is_none() {
            return self.open_sse().await;
        }
        loop {
            let Some(body) = self.body.as_mut() else {
                return Ok(Step::Continue);
            };
            match body.parser.next_frame() {
                Ok(Some(frame)) => {
                    body.heard = true;
                    return self.on_frame(frame);
                }
                Ok(None) => {}
                Err(too_long) => return Err(Error::Decode(too_long.to_string())),
            }
            if body.parser.take_comments() > 0 {
                body.heard = true;
            }
            match tokio::time::timeout(IDLE_TIMEOUT, body.chunks.next()).await {
                Err(_) => {
                    return Err(Error::Interrupted(format!(
                        "nothing received for {}s",
                        IDLE_TIMEOUT.as_secs()
                    )))
                }
                Ok(Some(Ok(chunk))) => body.parser.push(&chunk),
                Ok(Some(Err(error))) => return Err(Error::Network(error)),
                Ok(None) => {
                    let heard = body.heard;
                    self.body = None;
                    return self.after_end(heard).await;
                }
            }
        }
    }

    async fn open_sse(&mut self) -> Result<Step, Error> {
        let path = format!("/v1/tasks/{}/events", self.task);
        let mut query = self.query().pairs();
        query.push(("live", "sse".to_string()));
        let mut request = self
            .client
            .request(Method::GET, &path)
            .query(&query)
            .header(ACCEPT, "text/event-stream");
        if let Some(last) = self.last {
            request = request.header("Last-Event-ID", last.to_string());
        }
        // Only the head is bounded: the body of a live stream has no end to wait for.
        let response = match tokio::time::timeout(CALL_TIMEOUT, request.send()).await {
            Ok(sent) => check(sent?).await?,
            Err(_) => {
                return Err(Error::Interrupted(
                    "no answer to the SSE request within 30s".into(),
                ))
            }
        };
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !is_event_stream(&content_type) {
            self.transport = Transport::LongPoll;
            return Ok(Step::Notice(Item::FellBackToLongPoll { content_type }));
        }
        self.backoff.reset();
        self.body = Some(SseBody {
            chunks: response.bytes_stream().boxed(),
            parser: SseParser::new(),
            heard: false,
        });
        Ok(Step::Continue)
    }

    fn on_frame(&mut self, frame: Frame) -> Result<Step, Error> {
        match frame.event.as_deref() {
            None | Some("message") => {
                let event: EventAt = serde_json::from_str(&frame.data).map_err(|e| {
                    Error::Decode(format!("an SSE event that is not an event: {e}"))
                })?;
                self.pending.push_back(event);
                Ok(Step::Continue)
            }
            Some("error") => Err(stream_error(&frame.data)),
            // Frame types added later are not for this reader.
            Some(_) => Ok(Step::Continue),
        }
    }

    /// The server ended the stream before the terminal event. Either the task's stream is
    /// closed and we have it all (we were given a cursor at or past the end), or the server
    /// went away or recycled the connection: a catch-up read tells which, and its events
    /// are delivered before reconnecting.
    async fn after_end(&mut self, heard: bool) -> Result<Step, Error> {
        let query = EventsQuery {
            limit: Some(1000),
            ..self.query()
        };
        let page = self.client.events(&self.task, &query).await?;
        if page.data.is_empty() {
            if page.closed {
                return Ok(Step::End);
            }
            if !heard {
                return Err(Error::Interrupted(
                    "the server ended the live stream at once".into(),
                ));
            }
        }
        self.pending.extend(page.data);
        Ok(Step::Continue)
    }

    async fn long_poll(&mut self) -> Result<Step, Error> {
        let page = self
            .client
            .long_poll_events(&self.task, &self.query())
            .await?;
        self.backoff.reset();
        if page.data.is_empty() && page.closed {
            return Ok(Step::End);
        }
        self.pending.extend(page.data);
        Ok(Step::Continue)
    }
}

fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// The error an `event: error` frame carries.
fn stream_error(data: &str) -> Error {
    match serde_json::from_str::<ErrorBody>(data) {
        Ok(ErrorBody { error }) => Error::Stream {
            code: error.code,
            message: error.message,
            request_id: error.request_id,
        },
        Err(_) => Error::Stream {
            code: tether_types::ErrorCode::Unknown,
            message: data.chars().take(200).collect(),
            request_id: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_content_types_are_recognised_with_parameters() {
        assert!(is_event_stream("text/event-stream"));
        assert!(is_event_stream("Text/Event-Stream; charset=utf-8"));
        assert!(!is_event_stream("application/json"));
        assert!(!is_event_stream(""));
    }

    #[test]
    fn error_frames_become_stream_errors_retryable_by_code() {
        let error = stream_error(
            r#"{"error":{"code":"TASK_NOT_FOUND","message":"gone","request_id":null}}"#,
        );
        assert_eq!(error.code(), Some("TASK_NOT_FOUND"));
        assert!(!error.is_retryable());
        let error = stream_error("garbage");
        assert_eq!(error.code(), Some("UNKNOWN"));
        assert!(error.is_retryable());
    }
}
