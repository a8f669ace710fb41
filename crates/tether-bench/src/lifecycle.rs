//! The task-lifecycle workload (Tether only): many workers, each on its own connection,
//! repeatedly submit a task, claim one, append its events in batches and finish it, as fast
//! as the server lets them. It measures the control plane's transactions (admission, leases,
//! fenced appends, the terminal event) rather than raw appends.
//!
//! Run it against `tether serve --auth off --max-concurrent N` with N at least the number
//! of workers: every task belongs to the same built-in admin, and admission would otherwise
//! hold all but N of them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::CONTENT_TYPE;
use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::stats::LatencySummary;
use crate::target::{send, Conn, Target};

#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    pub workers: usize,
    pub events_per_task: usize,
    pub events_per_batch: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LifecycleResult {
    pub workers: usize,
    pub events_per_task: usize,
    pub events_per_batch: usize,
    pub duration_s: f64,
    /// Tasks taken from submit to a finished (COMPLETED) answer inside the window.
    pub tasks: u64,
    pub tasks_per_s: f64,
    /// Requests per task: submit, claim, the event batches, finish.
    pub requests_per_task: usize,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Submit to finish, per task.
    pub latency: LatencySummary,
}

#[derive(Default)]
struct Tally {
    tasks: u64,
    latencies: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

pub async fn run(target: &Target, cfg: &LifecycleConfig) -> anyhow::Result<LifecycleResult> {
    anyhow::ensure!(
        cfg.workers > 0 && cfg.events_per_batch > 0,
        "need at least one worker and one event per batch"
    );
    let conns = futures::future::try_join_all((0..cfg.workers).map(|_| target.connect()))
        .await
        .context("opening the worker connections")?;
    let start = Instant::now();
    let window_start = start + cfg.warmup;
    let window_end = window_start + cfg.duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let target = target.clone();
            let cfg = cfg.clone();
            tokio::spawn(async move {
                worker_loop(target, conn, i, cfg, window_start, window_end).await
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.context("worker task panicked")?;
        total.tasks += tally.tasks;
        total.latencies.extend(tally.latencies);
        for (kind, n) in tally.errors {
            *total.errors.entry(kind).or_default() += n;
        }
    }
    let batches = cfg.events_per_task.div_ceil(cfg.events_per_batch);
    Ok(LifecycleResult {
        workers: cfg.workers,
        events_per_task: cfg.events_per_task,
        events_per_batch: cfg.events_per_batch,
        duration_s: cfg.duration.as_secs_f64(),
        tasks: total.tasks,
        tasks_per_s: total.tasks as f64 / cfg.duration.as_secs_f64(),
        requests_per_task: 3 + batches,
        errors: total.errors.values().sum(),
        error_kinds: total.errors,
        latency: LatencySummary::from_nanos(&mut total.latencies),
    })
}

async fn post(
    target: &Target,
    conn: &mut Conn,
    route: &str,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let req = target
        .request(Method::POST, target.api_path(route))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let resp = send(conn, req).await?;
    let status = resp.status.as_u16();
    if !resp.status.is_success() {
        anyhow::bail!("{route}: {}", resp.describe());
    }
    let value = if resp.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&resp.body).context("answer is not JSON")?
    };
    Ok((status, value))
}

/// One task's life; returns false when the claim found nothing to do.
async fn one_task(
    target: &Target,
    conn: &mut Conn,
    worker: &str,
    cfg: &LifecycleConfig,
) -> anyhow::Result<bool> {
    post(
        target,
        conn,
        "/v1/tasks",
        json!({"description": "lifecycle benchmark"}),
    )
    .await?;
    let (status, claimed) = post(
        target,
        conn,
        "/v1/worker/claim",
        json!({"worker": worker, "wait_ms": 1000}),
    )
    .await?;
    if status == 204 {
        return Ok(false);
    }
    let id = claimed["task"]["id"]
        .as_str()
        .context("claim without a task id")?
        .to_string();
    let lease = claimed["lease"]["id"]
        .as_str()
        .context("claim without a lease")?
        .to_string();
    let mut sent = 0;
    let mut turn = 0;
    while sent < cfg.events_per_task {
        let n = cfg.events_per_batch.min(cfg.events_per_task - sent);
        let events: Vec<Value> = (0..n)
            .map(|_| {
                turn += 1;
                json!({"type": "agent_turn", "data": {"turn": turn, "text": "x".repeat(100)}})
            })
            .collect();
        post(
            target,
            conn,
            &format!("/v1/worker/tasks/{id}/events"),
            json!({"lease": lease, "events": events}),
        )
        .await?;
        sent += n;
    }
    post(
        target,
        conn,
        &format!("/v1/worker/tasks/{id}/finish"),
        json!({"lease": lease, "outcome": "completed"}),
    )
    .await?;
    Ok(true)
}

async fn worker_loop(
    target: Target,
    mut conn: Conn,
    index: usize,
    cfg: LifecycleConfig,
    window_start: Instant,
    window_end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let worker = format!("bench-{index}");
    while Instant::now() < window_end {
        let began = Instant::now();
        let result = one_task(&target, &mut conn, &worker, &cfg).await;
        let done = Instant::now();
        let counted = done >= window_start && done <= window_end;
        match result {
            Ok(true) if counted => {
                tally.tasks += 1;
                tally.latencies.push((done - began).as_nanos() as u64);
            }
            Ok(_) => {}
            Err(e) => {
                if counted {
                    let kind = format!("{e:#}");
                    let kind = kind.chars().take(120).collect::<String>();
                    *tally.errors.entry(kind).or_default() += 1;
                }
                match target.connect().await {
                    Ok(c) => conn = c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    }
    tally
}
