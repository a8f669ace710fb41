//! The HTTP edges, black-box against a real server: errors no handler produces, limits on what
//! a client may send and for how long, and what a server without auth lets a browser do.

// Each test binary uses only part of the shared helpers.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;
use support::{Reply, Server, PATIENCE};
use tether_server::{AuthMode, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const JSON: (&str, &str) = ("content-type", "application/json");
const TEXT: (&str, &str) = ("content-type", "text/plain");

/// Asserts the API's error shape: the status, the code, and the request id of the header in
/// the body.
fn assert_api_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:?}"
    );
    assert_eq!(reply.code(), code, "{reply:?}");
    let id = reply.header("x-request-id").expect("an X-Request-Id");
    assert_eq!(reply.json()["error"]["request_id"], id, "{reply:?}");
    assert!(reply.json()["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

async fn start(tune: impl FnOnce(&mut ServerConfig)) -> Server {
    Server::start_on_with(support::Backend::Sqlite, tune).await
}

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Reads what the server sends until it closes the connection, within [`PATIENCE`].
async fn read_to_close(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut out)).await;
    let read = read.expect("the server should close the connection");
    // A reset counts as closed too.
    let _ = read;
    String::from_utf8_lossy(&out).into_owned()
}

/// A connection that sent part of a request head and then nothing.
async fn half_sent(server: &Server) -> TcpStream {
    let mut tcp = TcpStream::connect(addr(server)).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-slow: ")
        .await
        .unwrap();
    tcp
}

/// `GET /healthz` on a fresh connection; its status line.
async fn health_on_new_connection(server: &Server) -> String {
    let mut tcp = TcpStream::connect(addr(server)).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut tcp).await;
    answer.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_the_json_error() {
    let server = start(|c| c.max_append_bytes = 1024).await;
    let big = json!({"description": "x".repeat(2000)}).to_string();
    let task = server
        .call("POST", "/v1/tasks", Some(&server.admin), &[JSON], big)
        .await;
    assert_api_error(&task, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    let created = server
        .call(
            "PUT",
            "/v1/stream/s",
            Some(&server.admin),
            &[TEXT],
            Bytes::new(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let append = server
        .call(
            "POST",
            "/v1/stream/s",
            Some(&server.admin),
            &[TEXT],
            vec![b'x'; 2000],
        )
        .await;
    assert_api_error(&append, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_json_error() {
    let server = start(|_| {}).await;
    let root = server.get("/nothing", &server.admin).await;
    assert_api_error(&root, StatusCode::NOT_FOUND, "NOT_FOUND");
    let asset = server.get("/ui/nothing.js", &server.admin).await;
    assert_api_error(&asset, StatusCode::NOT_FOUND, "NOT_FOUND");
    let unknown = server.get("/v1/nothing/here", &server.admin).await;
    assert_api_error(&unknown, StatusCode::NOT_FOUND, "NOT_FOUND");
    let wrong = server
        .call("PUT", "/v1/whoami", Some(&server.admin), &[JSON], "{}")
        .await;
    assert_api_error(&wrong, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    assert_eq!(wrong.header("allow"), Some("GET,HEAD"), "{wrong:?}");
    server.stop().await;
}

#[tokio::test]
async fn oversized_heads_get_the_json_error_with_a_request_id() {
    let server = start(|_| {}).await;
    let long_path = format!("/v1/stream/{}", "a".repeat(20 << 10));
    let uri = server.get(&long_path, &server.admin).await;
    assert_api_error(&uri, StatusCode::URI_TOO_LONG, "URI_TOO_LONG");
    let big = "b".repeat(70 << 10);
    let head = server
        .call(
            "GET",
            "/v1/whoami",
            Some(&server.admin),
            &[("x-big", &big)],
            Bytes::new(),
        )
        .await;
    assert_api_error(
        &head,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "HEADERS_TOO_LARGE",
    );
    server.stop().await;
}

#[tokio::test]
async fn meaningful_headers_given_twice_are_refused() {
    let server = start(|_| {}).await;
    let admin = format!("Bearer {}", server.admin);
    let body = json!({"description": "twice"}).to_string();
    let keys = server
        .call(
            "POST",
            "/v1/tasks",
            Some(&server.admin),
            &[JSON, ("idempotency-key", "a"), ("idempotency-key", "b")],
            body.clone(),
        )
        .await;
    assert_api_error(&keys, StatusCode::BAD_REQUEST, "DUPLICATE_HEADER");
    let tokens = server
        .call(
            "POST",
            "/v1/tasks",
            None,
            &[
                JSON,
                ("authorization", &admin),
                ("authorization", "Bearer nobody"),
            ],
            body.clone(),
        )
        .await;
    assert_api_error(&tokens, StatusCode::BAD_REQUEST, "DUPLICATE_HEADER");
    let types = server
        .call(
            "POST",
            "/v1/tasks",
            Some(&server.admin),
            &[JSON, TEXT],
            body,
        )
        .await;
    assert_api_error(&types, StatusCode::BAD_REQUEST, "DUPLICATE_HEADER");
    // And on the append path, which the connection answers without the router.
    server
        .call(
            "PUT",
            "/v1/stream/s",
            Some(&server.admin),
            &[TEXT],
            Bytes::new(),
        )
        .await;
    let seqs = server
        .call(
            "POST",
            "/v1/stream/s",
            Some(&server.admin),
            &[TEXT, ("stream-seq", "b"), ("stream-seq", "a")],
            "x",
        )
        .await;
    assert_api_error(&seqs, StatusCode::BAD_REQUEST, "DUPLICATE_HEADER");
    let read = server.get("/v1/stream/s?offset=-1", &server.admin).await;
    assert_eq!(read.body, Bytes::new(), "nothing was appended");
    server.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = start(|_| {}).await;
    for scheme in ["BEARER", "bearer", "Bearer"] {
        let value = format!("{scheme} {}", server.admin);
        let me = server
            .call(
                "GET",
                "/v1/whoami",
                None,
                &[("authorization", &value)],
                Bytes::new(),
            )
            .await;
        assert_eq!(me.status, StatusCode::OK, "{scheme}: {me:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn json_appends_nested_past_the_bound_are_refused() {
    let server = start(|_| {}).await;
    server
        .call(
            "PUT",
            "/v1/stream/j",
            Some(&server.admin),
            &[JSON],
            Bytes::new(),
        )
        .await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let append = server
        .call("POST", "/v1/stream/j", Some(&server.admin), &[JSON], deep)
        .await;
    assert_api_error(&append, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let shallow = server
        .call(
            "POST",
            "/v1/stream/j",
            Some(&server.admin),
            &[JSON],
            "[[[1]]]",
        )
        .await;
    assert_eq!(shallow.status, StatusCode::NO_CONTENT, "{shallow:?}");
    server.stop().await;
}

#[tokio::test]
async fn json_routes_refuse_bodies_that_are_not_json() {
    let server = start(|c| c.auth = AuthMode::Off).await;
    let task = json!({"description": "simple request"}).to_string();
    // What a web page may send anywhere without asking first.
    for headers in [
        vec![TEXT],
        vec![("content-type", "application/x-www-form-urlencoded")],
        vec![],
    ] {
        let made = server
            .call("POST", "/v1/tasks", None, &headers, task.clone())
            .await;
        assert_api_error(
            &made,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        );
    }
    let made = server
        .call("POST", "/v1/tasks", None, &[JSON], task.clone())
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    let id = made.json()["id"].as_str().unwrap().to_string();
    // A body-less action still needs no type; a typed one must be JSON.
    let rebuild = format!("/v1/tasks/{id}/status/rebuild");
    let plain = server
        .call("POST", &rebuild, None, &[TEXT], Bytes::new())
        .await;
    assert_api_error(
        &plain,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
    );
    let bare = server.call("POST", &rebuild, None, &[], Bytes::new()).await;
    assert_eq!(bare.status, StatusCode::OK, "{bare:?}");
    server.stop().await;
}

#[tokio::test]
async fn only_the_stream_routes_allow_other_origins() {
    let server = start(|_| {}).await;
    let tasks = server.get("/v1/tasks", &server.admin).await;
    assert_eq!(tasks.status, StatusCode::OK);
    assert_eq!(tasks.header("access-control-allow-origin"), None);
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
    ];
    let asked = server
        .call("OPTIONS", "/v1/tasks", None, &preflight, Bytes::new())
        .await;
    assert_eq!(
        asked.header("access-control-allow-origin"),
        None,
        "{asked:?}"
    );
    assert!(asked.status.is_client_error(), "{asked:?}");
    let stream = server
        .call("OPTIONS", "/v1/stream/s", None, &preflight, Bytes::new())
        .await;
    assert_eq!(stream.status, StatusCode::NO_CONTENT, "{stream:?}");
    assert_eq!(stream.header("access-control-allow-origin"), Some("*"));
    let read = server.get("/v1/stream/missing", &server.admin).await;
    assert_eq!(read.header("access-control-allow-origin"), Some("*"));
    server.stop().await;
}

#[tokio::test]
async fn without_auth_only_local_names_and_origins_are_answered() {
    let server = start(|c| c.auth = AuthMode::Off).await;
    let rebound = server
        .call(
            "GET",
            "/v1/tasks",
            None,
            &[("host", "evil.example:4437")],
            Bytes::new(),
        )
        .await;
    assert_api_error(
        &rebound,
        StatusCode::MISDIRECTED_REQUEST,
        "HOST_NOT_ALLOWED",
    );
    let page = server
        .call(
            "GET",
            "/v1/tasks",
            None,
            &[("origin", "https://evil.example")],
            Bytes::new(),
        )
        .await;
    assert_api_error(&page, StatusCode::FORBIDDEN, "ORIGIN_NOT_ALLOWED");
    let opaque = server
        .call(
            "GET",
            "/v1/tasks",
            None,
            &[("origin", "null")],
            Bytes::new(),
        )
        .await;
    assert_api_error(&opaque, StatusCode::FORBIDDEN, "ORIGIN_NOT_ALLOWED");
    let appended = server
        .call(
            "POST",
            "/v1/stream/s",
            None,
            &[TEXT, ("host", "evil.example")],
            "x",
        )
        .await;
    assert_api_error(
        &appended,
        StatusCode::MISDIRECTED_REQUEST,
        "HOST_NOT_ALLOWED",
    );
    // Pages of any origin may read streams, as the protocol allows, but not write them.
    let created = server
        .call("PUT", "/v1/stream/s", None, &[TEXT], Bytes::new())
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let foreign = [("origin", "https://evil.example")];
    let read = server
        .call(
            "GET",
            "/v1/stream/s?offset=-1",
            None,
            &foreign,
            Bytes::new(),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{read:?}");
    let written = server
        .call("POST", "/v1/stream/s", None, &[TEXT, foreign[0]], "x")
        .await;
    assert_api_error(&written, StatusCode::FORBIDDEN, "ORIGIN_NOT_ALLOWED");
    let deleted = server
        .call("DELETE", "/v1/stream/s", None, &foreign, Bytes::new())
        .await;
    assert_api_error(&deleted, StatusCode::FORBIDDEN, "ORIGIN_NOT_ALLOWED");
    for host in ["localhost:4437", "127.0.0.1", "[::1]:80"] {
        let local = server
            .call("GET", "/v1/tasks", None, &[("host", host)], Bytes::new())
            .await;
        assert_eq!(local.status, StatusCode::OK, "{host}: {local:?}");
    }
    let local_page = server
        .call(
            "GET",
            "/v1/tasks",
            None,
            &[("origin", "http://localhost:3000")],
            Bytes::new(),
        )
        .await;
    assert_eq!(local_page.status, StatusCode::OK, "{local_page:?}");
    server.stop().await;
}

#[tokio::test]
async fn without_auth_minting_a_token_still_needs_a_token() {
    let server = start(|c| c.auth = AuthMode::Off).await;
    let body = json!({"user": "admin", "role": "admin"});
    let anonymous = server
        .call("POST", "/v1/tokens", None, &[JSON], body.to_string())
        .await;
    assert_api_error(&anonymous, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let minted = server.post("/v1/tokens", &server.admin, body).await;
    assert_eq!(minted.status, StatusCode::CREATED, "{minted:?}");
    server.stop().await;
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_wait_for_a_place() {
    let server = start(|c| {
        c.max_connections = 3;
        c.header_read_timeout = PATIENCE * 4;
    })
    .await;
    // (The support client's pooled connection, if it kept one, holds a place too.)
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(half_sent(&server).await);
    }
    let mut waiting = TcpStream::connect(addr(&server)).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    // Every place is held; a place frees when a held connection closes.
    let mut first = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut first)).await;
    assert!(early.is_err(), "answered past the cap: {early:?}");
    slow.clear();
    let mut answer = String::from_utf8_lossy(&first).into_owned();
    answer.push_str(&read_to_close(&mut waiting).await);
    assert!(answer.contains(" 200 OK"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn half_sent_requests_are_dropped_and_health_still_answers() {
    let server = start(|c| {
        c.max_connections = 4;
        c.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..12 {
        slow.push(half_sent(&server).await);
    }
    let status = health_on_new_connection(&server).await;
    assert!(status.contains(" 200 "), "{status}");
    for tcp in &mut slow {
        let answer = read_to_close(tcp).await;
        assert!(
            !answer.contains(" 200 "),
            "a half-sent request was answered: {answer}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_ends_its_request() {
    let server = start(|c| c.body_read_timeout = Duration::from_millis(300)).await;
    let auth = format!("authorization: Bearer {}\r\n", server.admin);
    server
        .call(
            "PUT",
            "/v1/stream/s",
            Some(&server.admin),
            &[TEXT],
            Bytes::new(),
        )
        .await;
    let heads = [
        // The router, with a known length.
        format!("POST /v1/tasks HTTP/1.1\r\nhost: localhost\r\n{auth}content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"desc"),
        // The append path, with a known length.
        format!("POST /v1/stream/s HTTP/1.1\r\nhost: localhost\r\n{auth}content-type: text/plain\r\ncontent-length: 100\r\n\r\nabc"),
        // A chunked body that never ends.
        format!("POST /v1/stream/s HTTP/1.1\r\nhost: localhost\r\n{auth}content-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n"),
    ];
    for head in heads {
        let mut tcp = TcpStream::connect(addr(&server)).await.unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        let answer = read_to_close(&mut tcp).await;
        let status = answer.lines().next().unwrap_or_default();
        assert!(status.contains(" 400 "), "{head}: {answer}");
        assert!(answer.contains("did not arrive"), "{head}: {answer}");
    }
    let read = server.get("/v1/stream/s?offset=-1", &server.admin).await;
    assert_eq!(read.body, Bytes::new(), "nothing was appended");
    server.stop().await;
}

/// Opens a live SSE response on a raw connection and returns it with the response head and
/// what of the body came with it.
async fn open_sse(
    server: &Server,
    path: &str,
    last_event_id: Option<&str>,
) -> (TcpStream, String, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr(server)).await.unwrap();
    let resume = last_event_id.map_or(String::new(), |id| format!("last-event-id: {id}\r\n"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n{resume}\r\n",
        server.admin
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut tcp, &mut seen, "\r\n\r\n").await;
    let end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
    let body = seen.split_off(end + 4);
    (tcp, head, body)
}

/// Reads into `seen` until it holds `needle`, within [`PATIENCE`].
async fn read_until(tcp: &mut TcpStream, seen: &mut Vec<u8>, needle: &str) {
    let read = async {
        while !String::from_utf8_lossy(seen).contains(needle) {
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {needle:?}: {}",
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    };
    if tokio::time::timeout(PATIENCE, read).await.is_err() {
        panic!("no {needle:?} in {}", String::from_utf8_lossy(seen));
    }
}

/// Stream SSE and task SSE deliver live events and resume after `Last-Event-ID`, whether the
/// response takes its socket over or hyper serves it; `sse_takeover` decides which (a
/// taken-over response ends its connection, `connection: close`; hyper's keeps it).
async fn live_sse_delivers_and_resumes(takeover: bool) {
    let s = start(|c| c.sse_takeover = takeover).await;
    let taken_over = |head: &str| head.contains("\r\nconnection: close");

    // A Durable Streams stream.
    let text = [("content-type", "text/plain")];
    let made = s
        .call("PUT", "/v1/stream/feed", Some(&s.admin), &text, "")
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    let append =
        |body: &'static str| s.call("POST", "/v1/stream/feed", Some(&s.admin), &text, body);
    assert_eq!(append("first-message").await.status, StatusCode::NO_CONTENT);
    let path = "/v1/stream/feed?offset=-1&live=sse";
    let (mut tcp, head, mut seen) = open_sse(&s, path, None).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(taken_over(&head), takeover, "{head}");
    read_until(&mut tcp, &mut seen, "first-message").await;
    read_until(&mut tcp, &mut seen, "upToDate").await;
    let after_first = {
        let text = String::from_utf8_lossy(&seen);
        let control = &text[text.find("event: control").unwrap()..];
        let id = control.lines().find_map(|l| l.strip_prefix("id:")).unwrap();
        id.trim().to_string()
    };
    // Live: the append arrives on the open response.
    assert_eq!(
        append("second-message").await.status,
        StatusCode::NO_CONTENT
    );
    read_until(&mut tcp, &mut seen, "second-message").await;
    // Resumed after the first: the second only.
    let (mut resumed, _, mut again) =
        open_sse(&s, "/v1/stream/feed?live=sse", Some(&after_first)).await;
    read_until(&mut resumed, &mut again, "second-message").await;
    assert!(
        !String::from_utf8_lossy(&again).contains("first-message"),
        "{}",
        String::from_utf8_lossy(&again)
    );

    // A task's events.
    let id = s.submit(&s.admin, "watched").await;
    let first = s
        .events(
            &s.admin,
            &id,
            json!([{"type": "log", "data": {"n": "one"}}]),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let after_one = first.json()["next_after"].as_str().unwrap().to_string();
    let path = format!("/v1/tasks/{id}/events?live=sse");
    let (mut tcp, head, mut seen) = open_sse(&s, &path, None).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(taken_over(&head), takeover, "{head}");
    read_until(&mut tcp, &mut seen, "\"one\"").await;
    let second = s
        .events(
            &s.admin,
            &id,
            json!([{"type": "log", "data": {"n": "two"}}]),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
    read_until(&mut tcp, &mut seen, "\"two\"").await;
    let (mut resumed, _, mut again) = open_sse(&s, &path, Some(&after_one)).await;
    read_until(&mut resumed, &mut again, "\"two\"").await;
    assert!(
        !String::from_utf8_lossy(&again).contains("\"one\""),
        "{}",
        String::from_utf8_lossy(&again)
    );
    drop((tcp, resumed));
    s.stop().await;
}

#[tokio::test]
async fn with_sse_takeover_off_hyper_serves_live_sse_and_resume_works() {
    live_sse_delivers_and_resumes(false).await;
}

#[tokio::test]
async fn with_sse_takeover_on_live_sse_leaves_hyper_and_resume_works() {
    live_sse_delivers_and_resumes(true).await;
}

/// The connection cap counts what hyper serves: a live SSE response that took its socket over
/// gives its place back, one that hyper serves (`sse_takeover` off) keeps it.
#[tokio::test]
async fn taken_over_sse_responses_leave_the_connection_cap_and_hyper_served_ones_hold_it() {
    const CAP: usize = 2;
    for takeover in [true, false] {
        let s = start(|c| {
            c.max_connections = CAP;
            c.sse_takeover = takeover;
        })
        .await;
        let text = [("content-type", "text/plain")];
        let made = s
            .call("PUT", "/v1/stream/capped", Some(&s.admin), &text, "")
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
        let path = "/v1/stream/capped?offset=-1&live=sse";
        if takeover {
            // Twice the cap, each answered while the others stay open.
            let mut open = Vec::new();
            for _ in 0..2 * CAP {
                let (tcp, head, _) = open_sse(&s, path, None).await;
                assert!(head.starts_with("http/1.1 200"), "{head}");
                open.push(tcp);
            }
        } else {
            // (The support client's pooled connection, if it kept one, holds a place too.)
            let mut open = Vec::new();
            let mut waiting = None;
            for _ in 0..=CAP {
                let mut tcp = TcpStream::connect(addr(&s)).await.unwrap();
                let request = format!(
                    "GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\r\n",
                    s.admin
                );
                tcp.write_all(request.as_bytes()).await.unwrap();
                let mut first = [0u8; 1];
                let read = tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut first));
                match read.await {
                    Ok(Ok(1)) => open.push(tcp),
                    Ok(other) => panic!("{other:?}"),
                    Err(_) => {
                        waiting = Some(tcp);
                        break;
                    }
                }
            }
            let mut waiting = waiting.expect("hyper's SSE responses left the cap");
            // A place frees when an SSE response's client goes.
            open.clear();
            let mut seen = Vec::new();
            read_until(&mut waiting, &mut seen, " 200 OK").await;
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn the_web_ui_pages_need_no_token_and_forbid_foreign_scripts() {
    let server = start(|_| {}).await;
    for path in ["/", "/tasks/tsk_anything", "/admin", "/login"] {
        let page = server.call("GET", path, None, &[], Bytes::new()).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {page:?}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        let policy = page.header("content-security-policy").unwrap_or_default();
        assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
        assert!(String::from_utf8_lossy(&page.body).contains("/ui/app.js"));
    }
    let script = server
        .call("GET", "/ui/app.js", None, &[], Bytes::new())
        .await;
    assert_eq!(script.status, StatusCode::OK, "{script:?}");
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let etag = script.header("etag").expect("an etag").to_string();
    let again = server
        .call(
            "GET",
            "/ui/app.js",
            None,
            &[("if-none-match", etag.as_str())],
            Bytes::new(),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{again:?}");
    assert!(again.body.is_empty());
    for outside in [
        "/ui/%2e%2e/Cargo.toml",
        "/ui/../src/lib.rs",
        "/ui/index.html",
    ] {
        let r = server.call("GET", outside, None, &[], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{outside}: {r:?}");
    }
    server.stop().await;
}
