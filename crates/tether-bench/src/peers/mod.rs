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
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{watch, Semaphore};

use crate::appends::{self, AppendsConfig, AppendsResult, Tally, Window};
use crate::catchup::{CatchupConfig, CatchupResult};
use crate::fanout::{FanoutConfig, FanoutResult};
use crate::idle::{IdleConfig, IdleRun};
use crate::report::{self, Report};
use crate::{memory, BenchArgs, Workload};

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A system measured through its own client.
pub(crate) trait Peer {
    /// `ds`, `redis` or `nats`, as stored in the report.
    const SYSTEM: &'static str;
    /// How the server is reached, for the heading.
    fn describe(&self) -> String;
    async fn appends(&self, cfg: &AppendsConfig, run_id: &str) -> anyhow::Result<AppendsResult>;
    async fn fanout(&self, cfg: &FanoutConfig, run_id: &str) -> anyhow::Result<FanoutResult>;
    async fn catchup(&self, cfg: &CatchupConfig, run_id: &str) -> anyhow::Result<CatchupResult>;
    async fn idle(&self, cfg: &IdleConfig, run_id: &str) -> anyhow::Result<IdleRun>;
}

/// Runs the workloads `args` asks for against `peer` (lifecycle excepted: it is Tether's task
/// API, which these systems do not have).
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
    let mut report = args.new_report(P::SYSTEM, "");
    heading(peer, args, run_id);
    workloads(peer, args, run_id, &mut report).await;
    Ok(report)
}

/// The run's first line: what is measured, under which label.
pub(crate) fn heading<P: Peer>(peer: &P, args: &BenchArgs, run_id: &str) {
    println!(
        "tether-bench: {}{} (run {run_id})",
        peer.describe(),
        args.label
            .as_deref()
            .map(|l| format!(" [{l}]"))
            .unwrap_or_default()
    );
}

/// The workloads every system shares, in the order `all` runs them, each printed as it ends
/// and kept in `report` (a workload that fails is recorded there and the others go on).
pub(crate) async fn workloads<P: Peer>(
    peer: &P,
    args: &BenchArgs,
    run_id: &str,
    report: &mut Report,
) {
    let wants = |w: Workload| args.workload == w || args.workload == Workload::All;

    if wants(Workload::Appends) {
        for &streams in &args.streams {
            for &connections in &args.connections {
                let cfg = args.appends_config(streams, connections);
                match peer.appends(&cfg, run_id).await {
                    Ok(r) => report.appends.push(r),
                    Err(e) => crate::fail(
                        report,
                        format!("appends, {streams} streams, {connections} connections"),
                        e,
                    ),
                }
            }
        }
        println!("\nappends ({} bytes each)", args.message_size);
        print!("{}", report::appends_table(&report.appends));
    }

    if wants(Workload::Fanout) {
        for &subscribers in &args.subscribers {
            match peer.fanout(&args.fanout_config(subscribers), run_id).await {
                Ok(r) => report.fanout.push(r),
                Err(e) => crate::fail(report, format!("fanout, {subscribers} subscribers"), e),
            }
        }
        println!(
            "\nfanout ({} appends, one every {:?})",
            args.fanout_messages, args.fanout_interval
        );
        print!("{}", report::fanout_table(&report.fanout));
    }

    if wants(Workload::Catchup) {
        match peer.catchup(&args.catchup_config(), run_id).await {
            Ok(r) => crate::record_catchup(report, "catch-up read from the start", r),
            Err(e) => crate::fail(report, "catchup".into(), e),
        }
    }

    // Last, so that ten thousand connections coming and going disturb no other workload.
    if wants(Workload::Idle) {
        match peer.idle(&args.idle_config(), run_id).await {
            Ok(run) => {
                println!(
                    "\nidle subscribers waiting at the tail ({} streams)",
                    args.idle_streams
                );
                print!("{}", report::idle_table(&run));
                report.idle = Some(run.result);
            }
            Err(e) => crate::fail(report, "idle".into(), e),
        }
    }
}

/// One client of the append workload, on its own connection, with one append in flight.
pub(crate) trait Appender: Send + 'static {
    /// Appends one message to logical stream `stream` and waits for the acknowledgement; `Err`
    /// is the kind of error. A client whose connection broke reconnects on its next call.
    fn append(&mut self, stream: usize) -> impl Future<Output = Result<(), String>> + Send;
}

/// The client's connection in `slot`, or a new one from `connect` when there is none (as
/// after a connection broke). A failed connect is the append's error, after a pause: a server
/// that is down refuses at once, and its clients must not spin on it.
pub(crate) async fn reconnect<C, F>(
    slot: &mut Option<C>,
    connect: impl FnOnce() -> F,
) -> Result<&mut C, String>
where
    F: Future<Output = anyhow::Result<C>>,
{
    match slot {
        Some(conn) => Ok(conn),
        None => match connect().await {
            Ok(conn) => Ok(slot.insert(conn)),
            Err(e) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                Err(format!("{e:#}"))
            }
        },
    }
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

/// What a catch-up read counted.
#[derive(Default)]
struct ReadCount {
    messages: u64,
    /// Payload bytes.
    bytes: u64,
    requests: u64,
}

/// Times `read` (the whole catch-up read) and fills the shared result.
async fn timed_read(
    cfg: &CatchupConfig,
    stream: String,
    preload_s: Option<f64>,
    read: impl Future<Output = anyhow::Result<ReadCount>>,
) -> anyhow::Result<CatchupResult> {
    let began = Instant::now();
    let count = read.await?;
    let read_s = began.elapsed().as_secs_f64();
    Ok(CatchupResult {
        stream,
        message_size: cfg.message_size,
        messages_expected: cfg.messages,
        preloaded: preload_s.is_some(),
        preload_s,
        messages_read: count.messages,
        bytes_read: count.bytes,
        requests: count.requests,
        read_s,
        messages_per_s: count.messages as f64 / read_s,
        mb_per_s: count.bytes as f64 / 1e6 / read_s,
        verified: count.messages == cfg.messages as u64,
    })
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
pub(crate) struct IdleProgress {
    /// Connected and subscribed (as far as the client can tell).
    pub subscribed: AtomicUsize,
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

    /// Why fewer subscribers than asked for were waiting, if they were.
    fn shortfall(&self, cfg: &IdleConfig, waiting: usize) -> Option<String> {
        if waiting >= cfg.subscribers {
            return None;
        }
        let failed = self.failed.load(Ordering::Relaxed);
        let first = self
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "no error reported".into());
        Some(format!(
            "only {waiting} of {} subscribers were waiting; {failed} failed, the first: {first}",
            cfg.subscribers
        ))
    }
}

/// How many idle subscribers the server holds as waiting.
pub(crate) trait Waiting {
    async fn count(&mut self, progress: &IdleProgress) -> usize;
}

/// An idle subscriber waiting for data: ends only if data or an error comes.
pub(crate) type Wait = futures::future::BoxFuture<'static, anyhow::Result<()>>;

/// Runs the idle workload: `subscribe(i)` connects subscriber `i` on its own connection and
/// subscribes it to stream `i % cfg.streams` (at most `cfg.connect_concurrency` at once), and
/// returns its wait. Once `waiting` counts every subscriber that has not failed (polled every
/// 10 ms up to a deadline that grows with their number) and the server has settled, its memory
/// is sampled and the subscribers are counted once more.
async fn run_idle<F, Fut>(
    cfg: &IdleConfig,
    mut waiting: impl Waiting,
    subscribe: F,
) -> anyhow::Result<IdleRun>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Wait>> + Send + 'static,
{
    anyhow::ensure!(cfg.streams > 0, "need at least one stream");
    let before = memory::sample(cfg.server_pid);
    let progress = Arc::new(IdleProgress::default());
    let (stop, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
    let began = Instant::now();
    let handles: Vec<_> = (0..cfg.subscribers)
        .map(|i| {
            let connect = subscribe(i);
            let (progress, gate, mut stop) = (progress.clone(), gate.clone(), stop_rx.clone());
            tokio::spawn(async move {
                let waited = async {
                    let wait = {
                        let _permit = gate.acquire().await?;
                        connect.await?
                    };
                    progress.subscribed.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        r = wait => r,
                        _ = stop.changed() => Ok(()),
                    }
                };
                if let Err(e) = waited.await {
                    progress.fail(e);
                }
            })
        })
        .collect();

    let deadline = Instant::now()
        + Duration::from_secs(60)
        + Duration::from_millis(10 * cfg.subscribers as u64);
    while waiting.count(&progress).await + progress.failed.load(Ordering::Relaxed) < cfg.subscribers
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect_s = began.elapsed().as_secs_f64();
    tokio::time::sleep(cfg.settle).await;
    let with = memory::sample(cfg.server_pid);
    let connected = waiting.count(&progress).await.min(cfg.subscribers);
    let notes = progress.shortfall(cfg, connected).into_iter().collect();

    let _ = stop.send(true);
    for handle in handles {
        handle.await.context("idle subscriber panicked")?;
    }
    Ok(IdleRun {
        result: cfg.result(connected, before, with),
        connect_s,
        notes,
    })
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
