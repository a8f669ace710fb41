//! The claim loop: up to `concurrency` tasks at once, each with its lease kept, its events
//! sent and its end reported.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tether_types::task::Failure;
use tether_types::worker::{ClaimRequest, Claimed, Finish, Outcome as WireOutcome};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::retry::{retry, worker_backoff};
use super::run::{Outcome, TaskRun};
use super::sender::EventSender;
use super::stop::{Stop, StopSignal};
use super::{lease, Runner, TaskError};
use crate::{Client, Error};

/// How a worker claims and how it stops.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Shown in the server's logs and the `task_started` event.
    pub name: String,
    /// Most tasks run at once.
    pub concurrency: usize,
    /// How long one claim waits on the server for a task.
    pub claim_wait: Duration,
    /// On shutdown, how long running tasks may go on before they are stopped (and left to
    /// the reconciler: their leases expire and they are retried elsewhere).
    pub drain: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: format!("worker-{}", std::process::id()),
            concurrency: 1,
            claim_wait: Duration::from_secs(20),
            drain: Duration::from_secs(10),
        }
    }
}

/// Claims and runs tasks until `shutdown` resolves, then lets running tasks finish for up to
/// `config.drain` and stops the rest. Returns early only when the server refuses the worker
/// (a bad token, no permission): no amount of retrying fixes that.
pub async fn run_worker(
    client: Client,
    config: WorkerConfig,
    runner: Arc<dyn Runner>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut running: JoinSet<()> = JoinSet::new();
    let mut stops: Vec<StopSignal> = Vec::new();
    let mut backoff = worker_backoff();
    let request = ClaimRequest {
        worker: config.name.clone(),
        wait_ms: Some(u64::try_from(config.claim_wait.as_millis()).unwrap_or(u64::MAX)),
    };
    tokio::pin!(shutdown);
    let result = loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            Some(joined) = running.join_next(), if !running.is_empty() => {
                log_panic(joined);
                continue;
            }
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break Ok(()),
            },
        };
        let claimed = tokio::select! {
            // A claim dropped here may still be granted; its lease then expires unheld and
            // the task is retried.
            _ = &mut shutdown => break Ok(()),
            claimed = client.claim(&request) => claimed,
        };
        match claimed {
            Ok(Some(claimed)) => {
                backoff.reset();
                let stop = StopSignal::new();
                stops.retain(|s| s.get().is_none());
                stops.push(stop.clone());
                let (client, runner) = (client.clone(), runner.clone());
                running.spawn(async move {
                    run_task(client, claimed, runner, stop).await;
                    drop(slot);
                });
            }
            Ok(None) => backoff.reset(),
            Err(error) if error.is_retryable() => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, ?delay, "claiming failed; retrying");
                tokio::select! {
                    _ = &mut shutdown => break Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(error) => break Err(error),
        }
    };
    drain(running, stops, config.drain).await;
    result
}

/// Waits up to `bound` for running tasks, then stops them and waits for their runners.
async fn drain(mut running: JoinSet<()>, stops: Vec<StopSignal>, bound: Duration) {
    if running.is_empty() {
        return;
    }
    tracing::info!(tasks = running.len(), ?bound, "waiting for running tasks");
    let all_done = async {
        while let Some(joined) = running.join_next().await {
            log_panic(joined);
        }
    };
    if tokio::time::timeout(bound, all_done).await.is_ok() {
        return;
    }
    for stop in &stops {
        stop.raise(Stop::Shutdown);
    }
    while let Some(joined) = running.join_next().await {
        log_panic(joined);
    }
}

fn log_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined {
        tracing::error!(%error, "a task's runner panicked; its lease will expire");
    }
}

/// One task from claim to finish.
async fn run_task(client: Client, claimed: Claimed, runner: Arc<dyn Runner>, stop: StopSignal) {
    let task = claimed.task.id.clone();
    let lease_id = claimed.lease.id.clone();
    tracing::info!(%task, attempt = claimed.attempt, "claimed a task");
    let events = Arc::new(EventSender::new(
        client.clone(),
        task.clone(),
        lease_id.clone(),
        stop.clone(),
    ));
    let (nudge_tx, nudge_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut helpers = JoinSet::new();
    helpers.spawn(lease::keep(
        client.clone(),
        task.clone(),
        lease_id.clone(),
        claimed.lease.expires_at,
        stop.clone(),
        nudge_tx,
    ));
    helpers.spawn({
        let events = events.clone();
        async move { events.run().await }
    });

    let run = TaskRun::new(
        claimed,
        client.clone(),
        stop.clone(),
        events.clone(),
        nudge_rx,
    );
    let finish = match runner.run(run).await {
        Ok(outcome) => Some(finish_body(&lease_id, outcome)),
        Err(TaskError::Stopped(reason)) => {
            tracing::info!(%task, %reason, "stopped the task's work");
            None
        }
        Err(error) => Some(finish_body(
            &lease_id,
            Outcome::Failed(Failure {
                code: "WORKER_ERROR".into(),
                message: error.to_string(),
            }),
        )),
    };
    if let Some(body) = finish {
        // The lease is still kept while finishing, so a slow server cannot make it expire.
        let finished = async {
            events.flush().await?;
            retry("finishing the task", &stop, || client.finish(&task, &body)).await
        };
        match finished.await {
            Ok(done) => tracing::info!(%task, state = %done.state, "finished the task"),
            Err(error) => tracing::warn!(%task, %error, "could not finish the task"),
        }
    }
    helpers.abort_all();
}

fn finish_body(lease: &str, outcome: Outcome) -> Finish {
    let (outcome, result, error) = match outcome {
        Outcome::Completed(result) => (WireOutcome::Completed, result, None),
        Outcome::Failed(failure) => (WireOutcome::Failed, None, Some(failure)),
    };
    Finish {
        lease: lease.to_string(),
        outcome,
        result,
        error,
    }
}
