//! Handing a claimed task to its worker, or back to the queue when the worker is gone.
//!
//! A claim commits before its answer is written. When the worker went away meanwhile (it
//! stopped while its long-poll was open, and hyper dropped the request on seeing the
//! connection close), nobody would run the task until its lease expired. So the committed
//! claim travels inside [`Unhanded`] until the answer's bytes are given to the connection;
//! dropped before that, it releases the task: back to SUBMITTED as the same attempt,
//! claimable at once. Once the bytes are handed over, a failure to write them is not seen
//! here, and the lease's expiry remains the backstop.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::Response;
use bytes::Bytes;
use chrono::Utc;
use hyper::body::{Frame, SizeHint};
use tether_types::{TaskId, TaskState};

use crate::AppState;

/// A committed claim whose answer has not reached the connection yet.
pub struct Unhanded {
    state: AppState,
    task: TaskId,
    lease: String,
    handed: bool,
}

impl Unhanded {
    pub fn new(state: &AppState, task: TaskId, lease: String) -> Unhanded {
        Unhanded {
            state: state.clone(),
            task,
            lease,
            handed: false,
        }
    }

    /// A JSON answer that marks the claim handed over once hyper takes its bytes.
    pub fn respond(self, json: Vec<u8>) -> Response {
        let body = HandOver {
            bytes: Some(Bytes::from(json)),
            claim: self,
        };
        let mut response = Response::new(axum::body::Body::new(body));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

impl Drop for Unhanded {
    fn drop(&mut self) {
        if self.handed {
            return;
        }
        // Outside a runtime (the process is ending) the lease's expiry hands it back.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (state, task, lease) = (
            self.state.clone(),
            self.task.clone(),
            std::mem::take(&mut self.lease),
        );
        runtime.spawn(async move {
            match state.work.release(&task, &lease, Utc::now()).await {
                Ok(true) => {
                    tracing::info!(%task, "the claim's answer did not reach its worker; released the task");
                    state.metrics.transition(TaskState::Submitted);
                    state.work_ready.notify_waiters();
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%task, %error, "releasing an undelivered claim failed; its lease will expire")
                }
            }
        });
    }
}

/// The claim's answer: one chunk, after which the claim counts as handed over.
struct HandOver {
    bytes: Option<Bytes>,
    claim: Unhanded,
}

impl hyper::body::Body for HandOver {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this.bytes.take() {
            Some(bytes) => {
                this.claim.handed = true;
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.as_ref().map_or(0, |b| b.len() as u64))
    }
}
