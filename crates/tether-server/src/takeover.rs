//! Responses that may leave hyper: a body that can write itself straight to the socket once
//! the transport ([`crate::connection`]) takes the connection apart, and the socket it then
//! writes to. Handlers build such bodies with [`takeover_body`] (through [`crate::live`]); the
//! transport knows them only as a [`Takeover`] extension on a response. A leaf: it imports
//! nothing of the server.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::{ready, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::watch;

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
    /// The response on `tcp` whose encoded `head` goes out with its first chunk; `open` keeps
    /// the server's drain waiting for it.
    pub fn new(tcp: TcpStream, head: Vec<u8>, open: watch::Receiver<()>) -> Self {
        RawResponse {
            tcp,
            head: Some(head),
            _open: open,
        }
    }

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
