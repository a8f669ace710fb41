//! The fan-out workload: how long an append takes to reach many live SSE subscribers.
//!
//! One `text/plain` stream, S subscribers each on its own connection, then M appends at a
//! steady pace. Every append carries its sequence number and its send time (nanoseconds since
//! an `Instant` shared with the subscribers, which live in the same process), as `seq:nanos;`.
//! The `;` terminator makes the messages self-delimiting, so it does not matter whether the
//! server sends one SSE event per append or batches several appends into one event.
//!
//! Subscribers start at the stream's tail offset as returned by the server rather than at
//! `offset=now`, so a subscription that the server registers late still receives everything;
//! the sequence numbers then tell exactly which deliveries were missing or repeated.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Uri};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::live;
pub(crate) use crate::live::Progress;
use crate::memory::rss_kb;
use crate::sse::SseParser;
use crate::stats::LatencySummary;
use crate::target::{create_stream, encode_query_value, send, Conn, Target};

/// How much longer than 30 s the subscribers of a run may take to become live, per subscriber.
const PER_SUBSCRIBER: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct FanoutConfig {
    pub subscribers: usize,
    pub messages: usize,
    pub interval: Duration,
    /// How long to wait after the last append for deliveries still in flight.
    pub drain_timeout: Duration,
    /// How many subscribers may be connecting at once (a burst of a thousand connects can
    /// overflow a listen backlog and turn into one-second SYN retries).
    pub connect_concurrency: usize,
    /// When set, the server's resident memory is sampled before and after the subscribers
    /// connect.
    pub server_pid: Option<u32>,
}

impl FanoutConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.subscribers > 0 && self.messages > 0,
            "need at least one subscriber and one message"
        );
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutResult {
    pub subscribers: usize,
    pub messages: usize,
    pub interval_ms: f64,
    /// Subscribers whose connection was accepted with `200 text/event-stream`.
    pub connected: usize,
    /// Time from the first connect until every subscriber was ready.
    pub connect_s: f64,
    /// Appends the server acknowledged; only these are expected at the subscribers.
    pub published: usize,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub missing: u64,
    pub duplicates: u64,
    /// Data that was not a `seq:nanos;` message of this run.
    pub malformed: u64,
    /// Subscribers that failed, by reason.
    pub subscriber_errors: BTreeMap<String, u64>,
    /// Receive time minus send time over all (subscriber, message) pairs.
    pub latency: LatencySummary,
    /// How long the publisher's appends took to be acknowledged while the subscribers listened.
    pub append_latency: LatencySummary,
    pub rss_before_kb: Option<u64>,
    pub rss_connected_kb: Option<u64>,
    pub notes: Vec<String>,
}

/// What one subscriber received.
pub(crate) struct SubscriberOutcome {
    received: Vec<bool>,
    latencies: Vec<u64>,
    duplicates: u64,
    malformed: u64,
    /// Distinct messages received so far.
    distinct: usize,
    /// An unterminated message carried over to the next delivery.
    partial: Vec<u8>,
    pub error: Option<String>,
}

impl SubscriberOutcome {
    pub fn new(messages: usize) -> Self {
        Self {
            received: vec![false; messages],
            latencies: Vec::with_capacity(messages),
            duplicates: 0,
            malformed: 0,
            distinct: 0,
            partial: Vec::new(),
            error: None,
        }
    }

    /// Records the `seq:nanos;` messages in `data`, all received at `now` (nanoseconds since
    /// the shared epoch).
    pub fn receive(&mut self, data: &[u8], now: u64) {
        let Self {
            received,
            latencies,
            duplicates,
            malformed,
            distinct,
            partial,
            ..
        } = self;
        let bad = split_messages(partial, data, |seq, sent| {
            match received.get_mut(seq as usize) {
                Some(seen) if !*seen => {
                    *seen = true;
                    *distinct += 1;
                    latencies.push(now.saturating_sub(sent));
                }
                Some(_) => *duplicates += 1,
                None => *malformed += 1,
            }
        });
        *malformed += bad;
    }

    /// Whether every message has arrived.
    pub fn is_complete(&self) -> bool {
        self.distinct == self.received.len()
    }
}

/// Appends one fan-out message to the stream under test.
pub(crate) trait Publisher {
    /// Appends `body`; `Err` says why it was not acknowledged.
    async fn publish(&mut self, body: Bytes) -> Result<(), String>;
}

/// The subscribers of a run on their way, as [`spawn_subscribers`] hands them to [`measure`].
pub(crate) struct Subscribed {
    /// The clock that stamps the messages, shared with the subscribers.
    pub epoch: Instant,
    pub progress: Arc<Progress>,
    /// Set to `true` to stop subscribers that are still waiting.
    pub stop: watch::Sender<bool>,
    pub handles: Vec<JoinHandle<SubscriberOutcome>>,
    pub rss_before_kb: Option<u64>,
    pub notes: Vec<String>,
}

/// What every subscriber of a run shares with the coordinator.
#[derive(Clone)]
pub(crate) struct Shared {
    pub messages: usize,
    /// The clock that stamps the messages.
    pub epoch: Instant,
    pub progress: Arc<Progress>,
    /// Bounds how many subscribers are connecting at once.
    pub gate: Arc<Semaphore>,
    /// Changes when the coordinator stops the subscribers still waiting.
    pub stop: watch::Receiver<bool>,
}

impl Shared {
    /// Nanoseconds since the epoch: a receive time to compare with the messages' send times.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Records `data` received now; returns whether every message has arrived, and then
    /// counts the subscriber as finished.
    pub fn deliver(&self, out: &mut SubscriberOutcome, data: &[u8]) -> bool {
        out.receive(data, self.now());
        let complete = out.is_complete();
        if complete {
            self.progress.finished.fetch_add(1, Ordering::Relaxed);
        }
        complete
    }
}

/// One subscriber of a system: its own connection, live at the tail.
pub(crate) trait Listener: Send + 'static {
    /// Connects (holding a permit of `shared.gate` meanwhile), counts itself in
    /// `shared.progress`, then records deliveries in `out` until every message has arrived or
    /// `shared.stop` changes.
    fn listen(
        self,
        shared: Shared,
        out: &mut SubscriberOutcome,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

/// Samples the server's memory, then starts `cfg.subscribers` subscribers made by `make`.
pub(crate) fn spawn_subscribers<L: Listener>(
    cfg: &FanoutConfig,
    mut make: impl FnMut() -> L,
) -> Subscribed {
    let rss_before_kb = cfg.server_pid.and_then(rss_kb);
    let (stop, stop_rx) = watch::channel(false);
    let shared = Shared {
        messages: cfg.messages,
        epoch: Instant::now(),
        progress: Arc::new(Progress::default()),
        gate: Arc::new(Semaphore::new(cfg.connect_concurrency.max(1))),
        stop: stop_rx,
    };
    let handles = (0..cfg.subscribers)
        .map(|_| {
            let (listener, shared) = (make(), shared.clone());
            tokio::spawn(async move {
                let mut out = SubscriberOutcome::new(shared.messages);
                let progress = shared.progress.clone();
                if let Err(e) = listener.listen(shared, &mut out).await {
                    out.error = Some(format!("{e:#}"));
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                }
                out
            })
        })
        .collect();
    Subscribed {
        epoch: shared.epoch,
        progress: shared.progress,
        stop,
        handles,
        rss_before_kb,
        notes: Vec::new(),
    }
}

pub async fn run(
    target: &Target,
    cfg: &FanoutConfig,
    run_id: &str,
) -> anyhow::Result<FanoutResult> {
    cfg.check()?;
    let name = format!("bench-{run_id}-fanout-s{}", cfg.subscribers);
    let path = target.stream_path(&name);
    let mut publisher = target.connect().await?;
    let created = create_stream(target, &mut publisher, &name, "text/plain").await?;
    let mut notes = Vec::new();
    let offset = match created.header("stream-next-offset") {
        Some(o) => o.to_string(),
        None => {
            notes.push("PUT gave no Stream-Next-Offset; subscribed with offset=now".into());
            "now".to_string()
        }
    };
    let sse_uri: Uri = format!("{path}?offset={}&live=sse", encode_query_value(&offset)).parse()?;
    let post_uri: Uri = path.parse()?;

    let mut subscribed = spawn_subscribers(cfg, || Subscriber {
        target: target.clone(),
        uri: sse_uri.clone(),
    });
    subscribed.notes.extend(notes);
    let publisher = SsePublisher {
        target: target.clone(),
        conn: publisher,
        uri: post_uri,
    };
    measure(cfg, subscribed, publisher).await
}

/// Posts fan-out messages over one keep-alive connection, reconnecting after a failure.
struct SsePublisher {
    target: Target,
    conn: Conn,
    uri: Uri,
}

impl Publisher for SsePublisher {
    async fn publish(&mut self, body: Bytes) -> Result<(), String> {
        let req = self
            .target
            .request(Method::POST, self.uri.clone())
            .header(CONTENT_TYPE, "text/plain")
            .body(Full::new(body))
            .map_err(|e| format!("building request: {e}"))?;
        match send(&mut self.conn, req).await {
            Ok(resp) if resp.status.is_success() => Ok(()),
            Ok(resp) => Err(resp.describe()),
            Err(e) => {
                if let Ok(conn) = self.target.connect().await {
                    self.conn = conn;
                }
                Err(format!("{e:#}"))
            }
        }
    }
}

/// The part of a fan-out run every system shares, once the subscribers are on their way:
/// wait until they are live, publish at a steady pace, let late deliveries arrive, and count.
pub(crate) async fn measure(
    cfg: &FanoutConfig,
    subscribed: Subscribed,
    mut publisher: impl Publisher,
) -> anyhow::Result<FanoutResult> {
    let Subscribed {
        epoch,
        progress,
        stop,
        handles,
        rss_before_kb,
        mut notes,
    } = subscribed;
    let connect_s =
        live::wait_until_ready(&progress, cfg.subscribers, PER_SUBSCRIBER, &mut notes).await;
    let rss_connected_kb = cfg.server_pid.and_then(rss_kb);

    // Publish at a steady pace. A slow acknowledgement delays the next append rather than
    // causing a burst to catch up.
    let mut published = vec![false; cfg.messages];
    let mut append_latencies = Vec::with_capacity(cfg.messages);
    let mut publish_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for (seq, ok) in published.iter_mut().enumerate() {
        tick.tick().await;
        let sent = epoch.elapsed().as_nanos() as u64;
        match publisher
            .publish(Bytes::from(format!("{seq}:{sent};")))
            .await
        {
            Ok(()) => {
                *ok = true;
                append_latencies.push(epoch.elapsed().as_nanos() as u64 - sent);
            }
            Err(e) => *publish_errors.entry(e).or_default() += 1,
        }
    }
    for (error, n) in publish_errors {
        notes.push(format!("{n} appends failed: {error}"));
    }

    // Let deliveries still in flight arrive, then stop whoever is still waiting.
    let deadline = Instant::now() + cfg.drain_timeout;
    while progress.finished.load(Ordering::Relaxed) + progress.failed.load(Ordering::Relaxed)
        < cfg.subscribers
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(true);

    let mut latencies = Vec::with_capacity(cfg.subscribers * cfg.messages);
    let (mut delivered, mut missing, mut duplicates, mut malformed) = (0u64, 0u64, 0u64, 0u64);
    let mut subscriber_errors: BTreeMap<String, u64> = BTreeMap::new();
    for handle in handles {
        let out = handle.await.context("subscriber task panicked")?;
        for (got, sent) in out.received.iter().zip(&published) {
            match (*got, *sent) {
                (true, _) => delivered += 1,
                (false, true) => missing += 1,
                (false, false) => {}
            }
        }
        duplicates += out.duplicates;
        malformed += out.malformed;
        latencies.extend(out.latencies);
        if let Some(e) = out.error {
            *subscriber_errors.entry(e).or_default() += 1;
        }
    }
    let published_count = published.iter().filter(|p| **p).count();
    Ok(FanoutResult {
        subscribers: cfg.subscribers,
        messages: cfg.messages,
        interval_ms: cfg.interval.as_secs_f64() * 1e3,
        connected: progress.accepted.load(Ordering::Relaxed),
        connect_s,
        published: published_count,
        expected_deliveries: (published_count * cfg.subscribers) as u64,
        delivered,
        missing,
        duplicates,
        malformed,
        subscriber_errors,
        latency: LatencySummary::from_nanos(&mut latencies),
        append_latency: LatencySummary::from_nanos(&mut append_latencies),
        rss_before_kb,
        rss_connected_kb,
        notes,
    })
}

struct Subscriber {
    target: Target,
    uri: Uri,
}

impl Listener for Subscriber {
    async fn listen(self, mut shared: Shared, out: &mut SubscriberOutcome) -> anyhow::Result<()> {
        let mut body = live::subscribe(&self.target, self.uri.clone(), &shared.gate).await?;
        shared.progress.accepted.fetch_add(1, Ordering::Relaxed);

        let mut parser = SseParser::new();
        let mut ready = false;
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                _ = shared.stop.changed() => return Ok(()),
            };
            let frame = match frame {
                None => anyhow::bail!("the server ended the SSE response"),
                Some(frame) => frame.context("reading the SSE response")?,
            };
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            // One clock reading per chunk: every message in it arrived at the same time.
            let now = shared.now();
            let mut became_ready = false;
            parser.feed(&chunk, |event| match event.event {
                b"control" => became_ready = true,
                b"data" => out.receive(event.data, now),
                _ => {}
            });
            if became_ready && !ready {
                ready = true;
                shared.progress.ready.fetch_add(1, Ordering::Relaxed);
            }
            if out.is_complete() {
                shared.progress.finished.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
    }
}

/// Splits the text of a data event into `seq:nanos;` messages, calling `on_message` for each.
/// `partial` carries an unterminated message over to the next event, in case a server splits
/// an append across events. Whitespace (such as the `\n` that joins `data:` lines) is ignored.
/// Returns how many terminated messages could not be parsed.
pub fn split_messages(
    partial: &mut Vec<u8>,
    data: &[u8],
    mut on_message: impl FnMut(u64, u64),
) -> u64 {
    let mut malformed = 0;
    for &b in data {
        match b {
            b';' => {
                match parse_message(partial) {
                    Some((seq, sent)) => on_message(seq, sent),
                    None => malformed += 1,
                }
                partial.clear();
            }
            b'\n' | b'\r' | b' ' => {}
            _ => partial.push(b),
        }
    }
    malformed
}

fn parse_message(text: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(text).ok()?;
    let (seq, sent) = text.split_once(':')?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(events: &[&[u8]]) -> (Vec<(u64, u64)>, u64) {
        let mut partial = Vec::new();
        let mut got = Vec::new();
        let mut malformed = 0;
        for data in events {
            malformed += split_messages(&mut partial, data, |s, t| got.push((s, t)));
        }
        (got, malformed)
    }

    #[test]
    fn batched_messages_in_one_event_are_all_found() {
        assert_eq!(
            split_all(&[b"0:100;1:250;\n2:300;"]),
            (vec![(0, 100), (1, 250), (2, 300)], 0)
        );
    }

    #[test]
    fn a_message_split_across_events_is_joined() {
        assert_eq!(split_all(&[b"7:12", b"34;"]), (vec![(7, 1234)], 0));
    }

    #[test]
    fn an_outcome_counts_each_message_once_and_repeats_as_duplicates() {
        let mut out = SubscriberOutcome::new(3);
        out.receive(b"0:100;1:1", 150);
        out.receive(b"50;", 400);
        assert!(!out.is_complete());
        out.receive(b"1:150;2:300;7:1;", 500);
        assert!(out.is_complete());
        assert_eq!(out.received, vec![true; 3]);
        assert_eq!(out.latencies, vec![50, 250, 200]);
        assert_eq!(
            (out.duplicates, out.malformed),
            (1, 1),
            "seq 1 twice, seq 7 of no run"
        );
    }

    #[test]
    fn garbage_is_counted_as_malformed() {
        assert_eq!(
            split_all(&[b"hello;3:x;4:5;"]),
            (vec![(4, 5)], 2),
            "two bad messages and one good"
        );
    }
}
