//! The durable-append workload: many clients, each on its own keep-alive connection, POSTing
//! small bodies to a set of streams as fast as the server acknowledges them.
//!
//! Every connection has at most one request in flight, so throughput is bounded by how well
//! the server batches concurrent appends into one disk sync (group commit); with one sync per
//! append a 2-core machine cannot pass a few thousand per second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Uri};
use serde::{Deserialize, Serialize};

use crate::peers::{drive_appends, reconnect, Appender};
use crate::stats::LatencySummary;
use crate::target::{create_many, delete_many, send, Conn, Target};

#[derive(Debug, Clone)]
pub struct AppendsConfig {
    pub streams: usize,
    pub connections: usize,
    pub message_size: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

impl AppendsConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.streams > 0 && self.connections > 0,
            "need at least one stream and one connection"
        );
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppendsResult {
    pub connections: usize,
    pub streams: usize,
    pub message_size: usize,
    pub duration_s: f64,
    /// 2xx answers completed inside the measured window.
    pub ok: u64,
    /// Non-2xx answers and connection failures inside the measured window.
    pub errors: u64,
    /// `errors` by kind: the status code, or the connection error.
    pub error_kinds: BTreeMap<String, u64>,
    pub appends_per_s: f64,
    pub latency: LatencySummary,
}

/// The measured window: only answers that arrive inside it count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    /// A window that opens after the warm-up, starting now.
    pub fn after_warmup(cfg: &AppendsConfig) -> Self {
        let start = Instant::now() + cfg.warmup;
        Self {
            start,
            end: start + cfg.duration,
        }
    }

    pub fn is_open(&self) -> bool {
        Instant::now() < self.end
    }

    fn contains(&self, t: Instant) -> bool {
        t >= self.start && t <= self.end
    }
}

/// What one connection's loop measured.
#[derive(Default)]
pub(crate) struct Tally {
    ok: u64,
    latencies: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    /// Counts one append sent at `sent` and answered now, if the answer falls in the window:
    /// `Ok` when it was acknowledged, else the kind of error.
    pub fn record(&mut self, window: &Window, sent: Instant, outcome: Result<(), String>) {
        let done = Instant::now();
        if !window.contains(done) {
            return;
        }
        match outcome {
            Ok(()) => {
                self.ok += 1;
                self.latencies.push((done - sent).as_nanos() as u64);
            }
            Err(kind) => self.error(kind),
        }
    }

    fn error(&mut self, kind: String) {
        // Distinct connection errors could be many; past a few kinds, fold them together.
        let kind = if self.errors.len() >= 16 && !self.errors.contains_key(&kind) {
            "other".to_string()
        } else {
            kind
        };
        *self.errors.entry(kind).or_default() += 1;
    }
}

/// The streams an appends run writes to, created once and shared by every connection count.
#[derive(Debug, Clone)]
pub struct Streams {
    names: Vec<String>,
    uris: Arc<Vec<Uri>>,
}

impl Streams {
    /// Deletes the streams. Ten thousand streams left behind would cost some servers a file
    /// descriptor each (Electric's keeps every stream's file open), which later workloads and
    /// rounds would run short of.
    pub async fn delete(self, target: &Target) -> anyhow::Result<()> {
        delete_many(target, &self.names).await
    }
}

/// Creates `count` streams for the appends runs of this bench run.
pub async fn create_streams(
    target: &Target,
    count: usize,
    run_id: &str,
) -> anyhow::Result<Streams> {
    anyhow::ensure!(count > 0, "need at least one stream");
    let names: Vec<String> = (0..count)
        .map(|i| format!("bench-{run_id}-append-s{count}-{i}"))
        .collect();
    create_many(target, &names, "application/octet-stream")
        .await
        .context("creating the append streams")?;
    let uris = names
        .iter()
        .map(|n| target.stream_path(n).parse())
        .collect::<Result<_, _>>()?;
    Ok(Streams {
        names,
        uris: Arc::new(uris),
    })
}

pub async fn run(
    target: &Target,
    cfg: &AppendsConfig,
    streams: &Streams,
) -> anyhow::Result<AppendsResult> {
    cfg.check()?;
    anyhow::ensure!(
        streams.uris.len() == cfg.streams,
        "{} streams were created for a run over {}",
        streams.uris.len(),
        cfg.streams
    );
    let uris = streams.uris.clone();

    // Connect everyone before the clock starts, so the warm-up measures appends, not connects.
    let conns = futures::future::try_join_all((0..cfg.connections).map(|_| target.connect()))
        .await
        .context("opening the append connections")?;
    let body = Bytes::from(vec![b'x'; cfg.message_size]);
    let clients = conns
        .into_iter()
        .map(|conn| HttpAppender {
            target: target.clone(),
            conn: Some(conn),
            uris: uris.clone(),
            body: body.clone(),
        })
        .collect();
    drive_appends(cfg, clients).await
}

/// One append client of a Durable Streams server: POSTs on its own keep-alive connection, and
/// after a connection error opens a new one on its next append.
struct HttpAppender {
    target: Target,
    conn: Option<Conn>,
    uris: Arc<Vec<Uri>>,
    body: Bytes,
}

impl Appender for HttpAppender {
    async fn append(&mut self, stream: usize) -> Result<(), String> {
        let target = &self.target;
        let conn = reconnect(&mut self.conn, || target.connect()).await?;
        let req = self
            .target
            .request(Method::POST, self.uris[stream].clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(self.body.clone()))
            .map_err(|e| format!("building request: {e}"))?;
        match send(conn, req).await {
            Ok(resp) if resp.status.is_success() => Ok(()),
            Ok(resp) => Err(resp.status.as_u16().to_string()),
            Err(e) => {
                self.conn = None;
                Err(format!("{e:#}"))
            }
        }
    }
}

/// Adds up the connections' tallies.
pub(crate) fn summarize(cfg: &AppendsConfig, tallies: Vec<Tally>) -> AppendsResult {
    let mut latencies = Vec::new();
    let mut total = Tally::default();
    for tally in tallies {
        total.ok += tally.ok;
        latencies.extend(tally.latencies);
        for (kind, n) in tally.errors {
            *total.errors.entry(kind).or_default() += n;
        }
    }
    let errors = total.errors.values().sum();
    AppendsResult {
        connections: cfg.connections,
        streams: cfg.streams,
        message_size: cfg.message_size,
        duration_s: cfg.duration.as_secs_f64(),
        ok: total.ok,
        errors,
        error_kinds: total.errors,
        appends_per_s: total.ok as f64 / cfg.duration.as_secs_f64(),
        latency: LatencySummary::from_nanos(&mut latencies),
    }
}
