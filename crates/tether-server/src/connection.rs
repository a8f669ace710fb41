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
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::Service as _;

use crate::timed_body::TimedBody;
use crate::{streams, AppState};

/// A response body that can write itself to the socket once hyper lets go of it.
pub trait SocketBody: Send + 'static {
    /// Starts a task that writes the whole body to `out`; the connection ends with it. (A
    /// task of its own, sized for the body alone: the connection's task ends here.)
    fn spawn(self: Box<Self>, out: RawResponse);
}

/// Where a response's [`SocketBody`] waits: taken either by the connection (to write it to the
/// socket) or by the response's own body (when hyper writes it after all), whichever is first.
pub trait TakeBody: Send + Sync {
    fn take(&self) -> Option<Box<dyn SocketBody>>;
}

/// A response extension: this response's body may be written without hyper.
#[derive(Clone)]
pub struct Takeover(pub Arc<dyn TakeBody>);

/// A response body that may leave hyper: the body for hyper to write, and the [`Takeover`]
/// the response carries. Whichever asks first gets `body`: the connection, which spawns it on
/// the socket ([`SocketBody::spawn`]), or hyper's body, which then asks `next` for each chunk
/// (handing `body` over and getting it back) until `next` returns `None`.
pub fn takeover_body<T, F, Fut>(body: T, mut next: F) -> (axum::body::Body, Takeover)
where
    T: SocketBody,
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: Future<Output = Option<(Bytes, T)>> + Send + 'static,
{
    let slot = Arc::new(BodySlot(Mutex::new(Some(body))));
    let chunks = futures::stream::unfold((slot.clone(), None), move |(slot, body)| {
        let step = body.or_else(|| slot.0.lock().take()).map(&mut next);
        async move {
            let (bytes, body) = step?.await?;
            Some((Ok::<_, Infallible>(bytes), (slot, Some(body))))
        }
    });
    (axum::body::Body::from_stream(chunks), Takeover(slot))
}

/// Where a [`takeover_body`] waits until the connection or hyper takes it.
struct BodySlot<T>(Mutex<Option<T>>);

impl<T: SocketBody> TakeBody for BodySlot<T> {
    fn take(&self) -> Option<Box<dyn SocketBody>> {
        let body = self.0.lock().take()?;
        Some(Box::new(body))
    }
}

/// Accepts connections until `stop` turns true, then waits for every connection to end: hyper
/// finishes the response in flight and closes; taken-over bodies end on `stop` themselves.
///
/// At most `max_connections` connections are served by hyper at once: past that the loop
/// stops accepting until one ends (a half-sent request ends at the header read timeout), and
/// new clients wait in the kernel's listen backlog. A response that takes its socket over
/// gives its place back (see [`crate::config::ServerConfig::max_connections`]).
pub async fn accept_until(
    listener: TcpListener,
    router: Router,
    state: AppState,
    mut stop: watch::Receiver<bool>,
) {
    // Every connection task holds a receiver; the sender sees them all gone.
    let (open_tx, open_rx) = watch::channel(());
    let cap = state.config.max_connections.min(Semaphore::MAX_PERMITS);
    let places = Arc::new(Semaphore::new(cap));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout);
    let mut full = Throttled::default();
    let mut failing = Throttled::default();
    loop {
        let place = match places.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                if let Some(times) = full.due() {
                    tracing::warn!(
                        limit = state.config.max_connections,
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
            state: state.clone(),
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

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A closed channel means the server is gone: stop too.
    let _ = stop.wait_for(|stop| *stop).await;
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
async fn serve(tcp: TcpStream, service: Service, connection: Connection) {
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
    body.spawn(RawResponse {
        tcp,
        head: Some(head),
        _open: open,
    });
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

/// The router, as hyper calls it on this connection, and beside it the append path
/// ([`streams::direct`]).
struct Service {
    router: Router,
    state: AppState,
    shared: Arc<Shared>,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Respond;

    fn call(&self, req: Request<Incoming>) -> Respond {
        let chunked = req.version() == Version::HTTP_11;
        let timeout = self.state.config.body_read_timeout;
        let req = req.map(|body| TimedBody::new(body, timeout));
        let answer = match streams::direct::takes(&self.state, &req) {
            Some(path) => Answer::Direct(streams::direct::answer(&self.state, path, req)),
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
            // Appends never take the socket over.
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
    Direct(streams::direct::Answer),
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

/// A response being written straight to the socket: the head (sent with the first chunk),
/// then the body in chunks, then the end of the body and of the connection.
///
/// Its waits poll the socket's readiness directly rather than hold readiness futures: one
/// task owns the socket, and each idle subscriber saves their size.
pub struct RawResponse {
    tcp: TcpStream,
    /// Not sent yet.
    head: Option<Vec<u8>>,
    /// Keeps the server's drain waiting for this connection.
    _open: watch::Receiver<()>,
}

impl RawResponse {
    /// Sends one chunk of the body (an empty one sends nothing: it would end the body).
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return self.send_head().await;
        }
        let size = format!("{:x}\r\n", data.len());
        match self.head.take() {
            Some(mut head) => {
                head.extend_from_slice(size.as_bytes());
                head.extend_from_slice(data);
                head.extend_from_slice(b"\r\n");
                write_all(&self.tcp, &mut [IoSlice::new(&head)]).await
            }
            None => {
                let mut parts = [
                    IoSlice::new(size.as_bytes()),
                    IoSlice::new(data),
                    IoSlice::new(b"\r\n"),
                ];
                write_all(&self.tcp, &mut parts).await
            }
        }
    }

    async fn send_head(&mut self) -> io::Result<()> {
        match self.head.take() {
            Some(head) => write_all(&self.tcp, &mut [IoSlice::new(&head)]).await,
            None => Ok(()),
        }
    }

    /// Ends the body and closes the connection.
    pub async fn finish(mut self) {
        let mut end = [IoSlice::new(b"0\r\n\r\n")];
        if self.send_head().await.is_ok() && write_all(&self.tcp, &mut end).await.is_ok() {
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.tcp).await;
        }
    }

    /// Takes the socket off the reactor while its subscriber parks (see `streams::park`):
    /// tokio keeps a cache-aligned readiness record of 256 bytes per registered socket, and
    /// in it the waker, and so the memory, of the last task that polled the socket. A
    /// parked subscriber needs neither; an error means the connection is gone.
    pub fn park(self) -> io::Result<ParkedResponse> {
        Ok(ParkedResponse {
            tcp: self.tcp.into_std()?,
            head: self.head,
            _open: self._open,
        })
    }

    /// Resolves when the client hangs up. What it sends meanwhile is read and dropped: the
    /// response said `connection: close`, so no further request is served on it.
    pub async fn hung_up(&self) {
        poll_fn(|cx| loop {
            if ready!(self.tcp.poll_read_ready(cx)).is_err() {
                return Poll::Ready(());
            }
            let mut sink = [0u8; 256];
            match self.tcp.try_read(&mut sink) {
                Ok(0) => return Poll::Ready(()),
                // Not ready after all: the next poll registers for readiness again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(_) => {}
                Err(_) => return Poll::Ready(()),
            }
        })
        .await
    }
}

/// A [`RawResponse`] whose socket is off the reactor: nothing is written to it or read from
/// it until [`ParkedResponse::resume`].
pub struct ParkedResponse {
    tcp: std::net::TcpStream,
    head: Option<Vec<u8>>,
    _open: watch::Receiver<()>,
}

impl ParkedResponse {
    /// Puts the socket back on the reactor, from within the runtime; an error means the
    /// connection cannot be served any more.
    pub fn resume(self) -> io::Result<RawResponse> {
        Ok(RawResponse {
            tcp: TcpStream::from_std(self.tcp)?,
            head: self.head,
            _open: self._open,
        })
    }
}

async fn write_all(tcp: &TcpStream, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    poll_fn(|cx| {
        while !parts.is_empty() {
            ready!(tcp.poll_write_ready(cx))?;
            match tcp.try_write_vectored(parts) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => IoSlice::advance_slices(&mut parts, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    })
    .await
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
