//! Live SSE subscribers, shared by the fan-out and idle workloads: opening a subscription on
//! its own connection, and waiting until a crowd of them is certainly listening.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::{Method, Uri};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::target::Target;

/// Counters the subscribers update and the coordinator polls.
#[derive(Default)]
pub struct Progress {
    /// Response headers arrived with status 200.
    pub accepted: AtomicUsize,
    /// The first `control` event arrived: the subscription is certainly live.
    pub ready: AtomicUsize,
    /// Received every message (fan-out only).
    pub finished: AtomicUsize,
    /// Gave up with an error.
    pub failed: AtomicUsize,
}

/// Opens `uri` (a `live=sse` read of a `text/plain` stream) on a new connection, holding a
/// permit of `gate` while connecting: a burst of thousands of connects can overflow a listen
/// backlog and turn into one-second SYN retries. Returns the body to read events from once the
/// server answered `200 text/event-stream`.
pub async fn subscribe(target: &Target, uri: Uri, gate: &Semaphore) -> anyhow::Result<Incoming> {
    let resp = {
        let _permit = gate.acquire().await?;
        let mut conn = target.connect().await?;
        let req = target
            .request(Method::GET, uri)
            .header(ACCEPT, "text/event-stream")
            .body(Full::new(Bytes::new()))?;
        conn.ready().await?;
        conn.send_request(req).await.context("SSE request")?
    };
    anyhow::ensure!(
        resp.status().is_success(),
        "SSE request answered {}",
        resp.status()
    );
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    anyhow::ensure!(
        content_type.starts_with("text/event-stream"),
        "SSE response has Content-Type {content_type:?}"
    );
    anyhow::ensure!(
        resp.headers().get("stream-sse-data-encoding").is_none(),
        "a text/plain stream should not be base64-encoded over SSE"
    );
    Ok(resp.into_body())
}

/// Spawns `count` subscriber tasks made by `spawn` (given each one's index), then waits until
/// they are ready (see [`wait_until_ready`]). Returns their handles and the seconds it took.
pub async fn start<T, F>(
    count: usize,
    spawn: impl Fn(usize) -> F,
    progress: &Progress,
    per_subscriber: Duration,
    notes: &mut Vec<String>,
) -> (Vec<JoinHandle<T>>, f64)
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles = (0..count).map(|i| tokio::spawn(spawn(i))).collect();
    let connect_s = wait_until_ready(progress, count, per_subscriber, notes).await;
    (handles, connect_s)
}

/// Waits until every subscriber has had its first control event (or failed). A server that
/// sends nothing until the first append is given three seconds after every subscriber's
/// response headers arrived. Gives up after 30 s plus `per_subscriber` for each subscriber.
/// Returns the seconds it took; what went wrong is added to `notes`.
pub(crate) async fn wait_until_ready(
    progress: &Progress,
    subscribers: usize,
    per_subscriber: Duration,
    notes: &mut Vec<String>,
) -> f64 {
    let start = Instant::now();
    let give_up = start + Duration::from_secs(30) + per_subscriber * subscribers as u32;
    let mut all_accepted_at: Option<Instant> = None;
    loop {
        let failed = progress.failed.load(Ordering::Relaxed);
        if progress.ready.load(Ordering::Relaxed) + failed >= subscribers {
            break;
        }
        let now = Instant::now();
        if progress.accepted.load(Ordering::Relaxed) + failed >= subscribers {
            let at = *all_accepted_at.get_or_insert(now);
            if now - at > Duration::from_secs(3) {
                notes.push(
                    "not every subscriber got an initial control event; readiness taken from \
                     the response headers"
                        .into(),
                );
                break;
            }
        }
        if now > give_up {
            notes.push(format!(
                "only {} of {subscribers} subscribers were ready after {:.0} s",
                progress.ready.load(Ordering::Relaxed),
                (now - start).as_secs_f64()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed().as_secs_f64()
}
