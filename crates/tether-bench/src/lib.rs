//! The load generator behind the `tether-bench` binary (`src/main.rs`), kept out of `tether`.
//!
//! It speaks nothing but the public Durable Streams HTTP protocol, so the same load can be
//! pointed at Tether or at any other Durable Streams server by URL, and the figures compared.
//! Four workloads follow DESIGN.md's performance targets:
//!
//! - `appends`: durable appends per second from many concurrent keep-alive connections;
//! - `fanout`: append-to-subscriber latency over SSE with many live subscribers;
//! - `catchup`: replay throughput of a long stream read from the beginning;
//! - `idle`: the server's memory with thousands of live subscribers waiting at the tail.
//!
//! `--summarize` folds the JSON reports of several runs into one Markdown comparison; the
//! script `bench/compare.sh` uses it.

mod appends;
mod catchup;
mod fanout;
mod idle;
mod lifecycle;
mod live;
mod memory;
mod peers;
mod plot;
mod report;
mod sse;
mod stats;
mod summarize;
mod target;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::appends::{AppendsConfig, AppendsResult};
use crate::catchup::{CatchupConfig, CatchupResult};
use crate::fanout::{FanoutConfig, FanoutResult};
use crate::peers::Peer;
use crate::report::{Failure, Report};
use crate::summarize::Series;
use crate::target::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    Appends,
    Fanout,
    Catchup,
    /// Tether's task lifecycle (submit, claim, events, finish); not part of `all`.
    Lifecycle,
    /// Server memory with `--idle-subscribers` live subscribers waiting at the tail; run last.
    Idle,
    All,
}

/// What kind of server is under test. Redis Streams and NATS JetStream are the substrates
/// people build durable progress streams on by hand; the same workloads run against them
/// through their own client crates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// A Durable Streams server over HTTP (Tether, Electric's, the Node reference server).
    Ds,
    /// Redis Streams: XADD, XREAD BLOCK, XRANGE; `--url redis://HOST:PORT`.
    Redis,
    /// NATS JetStream with file storage; `--url nats://HOST:PORT`.
    Nats,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The kind of server under test.
    #[arg(long, value_enum, default_value_t = System::Ds)]
    pub system: System,

    /// Base URL of the Durable Streams server under test (plain http); several URLs separated
    /// by commas are the nodes of one deployment, and connections are spread over them.
    #[arg(long, default_value = "http://127.0.0.1:4437")]
    pub url: String,

    /// Path under which the server serves streams.
    #[arg(long, default_value = "/v1/stream")]
    pub stream_prefix: String,

    #[arg(long, value_enum, default_value_t = Workload::All)]
    pub workload: Workload,

    /// appends: number of streams written round-robin; a comma-separated list runs each value
    /// with each connection count.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub streams: Vec<usize>,

    /// appends: concurrent keep-alive connections; a comma-separated list runs each value.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    pub connections: Vec<usize>,

    /// appends: measured time per connection count.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// appends: unmeasured time before the measured window.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Bytes per message for appends and catch-up.
    #[arg(long, default_value_t = 256)]
    pub message_size: usize,

    /// fanout: live SSE subscribers; a comma-separated list runs each value.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    pub subscribers: Vec<usize>,

    /// fanout: appends sent to the subscribers.
    #[arg(long, default_value_t = 200)]
    pub fanout_messages: usize,

    /// fanout: pause between appends.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    pub fanout_interval: Duration,

    /// fanout: how long to wait for late deliveries after the last append.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// catchup: messages in the stream that is read back.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: usize,

    /// catchup: messages per preload POST (one JSON array).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,

    /// catchup: read this stream if it exists (assumed complete), else create and preload it.
    /// Lets repeated runs against one server skip the preload.
    #[arg(long)]
    pub catchup_stream: Option<String>,

    /// idle: live subscribers that connect, reach the tail and wait.
    #[arg(long, default_value_t = 10_000)]
    pub idle_subscribers: usize,

    /// idle: streams the idle subscribers are spread over, round-robin.
    #[arg(long, default_value_t = 100)]
    pub idle_streams: usize,

    /// With `--workload all`, also run `lifecycle` (for Tether; other servers have no tasks).
    #[arg(long)]
    pub with_lifecycle: bool,

    /// lifecycle: concurrent workers, each submitting and running tasks in a loop.
    #[arg(long, default_value_t = 32)]
    pub workers: usize,

    /// lifecycle: events each task appends.
    #[arg(long, default_value_t = 20)]
    pub events_per_task: usize,

    /// lifecycle: events per append request.
    #[arg(long, default_value_t = 5)]
    pub events_per_batch: usize,

    /// Sample this process's resident memory (the server's, when it runs on this machine).
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// A name for the server under test, stored in the JSON report.
    #[arg(long)]
    pub label: Option<String>,

    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Instead of running load, fold JSON reports into a Markdown comparison. Repeat as
    /// `--summarize Tether=DIR --summarize Electric=DIR ...`; the first is the reference, with
    /// a ratio column first/other for each of the others.
    #[arg(long, value_name = "LABEL=DIR")]
    pub summarize: Vec<String>,

    /// With --summarize: a line of context (versions, settings) listed under the title.
    #[arg(long, value_name = "TEXT")]
    pub context: Vec<String>,

    /// With --summarize: write the Markdown to this file as well as to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// With --summarize: also draw the comparison as a PNG at this path.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

impl BenchArgs {
    /// A report of a run against `system`, before any workload.
    fn new_report(&self, system: &str, stream_prefix: &str) -> Report {
        Report {
            label: self.label.clone(),
            url: self.url.clone(),
            stream_prefix: stream_prefix.to_string(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            server_rss_start_kb: self.server_pid.and_then(memory::rss_kb),
            system: Some(system.into()),
            ..Default::default()
        }
    }

    fn appends_config(&self, streams: usize, connections: usize) -> AppendsConfig {
        AppendsConfig {
            streams,
            connections,
            message_size: self.message_size,
            warmup: self.warmup,
            duration: self.duration,
        }
    }

    fn fanout_config(&self, subscribers: usize) -> FanoutConfig {
        FanoutConfig {
            subscribers,
            messages: self.fanout_messages,
            interval: self.fanout_interval,
            drain_timeout: self.drain_timeout,
            connect_concurrency: 64,
            server_pid: self.server_pid,
        }
    }

    fn catchup_config(&self) -> CatchupConfig {
        CatchupConfig {
            messages: self.messages,
            message_size: self.message_size,
            batch: self.batch,
            preload_connections: 4,
            stream: self.catchup_stream.clone(),
        }
    }

    fn idle_config(&self) -> idle::IdleConfig {
        idle::IdleConfig {
            subscribers: self.idle_subscribers,
            streams: self.idle_streams,
            connect_concurrency: 64,
            settle: Duration::from_secs(1),
            server_pid: self.server_pid,
        }
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !args.summarize.is_empty() {
        return summarize(&args);
    }
    raise_fd_limit(&args);
    let run_id = run_id();
    let report = match args.system {
        System::Ds => run_ds(&args, &run_id).await?,
        System::Redis => peers::run(&peers::redis::Redis::new(&args.url)?, &args, &run_id).await?,
        System::Nats => peers::run(&peers::nats::Nats::new(&args.url)?, &args, &run_id).await?,
    };
    finish(&args, &report)
}

async fn run_ds(args: &BenchArgs, run_id: &str) -> anyhow::Result<Report> {
    let ds = Ds {
        url: &args.url,
        target: Target::new(&args.url, &args.stream_prefix)?,
    };
    let mut report = args.new_report(Ds::SYSTEM, &args.stream_prefix);
    peers::heading(&ds, args, run_id);

    if args.workload == Workload::Lifecycle
        || (args.workload == Workload::All && args.with_lifecycle)
    {
        let cfg = lifecycle::LifecycleConfig {
            workers: args.workers,
            events_per_task: args.events_per_task,
            events_per_batch: args.events_per_batch,
            warmup: args.warmup,
            duration: args.duration,
        };
        match lifecycle::run(&ds.target, &cfg).await {
            Ok(r) => {
                println!(
                    "\ntask lifecycle ({} workers; submit, claim, {} events in batches of {}, finish)",
                    r.workers, r.events_per_task, r.events_per_batch
                );
                print!("{}", report::lifecycle_table(&r));
                report.lifecycle = Some(r);
            }
            Err(e) => fail(&mut report, "lifecycle".into(), e),
        }
    }
    peers::workloads(&ds, args, run_id, &mut report).await;
    Ok(report)
}

/// A Durable Streams server over HTTP: one node, or the nodes of one deployment.
struct Ds<'a> {
    url: &'a str,
    target: Target,
}

impl peers::Peer for Ds<'_> {
    const SYSTEM: &'static str = "ds";

    fn describe(&self) -> String {
        match self.target.nodes() {
            1 => self.url.to_string(),
            n => format!("{} ({n} nodes)", self.url),
        }
    }

    /// Creates the run's streams, appends, then deletes them: ten thousand streams left
    /// behind would cost some servers a file descriptor each (Electric's keeps every stream's
    /// file open), which later runs would run short of.
    async fn appends(&self, cfg: &AppendsConfig, run_id: &str) -> anyhow::Result<AppendsResult> {
        let tag = format!("{run_id}-c{}", cfg.connections);
        let streams = appends::create_streams(&self.target, cfg.streams, &tag).await?;
        let result = appends::run(&self.target, cfg, &streams).await;
        if let Err(e) = streams.delete(&self.target).await {
            eprintln!(
                "warning: deleting the {} append streams: {e:#}",
                cfg.streams
            );
        }
        result
    }

    async fn fanout(&self, cfg: &FanoutConfig, run_id: &str) -> anyhow::Result<FanoutResult> {
        fanout::run(&self.target, cfg, run_id).await
    }

    async fn catchup(&self, cfg: &CatchupConfig, run_id: &str) -> anyhow::Result<CatchupResult> {
        catchup::run(&self.target, cfg, run_id).await
    }

    async fn idle(&self, cfg: &idle::IdleConfig, run_id: &str) -> anyhow::Result<idle::IdleRun> {
        idle::run(&self.target, cfg, run_id).await
    }
}

/// Writes the JSON report if asked, and fails if any workload did.
fn finish(args: &BenchArgs, report: &Report) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {path:?}"))?;
    }
    if !report.failures.is_empty() {
        println!();
        for f in &report.failures {
            println!("FAILED {}: {}", f.workload, f.error);
        }
        anyhow::bail!("{} workload(s) failed", report.failures.len());
    }
    Ok(())
}

/// Prints a catch-up result and keeps it; a count that does not match is a failure.
fn record_catchup(report: &mut Report, heading: &str, r: catchup::CatchupResult) {
    println!("\n{heading}");
    print!("{}", report::catchup_table(&r));
    if !r.verified {
        report.failures.push(Failure {
            workload: "catchup".into(),
            error: format!(
                "read {} messages, expected {}",
                r.messages_read, r.messages_expected
            ),
        });
    }
    report.catchup = Some(r);
}

fn fail(report: &mut Report, workload: String, error: anyhow::Error) {
    eprintln!("{workload}: {error:#}");
    report.failures.push(Failure {
        workload,
        error: format!("{error:#}"),
    });
}

fn summarize(args: &BenchArgs) -> anyhow::Result<()> {
    let series = args
        .summarize
        .iter()
        .map(|s| Series::load(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let page = summarize::markdown(&series, &args.context);
    print!("{page}");
    if let Some(path) = &args.out {
        std::fs::write(path, &page).with_context(|| format!("writing {path:?}"))?;
    }
    if let Some(path) = &args.plot {
        let labels: Vec<String> = series.iter().map(|s| s.label.clone()).collect();
        plot::draw(
            &summarize::rows(&series),
            &labels,
            &summarize::plot_subtitle(&series),
            path,
        )?;
    }
    Ok(())
}

/// Every subscriber and connection is a file descriptor; the usual soft limit of 1024 is too
/// low for a thousand subscribers, so raise it towards the hard limit.
fn raise_fd_limit(args: &BenchArgs) {
    let needed = args
        .subscribers
        .iter()
        .chain(&args.connections)
        .chain([&args.idle_subscribers])
        .max()
        .copied()
        .unwrap_or(0) as u64
        + 64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed => eprintln!(
            "warning: the open-file limit is {limit}, below the {needed} this run may need"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: could not raise the open-file limit: {e}"),
    }
}

/// A short id that keeps the stream names of separate runs against one server apart.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut n = (nanos / 1_000_000) as u64 ^ (u64::from(std::process::id()) << 40);
    let mut id = String::new();
    while n > 0 {
        let digit = (n % 36) as u32;
        id.push(std::char::from_digit(digit, 36).unwrap_or('x'));
        n /= 36;
    }
    id
}
