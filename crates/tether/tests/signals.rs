//! Graceful shutdown of the real binary on SIGTERM.

mod common;

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::http::HttpClient;
use common::server::ServerHome;
use common::streams::{append_json, create_json_stream, read_all_json};

/// Reads from a raw connection until `pattern` shows up; false at EOF.
async fn read_until(conn: &mut TcpStream, seen: &mut Vec<u8>, pattern: &[u8]) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        if seen.windows(pattern.len()).any(|w| w == pattern) {
            return true;
        }
        let read = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf))
            .await
            .expect("the connection stalled");
        match read {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn sigterm_ends_live_streams_exits_cleanly_and_keeps_every_acknowledged_append() {
    let mut home = ServerHome::new();
    let server = home.start().await;
    let base = server.base_url().to_string();
    let http = HttpClient::new();
    create_json_stream(&http, &base, "shutdown/s")
        .await
        .unwrap();
    for n in 0..20 {
        let response = append_json(&http, &base, "shutdown/s", &json!({ "n": n }))
            .await
            .unwrap();
        assert!(
            response.status.is_success(),
            "append {n}: {}",
            response.status
        );
    }

    // A live SSE reader, caught up and waiting.
    let addr = base.trim_start_matches("http://").to_string();
    let mut sse = TcpStream::connect(&addr).await.unwrap();
    sse.write_all(
        b"GET /v1/stream/shutdown/s?offset=-1&live=sse HTTP/1.1\r\nhost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    assert!(read_until(&mut sse, &mut seen, b"upToDate").await);

    let status = server.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    // The server ended the live stream rather than leaving it hanging.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), sse.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the SSE connection was closed");

    let server = home.start().await;
    let log = read_all_json(&http, server.base_url(), "shutdown/s")
        .await
        .unwrap();
    let ns: Vec<i64> = log
        .messages
        .iter()
        .map(|m| m["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (0..20).collect::<Vec<_>>());
}
