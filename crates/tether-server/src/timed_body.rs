//! A request body with a deadline, so that a client that stops sending (or sends a chunked
//! body that never ends) cannot hold a request, and its connection, forever.
//!
//! The deadline starts the first time the body has to wait for the network: most bodies
//! arrive with their head and never wait, and for them the wrapper costs no timer and no
//! allocation (this is the append path).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

/// What a request body that did not arrive in time fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// A request body as the connection hands it to the router and the append path.
pub struct TimedBody {
    inner: Incoming,
    limit: Duration,
    /// Set the first time the body waits.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    pub fn new(inner: Incoming, limit: Duration) -> Self {
        TimedBody {
            inner,
            limit,
            deadline: None,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => return Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {}
        }
        let limit = this.limit;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
