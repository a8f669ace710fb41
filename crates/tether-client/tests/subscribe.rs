//! The subscription against a scripted fake server: connections that break mid-frame, 503s,
//! a proxy that answers without streaming, and a 404. The fake serves a fixed log of six
//! events (the last one terminal) and follows each request's `after` cursor, so whatever the
//! client delivers can be checked against the log.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tether_client::{Client, Error, Item};
use tether_types::{Offset, TaskId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LOG_LEN: u64 = 6;

/// What the fake does with the next SSE request.
#[derive(Clone, Copy, Debug)]
enum Sse {
    /// Sends `n` whole frames and half of the next, then drops the connection.
    BreakAfter(usize),
    /// Sends `n` whole frames and ends the response cleanly, before the terminal event.
    EndAfter(usize),
    /// 503 with an error body.
    Unavailable,
    /// 200 `application/json`, as a buffering proxy might.
    NotAStream,
    /// 404 `TASK_NOT_FOUND`.
    NotFound,
}

#[derive(Default)]
struct Fake {
    /// Scripted SSE answers, in order; when empty, SSE requests get every remaining event.
    script: VecDeque<Sse>,
    /// `path?query` of every request, in order.
    requests: Vec<String>,
}

fn event_json(position: u64) -> serde_json::Value {
    let kind = if position == LOG_LEN {
        "task_cancelled"
    } else {
        "log"
    };
    json!({"offset": Offset(position).to_string(), "type": kind, "data": {"n": position}})
}

fn query_param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn after_of(target: &str) -> u64 {
    query_param(target, "after").map_or(0, |a| a.parse::<Offset>().unwrap().0)
}

async fn start(script: Vec<Sse>) -> (String, Arc<Mutex<Fake>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fake = Arc::new(Mutex::new(Fake {
        script: script.into(),
        requests: Vec::new(),
    }));
    let shared = fake.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(socket, shared.clone()));
        }
    });
    (url, fake)
}

async fn serve(mut socket: TcpStream, fake: Arc<Mutex<Fake>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split(' ').nth(1).unwrap_or("").to_string();
    let after = after_of(&target);
    let live = query_param(&target, "live").map(str::to_string);
    let step = {
        let mut fake = fake.lock().unwrap();
        fake.requests.push(target.clone());
        match live.as_deref() {
            Some("sse") => fake.script.pop_front(),
            _ => None,
        }
    };
    let _ = match (live.as_deref(), step) {
        (Some("sse"), Some(Sse::BreakAfter(n))) => {
            let mut body = String::new();
            for position in (after + 1..=LOG_LEN).take(n) {
                body.push_str(&frame(position));
            }
            body.push_str(&frame(after + n as u64 + 1)[..10]);
            // Chunked, and cut before the last chunk: the client sees a broken body.
            let text = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n",
                body.len()
            );
            socket.write_all(text.as_bytes()).await
        }
        (Some("sse"), Some(Sse::EndAfter(n))) => {
            let body: String = (after + 1..=LOG_LEN).take(n).map(frame).collect();
            respond(&mut socket, 200, "text/event-stream", &body).await
        }
        (Some("sse"), Some(Sse::Unavailable)) => {
            respond(
                &mut socket,
                503,
                "application/json",
                &error_body("UNAVAILABLE"),
            )
            .await
        }
        (Some("sse"), Some(Sse::NotFound)) => {
            respond(
                &mut socket,
                404,
                "application/json",
                &error_body("TASK_NOT_FOUND"),
            )
            .await
        }
        (Some("sse"), Some(Sse::NotAStream)) => {
            respond(&mut socket, 200, "application/json", &page(after, LOG_LEN)).await
        }
        (Some("sse"), None) => {
            let body: String = (after + 1..=LOG_LEN).map(frame).collect();
            let body = format!(": keep-alive\n\n{body}");
            respond(&mut socket, 200, "text/event-stream", &body).await
        }
        (Some("long-poll"), _) => {
            respond(&mut socket, 200, "application/json", &page(after, LOG_LEN)).await
        }
        // A catch-up read after a stream ended early: nothing new yet.
        _ => respond(&mut socket, 200, "application/json", &page(after, after)).await,
    };
}

fn frame(position: u64) -> String {
    format!(
        "id: {}\ndata: {}\n\n",
        Offset(position),
        event_json(position)
    )
}

fn page(after: u64, upto: u64) -> String {
    let data: Vec<_> = (after + 1..=upto).map(event_json).collect();
    json!({
        "data": data,
        "next_after": Offset(upto.max(after)).to_string(),
        "has_more": false,
        "closed": upto == LOG_LEN,
    })
    .to_string()
}

fn error_body(code: &str) -> String {
    json!({"error": {"code": code, "message": "scripted", "request_id": "req-1"}}).to_string()
}

async fn respond(
    socket: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let text = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(text.as_bytes()).await
}

/// Everything the subscription yields, within a bound that only a hang would reach.
async fn collect(url: &str) -> (Vec<u64>, usize, Vec<Item>, Option<Error>) {
    let client = Client::new(url, Some("tk")).unwrap();
    let task = TaskId::from_random(42);
    let mut subscription = client.subscribe(&task, None, true);
    let mut offsets = Vec::new();
    let mut reconnects = 0;
    let mut notices = Vec::new();
    let mut error = None;
    let run = async {
        while let Some(item) = subscription.next().await {
            match item {
                Ok(Item::Event(event)) => offsets.push(event.offset.0),
                Ok(Item::Reconnecting { .. }) => reconnects += 1,
                Ok(other) => notices.push(other),
                Err(e) => error = Some(e),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the subscription ended");
    (offsets, reconnects, notices, error)
}

fn sse_afters(fake: &Mutex<Fake>) -> Vec<u64> {
    let fake = fake.lock().unwrap();
    fake.requests
        .iter()
        .filter(|r| query_param(r, "live") == Some("sse"))
        .map(|r| after_of(r))
        .collect()
}

#[tokio::test]
async fn broken_connections_and_503s_resume_after_the_last_event_delivered_without_repeats() {
    let (url, fake) = start(vec![
        Sse::BreakAfter(2),
        Sse::Unavailable,
        Sse::BreakAfter(1),
        Sse::BreakAfter(0),
        Sse::EndAfter(1),
    ])
    .await;
    let (offsets, reconnects, _, error) = collect(&url).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(offsets, (1..=LOG_LEN).collect::<Vec<_>>());
    assert_eq!(reconnects, 4);
    // The clean end after event 4 is followed by a catch-up read and an immediate reconnect,
    // not a reported outage.
    assert_eq!(sse_afters(&fake), [0, 2, 2, 3, 3, 4]);
    let fake = fake.lock().unwrap();
    assert!(fake.requests.iter().all(|r| r.contains("view=timeline")));
}

#[tokio::test]
async fn an_answer_that_is_not_an_event_stream_switches_to_long_polling_from_the_same_cursor() {
    let (url, fake) = start(vec![Sse::BreakAfter(3), Sse::NotAStream]).await;
    let (offsets, _, notices, error) = collect(&url).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(offsets, (1..=LOG_LEN).collect::<Vec<_>>());
    assert!(matches!(
        notices.as_slice(),
        [Item::FellBackToLongPoll { content_type }] if content_type == "application/json"
    ));
    let fake = fake.lock().unwrap();
    let polls: Vec<u64> = fake
        .requests
        .iter()
        .filter(|r| query_param(r, "live") == Some("long-poll"))
        .map(|r| after_of(r))
        .collect();
    assert_eq!(polls, [3]);
}

#[tokio::test]
async fn a_404_ends_the_subscription_with_the_error_and_is_not_retried() {
    let (url, fake) = start(vec![Sse::NotFound]).await;
    let (offsets, reconnects, _, error) = collect(&url).await;
    assert!(offsets.is_empty());
    assert_eq!(reconnects, 0);
    match error {
        Some(Error::Api { status, code, .. }) => {
            assert_eq!(status, 404);
            assert_eq!(code, "TASK_NOT_FOUND");
        }
        other => panic!("expected a 404 API error, got {other:?}"),
    }
    assert_eq!(fake.lock().unwrap().requests.len(), 1);
}

#[tokio::test]
async fn a_stream_that_delivers_the_terminal_event_ends_without_asking_again() {
    // No script: one SSE answer with everything; the subscription ends at the terminal event
    // without asking again.
    let (url, fake) = start(Vec::new()).await;
    let (offsets, reconnects, _, error) = collect(&url).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(offsets, (1..=LOG_LEN).collect::<Vec<_>>());
    assert_eq!(reconnects, 0);
    assert_eq!(fake.lock().unwrap().requests.len(), 1);
}

#[tokio::test]
async fn any_pattern_of_failures_delivers_each_event_exactly_once_in_order() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("TETHER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (set TETHER_TEST_SEED={seed} to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for case in 0..12 {
        let script: Vec<Sse> = (0..rng.gen_range(0..6))
            .map(|_| match rng.gen_range(0..5) {
                0 => Sse::Unavailable,
                1 | 2 => Sse::BreakAfter(rng.gen_range(0..3)),
                _ => Sse::EndAfter(rng.gen_range(0..3)),
            })
            .collect();
        let (url, fake) = start(script.clone()).await;
        let (offsets, _, _, error) = collect(&url).await;
        assert!(error.is_none(), "case {case} {script:?}: {error:?}");
        assert_eq!(
            offsets,
            (1..=LOG_LEN).collect::<Vec<_>>(),
            "case {case} {script:?}"
        );
        // Every reconnect asked for what came after the last event delivered before it.
        let afters = sse_afters(&fake);
        assert!(
            afters.windows(2).all(|w| w[0] <= w[1]),
            "case {case} {script:?}: cursors went back: {afters:?}"
        );
    }
}
