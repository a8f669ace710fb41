//! Memory of a server holding many idle live subscribers: what each waiting reader costs.
//!
//! The subscribers connect, reach the tail and then wait; nothing is appended while the
//! server's resident memory is sampled, so the figure is the price of the connections and the
//! server's per-subscriber state, not of traffic.
//!
//! Each subscriber is an SSE read (`live=sse`) from the tail of one of a set of `text/plain`
//! streams, on its own connection. It counts as waiting once the server answered with
//! `200 text/event-stream`, and as live once its first `control` event (the up-to-date marker)
//! arrived; memory is sampled a moment after every subscriber is live.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Uri;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Semaphore};

use crate::live::{self, Progress};
use crate::memory::{self, Sample};
use crate::sse::SseParser;
use crate::target::{create_many, encode_query_value, Target};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleResult {
    /// Subscribers asked for.
    pub subscribers: usize,
    /// Streams they were spread over (round-robin).
    pub streams: usize,
    /// Subscribers that were connected and waiting when memory was sampled.
    pub connected: usize,
    /// Server RSS just before the subscribers connected.
    pub rss_before_kb: Option<u64>,
    /// Server RSS with all of them connected and waiting.
    pub rss_with_subscribers_kb: Option<u64>,
    /// The anonymous part of `rss_before_kb` (see [`memory::Sample`]).
    #[serde(default)]
    pub anon_before_kb: Option<u64>,
    /// The anonymous part of `rss_with_subscribers_kb`.
    #[serde(default)]
    pub anon_with_subscribers_kb: Option<u64>,
}

impl IdleResult {
    /// How much the server's resident memory grew per thousand waiting subscribers, in MiB
    /// (negative growth, from memory returned meanwhile, is reported as it is).
    pub fn mb_per_1000(&self) -> Option<f64> {
        if self.connected == 0 {
            return None;
        }
        let grown = self.rss_with_subscribers_kb? as f64 - self.rss_before_kb? as f64;
        Some(grown / 1024.0 / self.connected as f64 * 1000.0)
    }
}

/// How long the server may take to return what earlier workloads left before the first
/// memory sample is taken anyway.
const AT_REST_WITHIN: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct IdleConfig {
    pub subscribers: usize,
    pub streams: usize,
    /// How many subscribers may be connecting at once.
    pub connect_concurrency: usize,
    /// How long the server is left alone, every subscriber waiting, before memory is sampled:
    /// long enough for work queued by the connects (buffers, allocator caches) to settle.
    pub settle: Duration,
    pub server_pid: Option<u32>,
}

impl IdleConfig {
    /// What a run of this workload measured: `connected` subscribers were waiting when the
    /// server's memory had gone from `before` to `with`.
    pub fn result(&self, connected: usize, before: Sample, with: Sample) -> IdleResult {
        IdleResult {
            subscribers: self.subscribers,
            streams: self.streams,
            connected,
            rss_before_kb: before.rss_kb,
            rss_with_subscribers_kb: with.rss_kb,
            anon_before_kb: before.anon_kb,
            anon_with_subscribers_kb: with.anon_kb,
        }
    }
}

/// The result, and what the table prints beside it.
pub struct IdleRun {
    pub result: IdleResult,
    /// Time from the first connect until every subscriber was waiting.
    pub connect_s: f64,
    pub notes: Vec<String>,
}

pub async fn run(target: &Target, cfg: &IdleConfig, run_id: &str) -> anyhow::Result<IdleRun> {
    anyhow::ensure!(
        cfg.subscribers > 0 && cfg.streams > 0,
        "need at least one subscriber and one stream"
    );
    let names: Vec<String> = (0..cfg.streams)
        .map(|i| format!("bench-{run_id}-idle-{i}"))
        .collect();
    let offsets = create_many(target, &names, "text/plain")
        .await
        .context("creating the idle streams")?;
    let uris: Vec<Uri> = names
        .iter()
        .zip(&offsets)
        .map(|(name, offset)| {
            let offset = offset.as_deref().unwrap_or("now");
            format!(
                "{}?offset={}&live=sse",
                target.stream_path(name),
                encode_query_value(offset)
            )
            .parse()
        })
        .collect::<Result<_, _>>()?;
    let mut notes = Vec::new();
    if offsets.iter().any(Option::is_none) {
        notes.push("PUT gave no Stream-Next-Offset; subscribed with offset=now".into());
    }

    // A workload run just before (a catch-up read, say) leaves memory that the server returns
    // over the next seconds; sampled in `before`, it made the subscribers look cheaper than
    // they are, or free.
    let before = memory::at_rest(cfg.server_pid, AT_REST_WITHIN).await;
    let progress = Arc::new(Progress::default());
    let waiting = Arc::new(AtomicUsize::new(0));
    let reopened = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let waiter = |i: usize| {
        Waiter {
            target: target.clone(),
            uri: uris[i % uris.len()].clone(),
            progress: progress.clone(),
            waiting: waiting.clone(),
            reopened: reopened.clone(),
            gate: gate.clone(),
            stop: stop_rx.clone(),
        }
        .run()
    };
    let (handles, connect_s) = live::start(
        cfg.subscribers,
        waiter,
        &progress,
        Duration::from_millis(5),
        &mut notes,
    )
    .await;
    tokio::time::sleep(cfg.settle).await;
    let with = memory::sample(cfg.server_pid);
    let connected = waiting.load(Ordering::Relaxed);

    let _ = stop_tx.send(true);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for handle in handles {
        if let Some(e) = handle.await.context("idle subscriber task panicked")? {
            *errors.entry(e).or_default() += 1;
        }
    }
    for (e, n) in errors {
        notes.push(format!("{n} subscribers failed: {e}"));
    }
    match reopened.load(Ordering::Relaxed) {
        0 => {}
        n => notes.push(format!(
            "the server ended {n} SSE responses after a while; they were reopened at the tail"
        )),
    }
    Ok(IdleRun {
        result: cfg.result(connected, before, with),
        connect_s,
        notes,
    })
}

/// One idle subscriber: subscribes at the tail, notes when it is live, then reads whatever the
/// server sends (keep-alives, if any) until told to stop. Servers may end an SSE response after
/// a while (Electric's does after 60 s) for the client to resume from its offset; the subscriber
/// then does what a client does and subscribes again from the same tail, as nothing is appended.
struct Waiter {
    target: Target,
    uri: Uri,
    progress: Arc<Progress>,
    /// Subscribers whose response is open right now.
    waiting: Arc<AtomicUsize>,
    /// Responses the server ended and the subscriber reopened.
    reopened: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

/// How a subscription ended.
enum Ended {
    /// The bench told the subscriber to stop.
    Stopped,
    /// The server ended the response, this long after it was opened.
    ByServer(Duration),
}

/// A response ended sooner than this after it was opened is not a periodic close but a
/// server that cannot hold the subscription: reopening it would only spin.
const SHORTEST_SERVER_CLOSE: Duration = Duration::from_secs(5);

impl Waiter {
    /// Returns the error that ended the subscriber early, if one did.
    async fn run(mut self) -> Option<String> {
        let mut ready = false;
        let mut accepted = false;
        let error = loop {
            if *self.stop.borrow() {
                break None;
            }
            let body = match live::subscribe(&self.target, self.uri.clone(), &self.gate).await {
                Ok(body) => body,
                Err(e) => break Some(format!("{e:#}")),
            };
            if !accepted {
                accepted = true;
                self.progress.accepted.fetch_add(1, Ordering::Relaxed);
            }
            self.waiting.fetch_add(1, Ordering::Relaxed);
            let ended = self.wait(body, &mut ready).await;
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            match ended {
                Ok(Ended::Stopped) => break None,
                Ok(Ended::ByServer(after)) if after >= SHORTEST_SERVER_CLOSE => {
                    self.reopened.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ended::ByServer(after)) => {
                    break Some(format!(
                        "the server ended the SSE response after {:.1} s",
                        after.as_secs_f64()
                    ))
                }
                Err(e) => break Some(format!("{e:#}")),
            }
        };
        if error.is_some() {
            self.progress.failed.fetch_add(1, Ordering::Relaxed);
        }
        error
    }

    async fn wait(&mut self, mut body: Incoming, ready: &mut bool) -> anyhow::Result<Ended> {
        let opened = Instant::now();
        let mut parser = SseParser::new();
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                _ = self.stop.changed() => return Ok(Ended::Stopped),
            };
            let frame = match frame {
                None => return Ok(Ended::ByServer(opened.elapsed())),
                Some(frame) => frame.context("reading the SSE response")?,
            };
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            if !*ready {
                parser.feed(&chunk, |event| *ready |= event.event == b"control");
                if *ready {
                    self.progress.ready.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
