//! Live SSE bodies, for streams (`live=sse`) and for task events alike: one way to turn a pump
//! (whatever yields the next bytes for the client) into a response body, and one loop that
//! drives a pump on its own socket once the transport has taken the connection over.
//!
//! A pump is driven either by hyper, polling the body, or (when the connection can take the
//! socket over, see [`crate::takeover`], and the `sse_takeover` setting allows it) by
//! [`drive`], writing straight to the socket, so that an idle subscriber costs no HTTP
//! connection. Either way there is no task or channel between the log and the socket, and a
//! client that goes away simply drops the pump. With `sse_takeover` off the body is an
//! ordinary streaming body that hyper writes to the end: the same bytes on the wire, with the
//! memory of a whole HTTP connection per subscriber.

use std::convert::Infallible;
use std::future::Future;

use axum::body::Body;
use bytes::Bytes;
use tokio::time::Instant;

use crate::takeover::{takeover_body, RawResponse, SocketBody, Takeover};

/// An SSE comment that keeps an idle response from looking dead to proxies and clients.
pub const KEEPALIVE: &[u8] = b": keep-alive\n\n";

/// What a pump has for its client next.
pub enum Next {
    Send(Bytes),
    /// The response is over.
    End,
    /// Idle: give up the task until the pump has news or a keep-alive is due at the given
    /// time ([`Pump::park`]). Only a pump on its own socket is asked to park.
    Park(Instant),
}

/// The source of a live body's bytes.
pub trait Pump: Send + Sized + 'static {
    /// Whether the response head goes out before the first [`Pump::next`] resolves: a pump
    /// that may wait before its first bytes says so, since a client waits for the head
    /// before it waits for events. One that always has a first frame at once sends the head
    /// with it, in one write.
    const HEAD_FIRST: bool;

    /// The next bytes for the client, the end of the response, or time to park.
    fn next(&mut self) -> impl Future<Output = Next> + Send;

    /// Now driven on its own socket (parking allowed) rather than by hyper.
    fn on_socket(&mut self) {}

    /// Where a pump that answered [`Next::Park`] waits with its socket until it is handed
    /// back to [`drive`]. A pump that never parks keeps the default, which ends the response.
    fn park(self, out: RawResponse, keepalive_at: Instant) {
        let _ = keepalive_at;
        drop(out);
    }
}

/// A live response body driving `pump`, and, when `takeover` is on, the [`Takeover`] the
/// response carries so that the transport may hand the pump its socket.
pub fn body<P: Pump>(pump: P, takeover: bool) -> (Body, Option<Takeover>) {
    if takeover {
        let (body, takeover) = takeover_body(pump, chunk);
        return (body, Some(takeover));
    }
    let chunks = futures::stream::unfold(pump, |pump| async move {
        let (bytes, pump) = chunk(pump).await?;
        Some((Ok::<_, Infallible>(bytes), pump))
    });
    (Body::from_stream(chunks), None)
}

/// The next chunk for hyper, which never parks a pump.
async fn chunk<P: Pump>(mut pump: P) -> Option<(Bytes, P)> {
    match pump.next().await {
        Next::Send(bytes) => Some((bytes, pump)),
        Next::End | Next::Park(_) => None,
    }
}

impl<P: Pump> SocketBody for P {
    fn spawn(self: Box<Self>, out: RawResponse) {
        let mut pump = *self;
        pump.on_socket();
        let first: Option<&'static [u8]> = if P::HEAD_FIRST { Some(b"") } else { None };
        drive(pump, out, first);
    }
}

/// Runs `pump` on its own socket in a task of its own until the response ends, the client
/// hangs up, or the pump parks. `first` goes out before anything else: the head alone (empty)
/// or a keep-alive owed by a pump back from parking.
pub fn drive<P: Pump>(mut pump: P, mut out: RawResponse, first: Option<&'static [u8]>) {
    // An `async move` block rather than an `async fn`: the future keeps one copy of what it
    // captured, where a function's future would also keep its arguments' originals.
    tokio::spawn(async move {
        if let Some(first) = first {
            if out.send(first).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                next = pump.next() => next,
                () = out.hung_up() => return,
            };
            match next {
                Next::Send(bytes) => {
                    if out.send(&bytes).await.is_err() {
                        return;
                    }
                }
                Next::Park(keepalive_at) => {
                    pump.park(out, keepalive_at);
                    return;
                }
                Next::End => break,
            }
        }
        out.finish().await;
    });
}
