//! Black-box tests of the HTTP surface: requests go through the real router and a real
//! store (SQLite in a temporary directory, or a scratch PostgreSQL database); `shutdown_*`
//! also runs the real server on a port.

// Each test binary uses only part of the shared helpers.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use support::{on_both_backends, Backend};
use tether_server::{open_store, router, AppState, AuthMode, ServerConfig};

/// Generous: the machine may be slow; nothing here should come near it unless it hangs.
const PATIENCE: Duration = Duration::from_secs(30);

struct App {
    state: AppState,
    _dir: TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
    _backend: Backend,
}

impl App {
    /// A server without auth: these tests are about the stream protocol.
    async fn new(backend: Backend, config: ServerConfig) -> App {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig {
            data_dir: dir.path().to_path_buf(),
            auth: AuthMode::Off,
            ..config
        };
        backend.configure(&mut config);
        let store = open_store(&config).await.unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        App {
            state: AppState::new(store, config, shutdown),
            _dir: dir,
            _stop: stop,
            _backend: backend,
        }
    }

    async fn call(&self, req: Request<Body>) -> Response<Body> {
        router(self.state.clone()).oneshot(req).await.unwrap()
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, Bytes) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self.call(req.body(body.into()).unwrap()).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }
}

fn header<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn an_append_over_the_size_limit_gets_413_and_stores_nothing(backend: Backend) {
    let app = App::new(
        backend,
        ServerConfig {
            max_append_bytes: 1024,
            ..ServerConfig::default()
        },
    )
    .await;
    let ct = [("content-type", "application/octet-stream")];
    let (status, _, _) = app.send("PUT", "/v1/stream/big", &ct, Body::empty()).await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, headers, _) = app
        .send("POST", "/v1/stream/big", &ct, vec![7u8; 1025])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));

    let (status, _, _) = app
        .send("POST", "/v1/stream/big", &ct, vec![7u8; 1024])
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "exactly the limit is fine");
    let (_, headers, body) = app
        .send("GET", "/v1/stream/big?offset=-1", &[], Body::empty())
        .await;
    assert_eq!(body.len(), 1024, "only the accepted append is stored");
    assert_eq!(
        header(&headers, "stream-next-offset"),
        Some("0000000000000000_0000000000001024")
    );
}

/// method, path, headers, body, expected status
type Case = (
    &'static str,
    String,
    Vec<(&'static str, &'static str)>,
    &'static [u8],
    StatusCode,
);

async fn malformed_requests_get_client_errors_with_a_json_body(backend: Backend) {
    let app = App::new(backend, ServerConfig::default()).await;
    let ct = ("content-type", "text/plain");
    app.send("PUT", "/v1/stream/s", &[ct], "hello").await;

    let cases: Vec<Case> = vec![
        (
            "GET",
            "/v1/stream/s?offset=garbage".into(),
            vec![],
            b"",
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/v1/stream/s?offset=-1&offset=-1".into(),
            vec![],
            b"",
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/v1/stream/s?offset=".into(),
            vec![],
            b"",
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/v1/stream/s?offset=0000000000000000_0000000000009999".into(),
            vec![],
            b"",
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/v1/stream/s?live=long-poll".into(),
            vec![],
            b"",
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/v1/stream/s?offset=-1&live=sometimes".into(),
            vec![],
            b"",
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/v1/stream/t".into(),
            vec![("stream-ttl", "1e3")],
            b"",
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/v1/stream/t".into(),
            vec![("stream-expires-at", "tomorrow")],
            b"",
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/v1/stream/t".into(),
            vec![("stream-fork-sub-offset", "1")],
            b"",
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/v1/stream/t".into(),
            vec![
                ("stream-forked-from", "/v1/stream/s"),
                ("stream-fork-offset", "x"),
            ],
            b"",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/v1/stream/s".into(),
            vec![ct, ("producer-id", "p")],
            b"x",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/v1/stream/s".into(),
            vec![
                ct,
                ("producer-id", "p"),
                ("producer-epoch", "-1"),
                ("producer-seq", "0"),
            ],
            b"x",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/v1/stream/s".into(),
            vec![],
            b"no content type",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/v1/stream/s".into(),
            vec![ct],
            b"",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/v1/stream/nope".into(),
            vec![ct],
            b"x",
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/v1/stream/s".into(),
            vec![("content-type", "application/json")],
            b"{}",
            StatusCode::CONFLICT,
        ),
    ];
    for (method, path, headers, body, expected) in cases {
        let (status, resp_headers, resp_body) = app.send(method, &path, &headers, body).await;
        assert_eq!(status, expected, "{method} {path} {headers:?}");
        let error: serde_json::Value = serde_json::from_slice(&resp_body)
            .unwrap_or_else(|_| panic!("{method} {path}: error body is JSON"));
        assert!(
            error["error"]["code"].is_string(),
            "{method} {path}: {error}"
        );
        assert_eq!(
            error["error"]["request_id"].as_str(),
            header(&resp_headers, "x-request-id"),
            "the body names the request"
        );
    }
    // Invalid JSON into a JSON stream, and a header that is not text.
    app.send(
        "PUT",
        "/v1/stream/j",
        &[("content-type", "application/json")],
        Body::empty(),
    )
    .await;
    let (status, _, _) = app
        .send(
            "POST",
            "/v1/stream/j",
            &[("content-type", "application/json")],
            "{nope",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let req = Request::builder()
        .method("PUT")
        .uri("/v1/stream/u")
        .header(
            "stream-ttl",
            axum::http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.call(req).await.status(), StatusCode::BAD_REQUEST);

    // None of it changed the stream.
    let (_, _, body) = app
        .send("GET", "/v1/stream/s?offset=-1", &[], Body::empty())
        .await;
    assert_eq!(&body[..], b"hello");
}

/// Reads SSE frames from a response body until `done` says stop. Returns the payload of
/// every `event: data` frame (data lines joined with newlines) and the last control JSON.
async fn read_sse_until(
    body: &mut Body,
    buf: &mut String,
    data: &mut Vec<String>,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) {
    loop {
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if let Some(control) = sse_frame(&frame, data) {
                if done(&control) {
                    return;
                }
            }
        }
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("SSE stream stalled")
            .expect("SSE stream ended early")
            .unwrap();
        if let Ok(bytes) = frame.into_data() {
            buf.push_str(std::str::from_utf8(&bytes).unwrap());
        }
    }
}

/// One SSE frame: the payload of an `event: data` frame (data lines joined with newlines) goes
/// to `data`; an `event: control` frame's JSON is returned.
fn sse_frame(frame: &str, data: &mut Vec<String>) -> Option<serde_json::Value> {
    let mut event = "";
    let mut lines = Vec::new();
    for line in frame.lines() {
        if let Some(e) = line.strip_prefix("event:") {
            event = e.trim();
        } else if let Some(d) = line.strip_prefix("data:") {
            lines.push(d.strip_prefix(' ').unwrap_or(d).to_string());
        }
    }
    match event {
        "data" => {
            data.push(lines.join("\n"));
            None
        }
        "control" => Some(serde_json::from_str(&lines.join("\n")).unwrap()),
        _ => None,
    }
}

/// The messages numbered by `"i"` in SSE data frames of JSON arrays, in the order received.
fn numbered_messages(data: &[String]) -> Vec<u64> {
    data.iter()
        .flat_map(|batch| serde_json::from_str::<Vec<serde_json::Value>>(batch).unwrap())
        .map(|m| m["i"].as_u64().unwrap())
        .collect()
}

async fn a_slow_sse_reader_keeps_its_place_and_misses_nothing(backend: Backend) {
    let app = App::new(backend, ServerConfig::default()).await;
    let json = [("content-type", "application/json")];
    app.send("PUT", "/v1/stream/slow", &json, Body::empty())
        .await;
    let resp = app
        .call(
            Request::get("/v1/stream/slow?offset=-1&live=sse")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();

    // The reader does not read while far more than any buffer or cache holds is appended.
    let pad = "x".repeat(1000);
    let total = 3000;
    for i in 0..total {
        let (status, _, _) = app
            .send(
                "POST",
                "/v1/stream/slow",
                &json,
                format!(r#"{{"i":{i},"pad":"{pad}"}}"#),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    app.send(
        "POST",
        "/v1/stream/slow",
        &[("stream-closed", "true")],
        Body::empty(),
    )
    .await;

    let (mut buf, mut data) = (String::new(), Vec::new());
    read_sse_until(&mut body, &mut buf, &mut data, |c| {
        c["streamClosed"] == true
    })
    .await;
    assert_eq!(
        numbered_messages(&data),
        (0..total).collect::<Vec<_>>(),
        "every message once, in order"
    );
}

/// The same over a real connection, where a live SSE response leaves hyper and writes its
/// frames to the socket itself (`connection.rs`): the reader stops reading while far more
/// than the socket buffers hold is appended, so the server's writes stop part-way and resume;
/// every message still arrives once, in order (G2, G3).
async fn a_slow_sse_reader_on_a_real_connection_misses_nothing(backend: Backend) {
    let server = support::Server::start_on(backend).await;
    create(&server, "/v1/stream/slow", "application/json").await;
    let (mut sse, mut seen) = raw_subscribers(&server, "/v1/stream/slow", "-1", 1)
        .await
        .remove(0);
    let head_end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    assert!(
        head.contains("connection: close") && head.contains("transfer-encoding: chunked"),
        "the response was taken off hyper: {head}"
    );

    let pad = "x".repeat(8000);
    let total = 1500;
    for i in 0..total {
        append(
            &server,
            "/v1/stream/slow",
            format!(r#"{{"i":{i},"pad":"{pad}"}}"#),
        )
        .await;
    }
    close(&server, "/v1/stream/slow").await;

    // The server ends the response after the closing control event, and the connection.
    let (data, controls) = read_to_end(&mut sse, &mut seen).await;
    assert_eq!(
        controls.last().map(|c| c["streamClosed"].clone()),
        Some(serde_json::Value::Bool(true))
    );
    assert_eq!(
        numbered_messages(&data),
        (0..total).collect::<Vec<_>>(),
        "every message once, in order"
    );
}

async fn create(server: &support::Server, path: &str, content_type: &str) {
    let headers = [("content-type", content_type)];
    let made = server
        .call("PUT", path, Some(&server.admin), &headers, "")
        .await;
    assert_eq!(made.status, StatusCode::CREATED);
}

/// Appends one JSON message.
async fn append(server: &support::Server, path: &str, body: String) {
    let json = [("content-type", "application/json")];
    let appended = server
        .call("POST", path, Some(&server.admin), &json, body)
        .await;
    assert_eq!(appended.status, StatusCode::NO_CONTENT);
}

async fn close(server: &support::Server, path: &str) {
    let closed = server
        .call(
            "POST",
            path,
            Some(&server.admin),
            &[("stream-closed", "true")],
            "",
        )
        .await;
    assert_eq!(closed.status, StatusCode::NO_CONTENT);
}

/// Reads a raw SSE response to its end; returns its data payloads and control events.
async fn read_to_end(
    sse: &mut tokio::net::TcpStream,
    seen: &mut Vec<u8>,
) -> (Vec<String>, Vec<serde_json::Value>) {
    tokio::time::timeout(PATIENCE, sse.read_to_end(seen))
        .await
        .expect("the SSE response ended")
        .unwrap();
    let head_end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let text = String::from_utf8(dechunk(&seen[head_end + 4..])).unwrap();
    let (mut data, mut controls) = (Vec::new(), Vec::new());
    for frame in text.split_terminator("\n\n") {
        controls.extend(sse_frame(frame, &mut data));
    }
    (data, controls)
}

/// Waits until `n` SSE subscribers are parked without a task, as `/metrics` tells.
async fn parked(server: &support::Server, n: u64) {
    support::eventually(&format!("{n} parked subscribers"), || async {
        let scraped = server
            .call("GET", "/metrics", Some(&server.admin), &[], "")
            .await;
        let text = String::from_utf8_lossy(&scraped.body).into_owned();
        let gauge: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("tether_sse_parked_subscribers "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no parked gauge in {text}"));
        (gauge == n).then_some(())
    })
    .await;
}

/// Opens `n` raw SSE subscribers of `path` from `offset`, each past its first control event.
async fn raw_subscribers(
    server: &support::Server,
    path: &str,
    offset: &str,
    n: usize,
) -> Vec<(tokio::net::TcpStream, Vec<u8>)> {
    let addr = server.base.strip_prefix("http://").unwrap();
    let mut all = Vec::new();
    for _ in 0..n {
        let mut sse = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path}?offset={offset}&live=sse HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\r\n",
            server.admin
        );
        sse.write_all(request.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        assert!(read_until(&mut sse, &mut seen, b"upToDate").await);
        all.push((sse, seen));
    }
    all
}

async fn parked_sse_subscribers_get_every_append_once_in_order(backend: Backend) {
    let server = support::Server::start_on_with(backend, |c| {
        c.sse_park_after = Duration::ZERO;
        // No keep-alive hands a subscriber back during the test: only the appends do.
        c.sse_keepalive = Duration::from_secs(600);
        c.sse_max_duration = Duration::from_secs(600);
    })
    .await;
    create(&server, "/v1/stream/parked", "application/json").await;
    let subscribers = 20;
    let mut subs = raw_subscribers(&server, "/v1/stream/parked", "now", subscribers).await;
    parked(&server, subscribers as u64).await;

    let total = 5;
    for i in 0..total {
        append(&server, "/v1/stream/parked", format!(r#"{{"i":{i}}}"#)).await;
        // Every subscriber is handed back, delivers, and parks again before the next one.
        for (sse, seen) in subs.iter_mut() {
            assert!(read_until(sse, seen, format!(r#""i":{i}"#).as_bytes()).await);
        }
        parked(&server, subscribers as u64).await;
    }
    close(&server, "/v1/stream/parked").await;
    for (mut sse, mut seen) in subs {
        let (data, _) = read_to_end(&mut sse, &mut seen).await;
        assert_eq!(
            numbered_messages(&data),
            (0..total).collect::<Vec<_>>(),
            "every message once, in order"
        );
    }
    parked(&server, 0).await;
}

async fn a_parked_sse_subscriber_gets_keepalives_its_deadline_and_shutdown(backend: Backend) {
    let server = support::Server::start_on_with(backend, |c| {
        c.sse_park_after = Duration::ZERO;
        c.sse_keepalive = Duration::from_millis(200);
        c.sse_max_duration = Duration::from_secs(2);
    })
    .await;
    create(&server, "/v1/stream/quiet", "text/plain").await;
    let mut subs = raw_subscribers(&server, "/v1/stream/quiet", "now", 2).await;
    parked(&server, 2).await;
    // Parked, each still gets its keep-alives, and the response ends at its deadline.
    let (mut first, mut seen) = subs.remove(0);
    assert!(read_until(&mut first, &mut seen, b": keep-alive").await);
    tokio::time::timeout(PATIENCE, first.read_to_end(&mut seen))
        .await
        .expect("the response ended at its deadline")
        .unwrap();
    assert!(seen.ends_with(b"0\r\n\r\n"), "the body's last chunk");

    // A subscriber parked when the server stops is ended, and the server returns.
    let (mut second, mut seen) = subs.remove(0);
    server.stop().await;
    tokio::time::timeout(PATIENCE, second.read_to_end(&mut seen))
        .await
        .expect("the response ended at shutdown")
        .unwrap();
    assert!(seen.ends_with(b"0\r\n\r\n"), "the body's last chunk");
}

/// The body of a chunked HTTP/1.1 response, which must end with its last (empty) chunk.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap(), 16)
            .expect("a hexadecimal chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        assert_eq!(&raw[size..size + 2], b"\r\n", "a chunk ends with CRLF");
        raw = &raw[size + 2..];
    }
}

async fn responses_carry_security_headers_and_preflight_allows_if_none_match(backend: Backend) {
    let app = App::new(backend, ServerConfig::default()).await;
    // Only the stream routes are for pages of other origins (the task and admin API is not).
    for (method, path, policy) in [
        ("GET", "/v1/stream/none", "cross-origin"),
        ("HEAD", "/v1/stream/none", "cross-origin"),
        ("GET", "/elsewhere", "same-origin"),
    ] {
        let (status, headers, _) = app.send(method, path, &[], Body::empty()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
        assert_eq!(
            header(&headers, "cross-origin-resource-policy"),
            Some(policy)
        );
        assert!(header(&headers, "x-request-id").is_some_and(|id| !id.is_empty()));
    }
    let (status, headers, _) = app
        .send(
            "OPTIONS",
            "/v1/stream/any",
            &[
                ("origin", "https://example.com"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "if-none-match"),
            ],
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let allowed = header(&headers, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("if-none-match"), "{allowed}");
}

/// Reads from a raw connection until `pattern` shows up, or EOF.
async fn read_until(conn: &mut tokio::net::TcpStream, seen: &mut Vec<u8>, pattern: &[u8]) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        if seen.windows(pattern.len()).any(|w| w == pattern) {
            return true;
        }
        match tokio::time::timeout(PATIENCE, conn.read(&mut buf))
            .await
            .expect("connection stalled")
        {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

async fn shutdown_ends_live_sse_streams_and_the_server_returns(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        auth: AuthMode::Off,
        ..ServerConfig::default()
    };
    backend.configure(&mut config);
    let store = open_store(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tether_server::serve(config, listener, store, async {
        let _ = stop_rx.await;
    }));

    let mut put = tokio::net::TcpStream::connect(addr).await.unwrap();
    put.write_all(b"PUT /v1/stream/live HTTP/1.1\r\nhost: localhost\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi")
        .await
        .unwrap();
    let mut seen = Vec::new();
    assert!(read_until(&mut put, &mut seen, b"201 Created").await);

    let mut sse = tokio::net::TcpStream::connect(addr).await.unwrap();
    sse.write_all(b"GET /v1/stream/live?offset=-1&live=sse HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    assert!(
        read_until(&mut sse, &mut seen, b"upToDate").await,
        "got the data and a control event"
    );

    stop_tx.send(()).unwrap();
    // The live stream is ended by the server (EOF), not left hanging.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(PATIENCE, sse.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "SSE connection closed on shutdown");
    let result = tokio::time::timeout(PATIENCE, server)
        .await
        .expect("server returned")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");

    // And the data is all there for the next start.
    let mut config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    };
    backend.configure(&mut config);
    let store = open_store(&config).await.unwrap();
    let info = store.streams.head("live").await.unwrap();
    assert_eq!(info.next.0, 2);
}

/// Appends reach the store without the router when they come over a connection
/// (`streams::direct`); the router still answers them in-process. Both must answer alike.
async fn appends_over_a_connection_are_answered_as_the_router_answers_them(backend: Backend) {
    let tune = |config: &mut ServerConfig| {
        config.max_append_bytes = 1024;
        config.auth = AuthMode::Off;
    };
    // The router's side runs on SQLite: only the answers are compared, not the backends.
    let mut config = ServerConfig::default();
    tune(&mut config);
    let app = App::new(Backend::Sqlite, config).await;
    let server = support::Server::start_on_with(backend, tune).await;

    let text = ("content-type", "text/plain");
    let json = ("content-type", "application/json");
    let producer = |epoch: &'static str, seq: &'static str| {
        vec![
            text,
            ("producer-id", "p"),
            ("producer-epoch", epoch),
            ("producer-seq", seq),
        ]
    };
    let over_limit = vec![b'x'; 1025];
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes();
    let cases: Vec<Exchange> = vec![
        ("PUT", "/v1/stream/s", vec![text], b""),
        ("PUT", "/v1/stream/j", vec![json], b""),
        ("PUT", "/v1/stream/a%20b", vec![text], b""),
        ("POST", "/v1/stream/s", vec![text], b"hello"),
        ("POST", "/v1/stream/a%20b", vec![text], b"spaced"),
        ("POST", "/v1/stream/s", vec![], b"no type"),
        ("POST", "/v1/stream/s", vec![json], b"{}"),
        ("POST", "/v1/stream/s", vec![text], &over_limit),
        ("POST", "/v1/stream/missing", vec![text], b"x"),
        ("POST", "/v1/stream/j", vec![json], b"[1, 2]"),
        ("POST", "/v1/stream/j", vec![json], b"[1,"),
        ("POST", "/v1/stream/j", vec![json], b"[]"),
        ("POST", "/v1/stream/s", producer("0", "0"), b"p0"),
        ("POST", "/v1/stream/s", producer("0", "0"), b"p0"),
        ("POST", "/v1/stream/s", producer("0", "5"), b"gap"),
        ("POST", "/v1/stream/s", producer("1", "0"), b"fenced in"),
        ("POST", "/v1/stream/s", producer("0", "1"), b"stale"),
        (
            "POST",
            "/v1/stream/s",
            vec![text, ("producer-id", "p")],
            b"half",
        ),
        (
            "POST",
            "/v1/stream/s",
            vec![text, ("stream-seq", "b")],
            b"seq b",
        ),
        (
            "POST",
            "/v1/stream/s",
            vec![text, ("stream-seq", "a")],
            b"seq a",
        ),
        ("POST", "/v1/stream/tasks/123", vec![json], b"{}"),
        ("POST", "/v1/stream/s", vec![("stream-closed", "true")], b""),
        ("POST", "/v1/stream/s", vec![text], b"after close"),
        ("GET", "/v1/stream/s?offset=-1", vec![], b""),
        ("GET", "/v1/stream/j?offset=-1", vec![], b""),
        ("GET", "/v1/stream/a%20b?offset=-1", vec![], b""),
        // Meaningful headers given twice are refused, whichever path answers.
        ("PUT", "/v1/stream/d", vec![text], b""),
        ("POST", "/v1/stream/d", vec![text, text], b"two types"),
        ("POST", "/v1/stream/d", vec![text, json], b"two types"),
        (
            "POST",
            "/v1/stream/d",
            vec![text, ("stream-seq", "a"), ("stream-seq", "b")],
            b"two seqs",
        ),
        (
            "POST",
            "/v1/stream/d",
            [producer("0", "0"), vec![("producer-seq", "1")]].concat(),
            b"two producer seqs",
        ),
        (
            "POST",
            "/v1/stream/d",
            [producer("0", "0"), vec![("producer-epoch", "1")]].concat(),
            b"two epochs",
        ),
        (
            "POST",
            "/v1/stream/d",
            [producer("0", "0"), vec![("producer-id", "q")]].concat(),
            b"two producers",
        ),
        (
            "POST",
            "/v1/stream/d",
            vec![
                text,
                ("authorization", "Bearer a"),
                ("authorization", "Bearer b"),
            ],
            b"two tokens",
        ),
        (
            "POST",
            "/v1/stream/d",
            vec![text, ("idempotency-key", "a"), ("idempotency-key", "b")],
            b"two keys",
        ),
        // Other repeated headers are no one's business.
        (
            "POST",
            "/v1/stream/d",
            vec![text, ("x-note", "a"), ("x-note", "b")],
            b"two notes",
        ),
        ("GET", "/v1/stream/d?offset=-1", vec![], b""),
        // JSON nested past the bound every JSON body has.
        ("POST", "/v1/stream/j", vec![json], &deep),
        // A web page's append to a server without auth, and a name rebound to it.
        (
            "POST",
            "/v1/stream/s",
            vec![text, ("origin", "https://evil.example")],
            b"page",
        ),
        ("POST", "/v1/stream/rebound", vec![text], b"x"),
    ];
    for (method, path, mut headers, body) in cases {
        // Both sides name the same host (a created stream's `Location` carries it); with auth
        // off it has to be a loopback name, which the last case checks.
        let host = match path {
            "/v1/stream/rebound" => "evil.example",
            _ => "localhost",
        };
        headers.push(("host", host));
        let routed = app.send(method, path, &headers, body.to_vec()).await;
        let direct = server
            .call(method, path, None, &headers, body.to_vec())
            .await;
        let what = format!("{method} {path} {headers:?}");
        assert_eq!(direct.status, routed.0, "{what}: {direct:?}");
        // Framing and the date are hyper's, on the wire; the request id is new each time.
        let own = |name: &HeaderName| {
            !["content-length", "date", "x-request-id"].contains(&name.as_str())
        };
        for (name, value) in routed.1.iter().filter(|(name, _)| own(name)) {
            assert_eq!(direct.headers.get(name), Some(value), "{what}: {name}");
        }
        for name in direct.headers.keys().filter(|name| own(name)) {
            assert!(routed.1.contains_key(name), "{what}: {name}");
        }
        assert!(direct.header("x-request-id").is_some(), "{what}");
        assert_eq!(
            without_request_id(&direct.body),
            without_request_id(&routed.2),
            "{what}"
        );
    }
}

/// method, path, headers, body
type Exchange<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a [u8]);

/// A body with the request id of a JSON error taken out; other bodies as they are.
fn without_request_id(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) if value.get("error").is_some() => {
            let id = value["error"]["request_id"].take();
            assert!(id.is_string(), "an error body names its request: {value}");
            value.to_string().into_bytes()
        }
        _ => body.to_vec(),
    }
}

on_both_backends!(
    an_append_over_the_size_limit_gets_413_and_stores_nothing,
    malformed_requests_get_client_errors_with_a_json_body,
    a_slow_sse_reader_keeps_its_place_and_misses_nothing,
    a_slow_sse_reader_on_a_real_connection_misses_nothing,
    parked_sse_subscribers_get_every_append_once_in_order,
    a_parked_sse_subscriber_gets_keepalives_its_deadline_and_shutdown,
    responses_carry_security_headers_and_preflight_allows_if_none_match,
    shutdown_ends_live_sse_streams_and_the_server_returns,
    appends_over_a_connection_are_answered_as_the_router_answers_them,
);
