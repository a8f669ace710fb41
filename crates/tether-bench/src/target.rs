//! The server under test and the HTTP/1.1 plumbing to reach it.
//!
//! Each task owns exactly one keep-alive connection made with hyper's low-level
//! `client::conn::http1` API. A pooled client would be shorter to write, but it opens extra
//! connections under load, and then "64 connections" would not mean 64 connections.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One connection, ready to send requests with in-memory bodies.
pub type Conn = SendRequest<Full<Bytes>>;

/// How long a TCP connect may take before the workload gives up on it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The server under test: one node, or several nodes of one deployment (a comma-separated
/// `--url`), over which new connections are spread in turn.
#[derive(Debug, Clone)]
pub struct Target {
    addrs: Vec<SocketAddr>,
    /// Which node the next connection goes to.
    next: Arc<AtomicUsize>,
    /// `host:port` of the first node, sent as the `Host` header.
    authority: String,
    /// Path prefix under which streams live, without a trailing slash (may be empty).
    prefix: String,
    /// The URL's own path, without a trailing slash (may be empty).
    base: String,
}

impl Target {
    /// `urls` is `http://host[:port][/base]`, or several such URLs separated by commas (the
    /// nodes of one deployment, with the same base path); `stream_prefix` is appended to the
    /// base path.
    pub fn new(urls: &str, stream_prefix: &str) -> anyhow::Result<Self> {
        let mut nodes = urls
            .split(',')
            .map(|url| Self::one(url.trim(), stream_prefix));
        let mut target = nodes.next().context("no URL")??;
        for node in nodes {
            let node = node?;
            if node.base != target.base {
                bail!("the nodes' URLs must share one base path: {urls:?}");
            }
            target.addrs.extend(node.addrs);
        }
        Ok(target)
    }

    /// How many nodes connections are spread over.
    pub fn nodes(&self) -> usize {
        self.addrs.len()
    }

    fn one(url: &str, stream_prefix: &str) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("only plain http:// URLs are supported, got {url:?}");
        };
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            bail!("no host in {url:?}");
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !authority.ends_with(']')
        }) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {with_port}"))?
            .next()
            .with_context(|| format!("{with_port} resolves to no address"))?;
        let prefix = format!(
            "{}/{}",
            base.trim_end_matches('/'),
            stream_prefix.trim_matches('/')
        );
        Ok(Self {
            addrs: vec![addr],
            next: Arc::new(AtomicUsize::new(0)),
            authority: authority.to_string(),
            prefix: prefix.trim_end_matches('/').to_string(),
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// The request path of the stream called `name`.
    pub fn stream_path(&self, name: &str) -> String {
        format!("{}/{}", self.prefix, name)
    }

    /// The request path of a Tether API route such as `/v1/tasks`.
    pub fn api_path(&self, route: &str) -> String {
        format!("{}{route}", self.base)
    }

    /// Opens a new connection (to the next node in turn) and spawns the task that drives it;
    /// the connection closes when the returned sender is dropped.
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        let addr = self.addrs[self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len()];
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr} timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            // A closed or reset connection surfaces as an error on the next request.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// A request to `path_and_query` with the `Host` header set (hyper's low-level client does
    /// not add it).
    pub fn request<U>(&self, method: Method, path_and_query: U) -> hyper::http::request::Builder
    where
        Uri: TryFrom<U>,
        <Uri as TryFrom<U>>::Error: Into<hyper::http::Error>,
    {
        Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, &self.authority)
    }
}

/// A response whose body has been read in full.
#[derive(Debug)]
pub struct Collected {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Collected {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The status and the start of the body, for error messages.
    pub fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]);
        format!("{} {}", self.status, body.trim())
    }
}

/// Sends a request on `conn` and reads the whole response body, so that the connection is free
/// for the next request.
pub async fn send(conn: &mut Conn, req: Request<Full<Bytes>>) -> anyhow::Result<Collected> {
    conn.ready().await.context("connection closed")?;
    let resp = conn.send_request(req).await.context("sending request")?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .context("reading response body")?
        .to_bytes();
    Ok(Collected {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Creates (or idempotently re-creates) a stream with `content_type`.
pub async fn create_stream(
    target: &Target,
    conn: &mut Conn,
    name: &str,
    content_type: &str,
) -> anyhow::Result<Collected> {
    let req = target
        .request(Method::PUT, target.stream_path(name))
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::new()))?;
    let resp = send(conn, req).await?;
    if !resp.status.is_success() {
        bail!("PUT {name} answered {}", resp.describe());
    }
    Ok(resp)
}

/// Creates the streams `names` over a few connections in parallel, and returns each one's
/// tail offset (`Stream-Next-Offset`), in the order of `names`.
pub async fn create_many(
    target: &Target,
    names: &[String],
    content_type: &str,
) -> anyhow::Result<Vec<Option<String>>> {
    let answers = each_stream(target, names, |name| {
        target
            .request(Method::PUT, target.stream_path(name))
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::new()))
    })
    .await?;
    names
        .iter()
        .zip(answers)
        .map(|(name, resp)| {
            if !resp.status.is_success() {
                bail!("PUT {name} answered {}", resp.describe());
            }
            Ok(resp.header("stream-next-offset").map(str::to_string))
        })
        .collect()
}

/// Deletes the streams `names` over a few connections in parallel; one already gone is fine.
pub async fn delete_many(target: &Target, names: &[String]) -> anyhow::Result<()> {
    let answers = each_stream(target, names, |name| {
        target
            .request(Method::DELETE, target.stream_path(name))
            .body(Full::new(Bytes::new()))
    })
    .await?;
    for (name, resp) in names.iter().zip(answers) {
        if !resp.status.is_success() && resp.status != StatusCode::NOT_FOUND {
            bail!("DELETE {name} answered {}", resp.describe());
        }
    }
    Ok(())
}

/// Sends the request `request` makes for each of the streams `names`, over eight connections
/// in parallel, and returns the answers in the order of `names`.
async fn each_stream<F>(
    target: &Target,
    names: &[String],
    request: F,
) -> anyhow::Result<Vec<Collected>>
where
    F: Fn(&str) -> Result<Request<Full<Bytes>>, hyper::http::Error> + Sync,
{
    let per_conn = names.len().div_ceil(8).max(1);
    let request = &request;
    let chunks = futures::future::try_join_all(names.chunks(per_conn).map(|chunk| async move {
        let mut conn = target.connect().await?;
        let mut answers = Vec::with_capacity(chunk.len());
        for name in chunk {
            answers.push(send(&mut conn, request(name)?).await?);
        }
        anyhow::Ok(answers)
    }))
    .await?;
    Ok(chunks.into_iter().flatten().collect())
}

/// Offsets are opaque strings chosen by the server: encode them as query values.
pub use tether_types::percent_encode as encode_query_value;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_paths_join_base_and_prefix_with_single_slashes() {
        let t = Target::new("http://127.0.0.1:4437", "/v1/stream").unwrap();
        assert_eq!(t.stream_path("a"), "/v1/stream/a");
        assert_eq!(t.authority, "127.0.0.1:4437");
        let t = Target::new("http://127.0.0.1:4437/", "v1/stream/").unwrap();
        assert_eq!(t.stream_path("a"), "/v1/stream/a");
        let t = Target::new("http://127.0.0.1:4437/base/", "").unwrap();
        assert_eq!(t.stream_path("a"), "/base/a");
        let t = Target::new("http://127.0.0.1", "/").unwrap();
        assert_eq!(t.stream_path("a"), "/a");
        assert_eq!(t.addrs[0].port(), 80);
    }

    #[test]
    fn several_urls_are_the_nodes_of_one_target() {
        let t = Target::new("http://127.0.0.1:1,http://127.0.0.1:2", "/v1/stream").unwrap();
        assert_eq!(t.nodes(), 2);
        assert_eq!(t.stream_path("a"), "/v1/stream/a");
        assert!(Target::new("http://127.0.0.1:1/x,http://127.0.0.1:2/y", "").is_err());
    }

    #[test]
    fn https_urls_are_refused() {
        assert!(Target::new("https://127.0.0.1:4437", "/v1/stream").is_err());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query_value("0000_0012"), "0000_0012");
        assert_eq!(encode_query_value("a/b+c=d"), "a%2Fb%2Bc%3Dd");
    }
}
