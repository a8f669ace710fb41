//! A small HTTP/1.1 client for the tests: a pooled client for plain requests, and single
//! connections that a test can hang up on purpose.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Upper bound for one plain request. Generous: the machine may be slow and busy; nothing
/// in these tests should come near it unless the server hangs.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An error with its chain of causes, e.g. "client error (SendRequest): connection closed".
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A fully read response.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_str(&self.headers, name)
    }

    /// True when the header is present with the value `true`.
    pub fn flag(&self, name: &str) -> bool {
        header_flag(&self.headers, name)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

pub fn header_flag(headers: &HeaderMap, name: &str) -> bool {
    header_str(headers, name).is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

/// A pooled client for ordinary requests (appends, catch-up reads, stream management).
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        HttpClient {
            inner: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends one request and reads the whole response, within [`REQUEST_TIMEOUT`].
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, BoxError> {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into()))?;
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|error| describe(&error))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|error| describe(&error))?
                .to_bytes();
            Ok::<_, BoxError>(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("{url}: no response within {REQUEST_TIMEOUT:?}").into()),
        }
    }
}

/// One HTTP/1.1 connection, owned by the test. Dropping it closes the socket: that is how a
/// reader "hangs up" in the middle of a long-poll or an SSE stream.
pub struct Connection {
    host: String,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Connection {
    /// Opens a connection to `base_url` (`http://host:port`).
    pub async fn open(base_url: &str) -> Result<Connection, BoxError> {
        let host = base_url
            .strip_prefix("http://")
            .ok_or_else(|| format!("not an http:// base url: {base_url}"))?
            .trim_end_matches('/')
            .to_string();
        let connect = async {
            let tcp = TcpStream::connect(&host).await?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            Ok::<_, BoxError>((sender, connection))
        };
        let (sender, connection) = tokio::time::timeout(REQUEST_TIMEOUT, connect)
            .await
            .map_err(|_| format!("connecting to {host} timed out"))??;
        let driver = tokio::spawn(async move {
            // Errors here show up on the request side; a hang-up aborts this task.
            let _ = connection.await;
        });
        Ok(Connection {
            host,
            sender,
            driver,
        })
    }

    /// True when the server (or the network) closed this connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends a GET for `path_and_query` and returns the response with its body still
    /// streaming. The caller reads the body or drops the connection.
    pub async fn get(
        &mut self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<hyper::Response<Incoming>, BoxError> {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(path_and_query)
            .header(HOST, &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::new()))?;
        self.sender
            .ready()
            .await
            .map_err(|error| describe(&error))?;
        self.sender
            .send_request(request)
            .await
            .map_err(|error| describe(&error).into())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Reads a whole response body.
pub async fn read_body(response: hyper::Response<Incoming>) -> Result<Response, BoxError> {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|error| describe(&error))?
        .to_bytes();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}
