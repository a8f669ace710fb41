//! An idle live SSE subscriber, of a stream or of a task's events, costs a few kilobytes at
//! most, not an HTTP connection (issue 6).
//!
//! Held by hyper, each one kept a read buffer, a write buffer, a connection task and a copy of
//! the route table, about 40 KB of heap. The live heap is counted by this test binary's
//! allocator, so the check does not depend on the machine's speed: every wait is for data.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tether_server::{open_store, AuthMode, ServerConfig};

/// Bytes allocated and not yet freed, by anyone in this process (server and clients).
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call goes straight to the system allocator; only the counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SUBSCRIBERS: usize = 200;
/// Measured at about 0.2 KB parked with the socket off the reactor (0.5 KB on it, 1.2 KB with
/// a task each; hyper's two buffers alone were 16 KiB, and the connection 40 KB). Electric's
/// server takes about 1 KB.
const MOST_BYTES_PER_SUBSCRIBER: isize = 512;
const PATIENCE: Duration = Duration::from_secs(30);

/// Measured at about 1.4 KB, with a task each and the socket taken over from hyper; held by
/// hyper, with a task and a channel feeding its body, a watcher took about 24 KB.
const MOST_BYTES_PER_TASK_WATCHER: isize = 4096;

#[test]
fn an_idle_live_sse_subscriber_costs_less_than_half_a_kilobyte_not_a_connection() {
    one_at_a_time(|addr| {
        request(addr, "PUT", "/v1/stream/idle", "");
        // The first subscribers warm up what is allocated once (the stream's caches, the
        // runtime's slabs and timer wheel).
        let warm = subscribe(addr, 20);
        wait_parked(addr, 20);
        let before = settled_heap();
        let subscribers = subscribe(addr, SUBSCRIBERS);
        wait_parked(addr, 20 + SUBSCRIBERS);
        let per_subscriber = (settled_heap() - before) / SUBSCRIBERS as isize;
        eprintln!("heap per idle subscriber: {per_subscriber} bytes");
        assert!(
            per_subscriber <= MOST_BYTES_PER_SUBSCRIBER,
            "each idle subscriber holds {per_subscriber} bytes of heap"
        );

        // And they are all live: each one gets the next append.
        request(addr, "POST", "/v1/stream/idle", "marker-7f3a");
        for mut s in warm.into_iter().chain(subscribers) {
            assert!(read_until(&mut s, b"marker-7f3a"), "a subscriber missed it");
        }
    });
}

#[test]
fn an_idle_task_watcher_costs_a_few_kilobytes_not_a_connection() {
    one_at_a_time(|addr| {
        let made = request(addr, "POST", "/v1/tasks", r#"{"description": "idle"}"#);
        let made: serde_json::Value = serde_json::from_slice(&made).unwrap();
        let id = made["id"].as_str().unwrap().to_string();
        let warm = watch_task(addr, &id, 20);
        let before = settled_heap();
        let watchers = watch_task(addr, &id, SUBSCRIBERS);
        let per_watcher = (settled_heap() - before) / SUBSCRIBERS as isize;
        eprintln!("heap per idle task watcher: {per_watcher} bytes");
        assert!(
            per_watcher <= MOST_BYTES_PER_TASK_WATCHER,
            "each idle task watcher holds {per_watcher} bytes of heap"
        );

        // And they are all live: each one sees the task end, and its response with it.
        request(addr, "DELETE", &format!("/v1/tasks/{id}"), "");
        for mut s in warm.into_iter().chain(watchers) {
            // The server ends the response and closes the connection.
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
            let rest = String::from_utf8_lossy(&rest);
            assert!(rest.contains("task_cancelled"), "a watcher missed the end");
            assert!(
                rest.ends_with("0\r\n\r\n"),
                "a response did not end: {rest}"
            );
        }
    });
}

/// Runs `test` against a server of its own, one test at a time. The heap counter is
/// process-wide and `cargo test` runs a binary's tests on parallel threads, so each test
/// takes its turn with a runtime of its own, shut down before the next test begins.
fn one_at_a_time(test: impl FnOnce(SocketAddr) + Send + 'static) {
    static TURN: Mutex<()> = Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(with_server(test));
    drop(runtime);
}

/// Runs `test` on a blocking thread against a server on SQLite in a temporary directory,
/// then stops the server.
async fn with_server(test: impl FnOnce(SocketAddr) + Send + 'static) {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        auth: AuthMode::Off,
        // Idle subscribers park at once, so the test need not wait the default 250 ms.
        sse_park_after: Duration::ZERO,
        ..ServerConfig::default()
    };
    let stores = open_store(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tether_server::serve(config, listener, stores, async {
        let _ = stopped.await;
    }));
    tokio::task::spawn_blocking(move || test(addr))
        .await
        .unwrap();
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// Opens `n` live SSE watchers of task `id`, each past the task's first event.
fn watch_task(addr: SocketAddr, id: &str, n: usize) -> Vec<TcpStream> {
    // The end of the first event's frame.
    open_sse(
        addr,
        &format!("/v1/tasks/{id}/events?live=sse"),
        b"}\n\n",
        n,
    )
}

/// Opens `n` live SSE subscribers at the tail of the stream, each past its first event.
fn subscribe(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    open_sse(addr, "/v1/stream/idle?offset=now&live=sse", b"upToDate", n)
}

/// Opens `n` SSE responses from `target`, each read until `first` arrived.
fn open_sse(addr: SocketAddr, target: &str, first: &[u8], n: usize) -> Vec<TcpStream> {
    let head = format!("GET {target} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        assert!(read_until(&mut s, first), "no first event from {target}");
        all.push(s);
    }
    all
}

/// Sends one request with a body (JSON for `/v1/tasks`, text otherwise) and returns the
/// response's body; fails the test unless it succeeded.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let content_type = if path.starts_with("/v1/tasks") {
        "application/json"
    } else {
        "text/plain"
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: {content_type}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 20"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |at| at + 4);
    response.split_off(at)
}

/// The live heap once the last `/metrics` request's connection is freed on the server's side,
/// which may happen just after the client read the response: the lowest of a few samples.
fn settled_heap() -> isize {
    (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            LIVE.load(Ordering::SeqCst)
        })
        .min()
        .unwrap()
}

/// Waits until `n` subscribers are parked without a task, as `/metrics` tells.
fn wait_parked(addr: SocketAddr, n: usize) {
    let deadline = std::time::Instant::now() + PATIENCE;
    let gauge = format!("tether_sse_parked_subscribers {n}\n");
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut response = Vec::new();
        s.read_to_end(&mut response).unwrap();
        if String::from_utf8_lossy(&response).contains(&gauge) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} subscribers never parked"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_until(s: &mut TcpStream, needle: &[u8]) -> bool {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}
