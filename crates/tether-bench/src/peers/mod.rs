//! The same workloads against the substrates people build durable progress streams on by hand:
//! Redis Streams ([`redis`]) and NATS JetStream ([`nats`]), each through its own client crate.
//!
//! The point is a fair comparison, so every workload keeps the meaning it has for a Durable
//! Streams server (see each module for how its commands map onto it):
//!
//! - `appends`: `--streams` logical streams, `--connections` clients each on its own TCP
//!   connection with exactly one append in flight, round-robin over the streams, latency per
//!   acknowledged append, only answers inside the measured window counted;
//! - `fanout`: one stream, every subscriber on its own connection and live at the tail before
//!   the first append, `seq:nanos;` messages as for SSE, so missing and duplicate deliveries are
//!   counted the same way;
//! - `catchup`: a preloaded stream (not timed) read from the start to the end as fast as the
//!   client can, the count read checked against the count written;
//! - `idle`: many subscribers blocked waiting for new data, and what they cost the server.
//!
//! The report is the same JSON as for Durable Streams servers, with `system` set, so
//! `--summarize` folds these rounds in beside them. `lifecycle` is Tether's task API and has no
//! counterpart here.

pub mod nats;
pub mod redis;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::appends::{self, AppendsConfig, AppendsResult, Tally, Window};
use crate::catchup::{CatchupConfig, CatchupResult};
use crate::fanout::{FanoutConfig, FanoutResult, Progress, SubscriberOutcome};
use crate::idle::{IdleConfig, IdleResult};
use crate::report::{self, Report};
use crate::{memory, BenchArgs, Workload};

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many subscribers may be connecting at once, as for SSE subscribers.
const CONNECT_CONCURRENCY: usize = 64;

/// A system measured through its own client.
pub(crate) trait Peer {
    /// `redis` or `nats`, as stored in the report.
    const SYSTEM: &'static str;
    /// How the server is reached, for the heading.
    fn describe(&self) -> String;
    async fn appends(&self, cfg: &AppendsConfig, run_id: &str) -> anyhow::Result<AppendsResult>;
    async fn fanout(&self, cfg: &FanoutConfig, run_id: &str) -> anyhow::Result<FanoutResult>;
    async fn catchup(&self, cfg: &CatchupConfig, run_id: &str) -> anyhow::Result<CatchupResult>;
    async fn idle(&self, cfg: &IdleConfig, run_id: &str) -> anyhow::Result<IdleResult>;
}

/// Runs the workloads `args` asks for against `peer` and prints them as the Durable Streams
/// path does.
pub(crate) async fn run<P: Peer>(
    peer: &P,
    args: &BenchArgs,
    run_id: &str,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.workload != Workload::Lifecycle && !args.with_lifecycle,
        "the lifecycle workload measures Tether's task API; --system {} has no tasks",
        P::SYSTEM
    );
    let mut report = Report {
        label: args.label.clone(),
        url: args.url.clone(),
        stream_prefix: String::new(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        server_rss_start_kb: args.server_pid.and_then(memory::rss_kb),
        system: Some(P::SYSTEM.into()),
        ..Default::default()
    };
    println!(
        "tether bench: {}{} (run {run_id})",
        peer.describe(),
        args.label
            .as_deref()
            .map(|l| format!(" [{l}]"))
            .unwrap_or_default()
    );
    let wants = |w: Workload| args.workload == w || args.workload == Workload::All;

    if wants(Workload::Appends) {
        for &connections in &args.connections {
            let cfg = AppendsConfig {
                streams: args.streams,
                connections,
                message_size: args.message_size,
                warmup: args.warmup,
                duration: args.duration,
            };
            match peer.appends(&cfg, run_id).await {
                Ok(r) => report.appends.push(r),
                Err(e) => crate::fail(
                    &mut report,
                    format!("appends, {connections} connections"),
                    e,
                ),
            }
        }
        println!("\nappends ({} bytes each)", args.message_size);
        print!("{}", report::appends_table(&report.appends));
    }

    if wants(Workload::Fanout) {
        for &subscribers in &args.subscribers {
            let cfg = FanoutConfig {
                subscribers,
                messages: args.fanout_messages,
                interval: args.fanout_interval,
                drain_timeout: args.drain_timeout,
                connect_concurrency: CONNECT_CONCURRENCY,
                server_pid: args.server_pid,
            };
            match peer.fanout(&cfg, run_id).await {
                Ok(r) => report.fanout.push(r),
                Err(e) => crate::fail(&mut report, format!("fanout, {subscribers} subscribers"), e),
            }
        }
        println!(
            "\nfanout ({} appends, one every {:?})",
            args.fanout_messages, args.fanout_interval
        );
        print!("{}", report::fanout_table(&report.fanout));
    }

    if wants(Workload::Catchup) {
        let cfg = CatchupConfig {
            messages: args.messages,
            message_size: args.message_size,
            batch: args.batch,
            preload_connections: 4,
            stream: args.catchup_stream.clone(),
        };
        match peer.catchup(&cfg, run_id).await {
            Ok(r) => crate::record_catchup(&mut report, "catch-up read from the start", r),
            Err(e) => crate::fail(&mut report, "catchup".into(), e),
        }
    }

    if wants(Workload::Idle) {
        let cfg = IdleConfig {
            subscribers: args.idle_subscribers,
            streams: args.idle_streams,
            connect_concurrency: CONNECT_CONCURRENCY,
            settle: Duration::from_secs(1),
            server_pid: args.server_pid,
        };
        match peer.idle(&cfg, run_id).await {
            Ok(r) => {
                println!("\nidle subscribers waiting at the tail");
                print!("{}", report::idle_table(&r));
                report.idle = Some(r);
            }
            Err(e) => crate::fail(&mut report, "idle".into(), e),
        }
    }
    Ok(report)
}

/// One client of the append workload, on its own connection, with one append in flight.
pub(crate) trait Appender: Send + 'static {
    /// Appends one message to logical stream `stream` and waits for the acknowledgement; `Err`
    /// is the kind of error. A client whose connection broke reconnects on its next call.
    fn append(&mut self, stream: usize) -> impl Future<Output = Result<(), String>> + Send;
}

/// Runs connected clients round-robin over `cfg.streams` streams (each starting at a different
/// one) through the warm-up and the measured window.
pub(crate) async fn drive_appends<A: Appender>(
    cfg: &AppendsConfig,
    clients: Vec<A>,
) -> anyhow::Result<AppendsResult> {
    let window = Window::after_warmup(cfg);
    let streams = cfg.streams;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(first, mut client)| {
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut next = first;
                while window.is_open() {
                    let sent = Instant::now();
                    let outcome = client.append(next % streams).await;
                    tally.record(&window, sent, outcome);
                    next += 1;
                }
                tally
            })
        })
        .collect();
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in tasks {
        tallies.push(task.await.context("append task panicked")?);
    }
    Ok(appends::summarize(cfg, tallies))
}

/// Checks the append workload's configuration, as the Durable Streams path does.
fn check_appends(cfg: &AppendsConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        cfg.streams > 0 && cfg.connections > 0,
        "need at least one stream and one connection"
    );
    Ok(())
}

/// Checks the fan-out workload's configuration, as the Durable Streams path does.
fn check_fanout(cfg: &FanoutConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        cfg.subscribers > 0 && cfg.messages > 0,
        "need at least one subscriber and one message"
    );
    Ok(())
}

/// Ends a fan-out subscriber: an error is kept in its outcome and counted as a failure.
fn end_subscriber(
    mut out: SubscriberOutcome,
    result: anyhow::Result<()>,
    progress: &Progress,
) -> SubscriberOutcome {
    if let Err(e) = result {
        out.error = Some(format!("{e:#}"));
        progress.failed.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// Records one delivery for a fan-out subscriber; returns whether it now has every message.
fn deliver(
    out: &mut SubscriberOutcome,
    payload: &[u8],
    epoch: Instant,
    progress: &Progress,
) -> bool {
    out.receive(payload, epoch.elapsed().as_nanos() as u64);
    if out.is_complete() {
        progress.finished.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    false
}

/// The catch-up message numbered `i`: its index in ten digits, then letters up to `size`
/// bytes, so every message has the same size and a reader could tell them apart.
pub fn catchup_payload(i: usize, size: usize) -> Vec<u8> {
    let mut out = format!("{i:010}").into_bytes();
    out.truncate(size);
    out.extend((out.len()..size).map(|k| b'a' + ((i + k) % 26) as u8));
    out
}

/// Checks the catch-up workload's configuration.
fn check_catchup(cfg: &CatchupConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        cfg.batch > 0,
        "the preload batch must hold at least one message"
    );
    Ok(())
}

/// What a catch-up read counted, turned into the shared result.
struct CatchupRead {
    stream: String,
    preload_s: Option<f64>,
    messages_read: u64,
    bytes_read: u64,
    requests: u64,
    read_s: f64,
}

impl CatchupRead {
    fn result(self, cfg: &CatchupConfig) -> CatchupResult {
        CatchupResult {
            stream: self.stream,
            message_size: cfg.message_size,
            messages_expected: cfg.messages,
            preloaded: self.preload_s.is_some(),
            preload_s: self.preload_s,
            messages_read: self.messages_read,
            bytes_read: self.bytes_read,
            requests: self.requests,
            read_s: self.read_s,
            messages_per_s: self.messages_read as f64 / self.read_s,
            mb_per_s: self.bytes_read as f64 / 1e6 / self.read_s,
            verified: self.messages_read == cfg.messages as u64,
        }
    }
}

/// One preload connection: appends the catch-up messages numbered `range`, pipelined.
pub(crate) trait Preloader {
    async fn send(&mut self, range: std::ops::Range<usize>) -> anyhow::Result<()>;
}

/// Preloads every batch of `cfg.batch` messages over `cfg.preload_connections` connections
/// made by `connect`, each taking the next batch when done with one.
async fn preload_in_batches<P, F>(
    cfg: &CatchupConfig,
    connect: impl Fn() -> F,
) -> anyhow::Result<()>
where
    P: Preloader,
    F: Future<Output = anyhow::Result<P>>,
{
    let batches = cfg.messages.div_ceil(cfg.batch);
    let next_batch = AtomicUsize::new(0);
    futures::future::try_join_all((0..cfg.preload_connections.max(1)).map(|_| async {
        let mut preloader = connect().await?;
        loop {
            let b = next_batch.fetch_add(1, Ordering::Relaxed);
            if b >= batches {
                return anyhow::Ok(());
            }
            let first = b * cfg.batch;
            preloader
                .send(first..(first + cfg.batch).min(cfg.messages))
                .await?;
        }
    }))
    .await
    .context("preloading the catch-up stream")?;
    Ok(())
}

/// Counters of the idle workload's subscribers.
#[derive(Default)]
struct IdleProgress {
    /// Connected and subscribed (as far as the client can tell).
    subscribed: AtomicUsize,
    failed: AtomicUsize,
    /// The first failure, to explain a shortfall.
    first_error: std::sync::Mutex<Option<String>>,
}

impl IdleProgress {
    fn fail(&self, e: anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| format!("{e:#}"));
        }
    }

    /// Tells on stderr why fewer subscribers than asked for were waiting.
    fn report_shortfall(&self, cfg: &IdleConfig, waiting: usize) {
        let failed = self.failed.load(Ordering::Relaxed);
        if waiting < cfg.subscribers {
            let first = self
                .first_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_else(|| "no error reported".into());
            eprintln!(
                "idle: only {waiting} of {} subscribers were waiting; {failed} failed, the first: {first}",
                cfg.subscribers
            );
        }
    }
}

/// How many idle subscribers the server holds as waiting.
pub(crate) trait Waiting {
    async fn count(&mut self) -> usize;
}

/// Waits until `waiting` counts every subscriber that has not failed, polling every 10 ms up
/// to a deadline that grows with their number; lets the server settle; then samples its memory
/// and counts them once more.
async fn measure_idle(
    cfg: &IdleConfig,
    progress: &IdleProgress,
    rss_before_kb: Option<u64>,
    mut waiting: impl Waiting,
) -> IdleResult {
    let deadline = Instant::now()
        + Duration::from_secs(60)
        + Duration::from_millis(10 * cfg.subscribers as u64);
    while waiting.count().await + progress.failed.load(Ordering::Relaxed) < cfg.subscribers
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(cfg.settle).await;
    let rss_with_subscribers_kb = cfg.server_pid.and_then(memory::rss_kb);
    let connected = waiting.count().await.min(cfg.subscribers);
    progress.report_shortfall(cfg, connected);
    IdleResult {
        subscribers: cfg.subscribers,
        streams: cfg.streams,
        connected,
        rss_before_kb,
        rss_with_subscribers_kb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catchup_payloads_have_the_exact_size_and_start_with_their_index() {
        let p = catchup_payload(42, 256);
        assert_eq!(p.len(), 256);
        assert!(p.starts_with(b"0000000042"));
        assert!(p[10..].iter().all(u8::is_ascii_lowercase));
        assert_eq!(catchup_payload(7, 4), b"0000");
        assert_eq!(catchup_payload(123_456_789_012, 12).len(), 12);
    }
}
