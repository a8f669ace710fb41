//! Accepting connections and serving HTTP/1.1 on them, with a way out of hyper for long idle
//! responses.
//!
//! An idle live SSE subscriber held by hyper cost a whole HTTP connection: hyper's read buffer
//! and header write buffer (kept for the connection's life), its connection task, and the copy
//! of the route table `axum::serve` makes for every connection; about 37 KB of RSS each, 370 MB
//! for ten thousand. This loop hands each connection a reference to the one router instead,
//! and a response may carry a [`Takeover`]: when the connection allows it, the response head is
//! written by hand, hyper's connection is taken apart (its buffers and futures freed) and the
//! body writes itself straight to the socket, chunked, from a task sized for it alone. Such a
//! response says `connection: close`: nothing after it needs hyper again.
//!
//! Taking over is safe only when hyper has nothing buffered for the socket. The takeover is
//! decided while hyper polls the handler's future for a new request; hyper reads a request only
//! after the previous response was fully buffered and then flushed, and it flushes until its
//! buffer is empty or the socket refuses more. So a connection whose writes never had to wait
//! has nothing buffered at that point; one whose writes ever waited is served by hyper to the
//! end. An HTTP/1.0 request is served by hyper too (no chunked encoding there).
//!
//! This is the transport: it knows HTTP/1.1, sockets and the [`Takeover`] extension, not the
//! routes. Besides the router it is given a [`Direct`] path, which may answer some requests
//! itself before the router sees them; which requests, and how, is the app's business
//! (`crate::router` registers the stream append path).

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use axum::extract::Request;
use axum::http::{header, Response, Version};
use axum::routing::future::RouteFuture;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::Service as _;

use crate::shutdown::stopped;
use crate::takeover::{RawResponse, SocketBody, Takeover};
use crate::timed_body::TimedBody;

/// A path that answers some requests straight from the connection, before the router and
/// instead of it (so none of the router's layers run for them).
pub trait Direct: Clone + Send + Sync + 'static {
    /// What [`Direct::takes`] learned of a request it takes, for [`Direct::answer`].
    type Taken;

    /// `Some` when this path answers `req`; `None` leaves it to the router.
    fn takes(&self, req: &Request<TimedBody>) -> Option<Self::Taken>;

    /// The answer to a request [`Direct::takes`] took.
    fn answer(&self, taken: Self::Taken, req: Request<TimedBody>) -> DirectAnswer;
}

/// A [`Direct`] answer being worked out.
pub type DirectAnswer = Pin<Box<dyn Future<Output = axum::response::Response> + Send>>;

/// What the transport needs of the server's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served by hyper at once.
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
}

/// Accepts connections until `stop` turns true, then waits for every connection to end: hyper
/// finishes the response in flight and closes; taken-over bodies end on `stop` themselves.
///
/// At most `max_connections` connections are served by hyper at once: past that the loop
/// stops accepting until one ends (a half-sent request ends at the header read timeout), and
/// new clients wait in the kernel's listen backlog. A response that takes its socket over
/// gives its place back (see [`crate::config::ServerConfig::max_connections`]).
pub async fn accept_until<D: Direct>(
    listener: TcpListener,
    router: Router,
    direct: D,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    // Every connection task holds a receiver; the sender sees them all gone.
    let (open_tx, open_rx) = watch::channel(());
    let cap = limits.max_connections.min(Semaphore::MAX_PERMITS);
    let places = Arc::new(Semaphore::new(cap));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut full = Throttled::default();
    let mut failing = Throttled::default();
    loop {
        let place = match places.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                if let Some(times) = full.due() {
                    tracing::warn!(
                        limit = limits.max_connections,
                        times,
                        "connection limit reached: new connections wait until one closes"
                    );
                }
                tokio::select! {
                    place = places.clone().acquire_owned() => match place {
                        Ok(place) => place,
                        Err(_) => break,
                    },
                    () = stopped(&mut stop) => break,
                }
            }
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(e, &mut failing).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let service = Service {
            router: router.clone(),
            direct: direct.clone(),
            body_read_timeout: limits.body_read_timeout,
            shared: Arc::default(),
        };
        let connection = Connection {
            http: http.clone(),
            stop: stop.clone(),
            open: open_rx.clone(),
            _place: place,
        };
        tokio::spawn(serve(tcp, service, connection));
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
}

/// How long accepting pauses after a failure such as running out of file descriptors: long
/// enough not to spin on an error that persists, short enough that a freed descriptor is
/// soon used.
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);

async fn accept_failed(e: io::Error, failing: &mut Throttled) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    // Most likely out of file descriptors: give connections a moment to close.
    if let Some(times) = failing.due() {
        tracing::error!(error = %e, times, "accept failed; pausing before accepting again");
    }
    tokio::time::sleep(ACCEPT_PAUSE).await;
}

/// A condition logged at most once per [`Throttled::PERIOD`], with how often it happened
/// since: a server out of file descriptors would otherwise log several times a second.
#[derive(Default)]
struct Throttled {
    last: Option<std::time::Instant>,
    times: u64,
}

impl Throttled {
    const PERIOD: Duration = Duration::from_secs(60);

    /// Counts one occurrence; `Some(occurrences since the last log)` when it is time to log.
    fn due(&mut self) -> Option<u64> {
        self.times += 1;
        if self.last.is_some_and(|last| last.elapsed() < Self::PERIOD) {
            return None;
        }
        self.last = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.times))
    }
}

/// What a connection's task holds besides the socket and the service.
struct Connection {
    http: http1::Builder,
    stop: watch::Receiver<bool>,
    open: watch::Receiver<()>,
    /// Its place under the connection limit, given back when hyper lets go of the socket.
    _place: OwnedSemaphorePermit,
}

/// One connection: hyper until it ends, or until a response takes the socket over.
async fn serve<D: Direct>(tcp: TcpStream, service: Service<D>, connection: Connection) {
    let Connection {
        http,
        mut stop,
        open,
        _place: place,
    } = connection;
    let shared = service.shared.clone();
    let io = Socket {
        io: TokioIo::new(tcp),
        shared: shared.clone(),
    };
    // Behind a pointer: hyper's connection is large, and this task's future stays small.
    let connection = http.serve_connection(io, service);
    // Not needed past this point: keep it out of the task's state.
    drop(http);
    let mut http = Box::pin(connection);
    let mut stopping = false;
    let offer = loop {
        tokio::select! {
            offer = poll_fn(|cx| match http.as_mut().poll(cx) {
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => match shared.offer.lock().take() {
                    Some(offer) => Poll::Ready(Some(offer)),
                    None => Poll::Pending,
                },
            }) => break offer,
            () = stopped(&mut stop), if !stopping => {
                stopping = true;
                http.as_mut().graceful_shutdown();
            }
        }
    };
    let Some(Offer { head, body }) = offer else {
        return;
    };
    let tcp = Pin::into_inner(http).into_parts().io.io.into_inner();
    drop(place);
    body.spawn(RawResponse::new(tcp, head, open));
}

/// What the connection's service and socket tell its task.
#[derive(Default)]
struct Shared {
    /// A write ever had to wait for the socket: hyper may have bytes buffered.
    write_waited: AtomicBool,
    offer: Mutex<Option<Offer>>,
}

/// A response ready to be written without hyper: its encoded head and its body.
struct Offer {
    head: Vec<u8>,
    body: Box<dyn SocketBody>,
}

/// The socket as hyper sees it, noting whether a write ever had to wait.
struct Socket {
    io: TokioIo<TcpStream>,
    shared: Arc<Shared>,
}

impl Socket {
    fn noted<T>(&self, poll: Poll<T>) -> Poll<T> {
        if poll.is_pending() {
            self.shared.write_waited.store(true, Ordering::Relaxed);
        }
        poll
    }
}

impl hyper::rt::Read for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.noted(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.noted(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.noted(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The router, as hyper calls it on this connection, and beside it the direct path.
struct Service<D> {
    router: Router,
    direct: D,
    body_read_timeout: Duration,
    shared: Arc<Shared>,
}

impl<D: Direct> hyper::service::Service<Request<Incoming>> for Service<D> {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Respond;

    fn call(&self, req: Request<Incoming>) -> Respond {
        let chunked = req.version() == Version::HTTP_11;
        let timeout = self.body_read_timeout;
        let req = req.map(|body| TimedBody::new(body, timeout));
        let answer = match self.direct.takes(&req) {
            Some(taken) => Answer::Direct(self.direct.answer(taken, req)),
            None => Answer::Route(self.router.clone().call(req)),
        };
        Respond {
            answer,
            shared: self.shared.clone(),
            chunked,
            offered: false,
        }
    }
}

/// The router's answer, or (for a response with a [`Takeover`]) an offer to the connection's
/// task, which then takes hyper apart before polling this again.
struct Respond {
    answer: Answer,
    shared: Arc<Shared>,
    /// The request allows a chunked response (HTTP/1.1).
    chunked: bool,
    offered: bool,
}

impl Future for Respond {
    type Output = Result<axum::response::Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.offered {
            return Poll::Pending;
        }
        let route = match &mut self.answer {
            // A direct answer never takes the socket over.
            Answer::Direct(direct) => return direct.as_mut().poll(cx).map(Ok),
            Answer::Route(route) => route,
        };
        let Ok(response) = ready!(Pin::new(route).poll(cx));
        let may = self.chunked && !self.shared.write_waited.load(Ordering::Relaxed);
        let body = match response.extensions().get::<Takeover>() {
            Some(takeover) if may => takeover.0.take(),
            _ => None,
        };
        let Some(body) = body else {
            return Poll::Ready(Ok(response));
        };
        let head = encode_head(&response);
        *self.shared.offer.lock() = Some(Offer { head, body });
        self.offered = true;
        // The connection's task sees the offer as soon as hyper returns.
        Poll::Pending
    }
}

// The route's future is the large one; boxing it would cost every other request an allocation.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Route(RouteFuture<Infallible>),
    Direct(DirectAnswer),
}

/// The response head as hyper would write it, for a chunked body and a connection that ends
/// with the response.
fn encode_head<B>(response: &Response<B>) -> Vec<u8> {
    let status = response.status();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let framing = [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ];
    for (name, value) in response.headers() {
        if framing.contains(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !response.headers().contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_accept_failure_is_logged_once_a_period_with_its_count() {
        let mut failing = Throttled::default();
        assert_eq!(failing.due(), Some(1), "the first is logged");
        assert_eq!(failing.due(), None);
        assert_eq!(failing.due(), None);
        failing.last = failing
            .last
            .and_then(|last| last.checked_sub(Throttled::PERIOD));
        assert_eq!(
            failing.due(),
            Some(3),
            "a period later, with the count since"
        );
        assert_eq!(failing.due(), None);
    }

    #[test]
    fn a_taken_over_head_frames_the_body_itself_and_ends_the_connection() {
        let response = Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .header("content-length", "12")
            .header("connection", "keep-alive")
            .body(())
            .unwrap();
        let head = String::from_utf8(encode_head(&response)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\ncontent-type: text/event-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\ndate: "), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert!(!head.contains("keep-alive"), "{head}");
        assert!(
            head.ends_with("\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
            "{head}"
        );
    }
}
