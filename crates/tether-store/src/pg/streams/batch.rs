//! Group commit for appends: concurrent appends on one node share one transaction.
//!
//! Appends go to one of a few lanes by their stream's path. Each lane takes everything queued
//! on it, runs it as one batch, and goes back for more: while a batch commits, the next one
//! gathers, so the busier the lane the larger its batches. A batch locks its streams' rows in
//! id order (the order every node locks in, so two nodes' batches wait for each other instead
//! of deadlocking), checks and buffers every append, writes them with one multi-row insert,
//! commits once, and only then answers its callers and publishes the new tails. A batch that
//! fails to commit fails every caller in it: nothing is acknowledged that is not committed
//! (G1).
//!
//! Lanes run in parallel, so one slow commit does not stall the node; a stream always goes
//! to the same lane, so this node's batches never queue on each other's row locks (batches
//! that shared streams would mostly wait for each other and stay small).

use std::collections::{BTreeSet, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use deadpool_postgres::Pool;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::tx::StreamWrites;
use super::Shared;
use crate::body::{stored_body, PreparedAppend};
use crate::model::*;
use crate::StoreError;

/// Upper bounds on one batch, which keep one commit's latency bounded.
const MAX_BATCH: usize = 1024;
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Attempts of a batch that hit a deadlock or serialisation failure.
const MAX_ATTEMPTS: usize = 4;

struct Job {
    path: String,
    request: Append,
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

pub(super) struct Batcher {
    lanes: Mutex<Vec<mpsc::UnboundedSender<Job>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Batcher {
    /// Starts `lanes` lanes: at most that many batches run at once.
    pub fn start(pool: Pool, shared: Arc<Shared>, lanes: usize) -> Self {
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..lanes.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            tasks.push(tokio::spawn(lane(rx, pool.clone(), shared.clone())));
        }
        Batcher {
            lanes: Mutex::new(senders),
            tasks: Mutex::new(tasks),
        }
    }

    pub async fn append(&self, path: &str, request: Append) -> Result<Appended, AppendError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            path: path.to_string(),
            request,
            reply,
        };
        let sent = {
            let lanes = self.lanes.lock();
            let mut hasher = DefaultHasher::new();
            path.hash(&mut hasher);
            match lanes.len() {
                0 => false,
                n => lanes[(hasher.finish() % n as u64) as usize]
                    .send(job)
                    .is_ok(),
            }
        };
        if !sent {
            return Err(AppendError::Storage(StoreError::ShutDown));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(AppendError::Storage(StoreError::ShutDown)))
    }

    /// Takes no new appends, and returns once every queued one is answered.
    pub async fn stop(&self) {
        self.lanes.lock().clear();
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// One lane: a batch at a time, of everything queued when the last one finished.
async fn lane(mut rx: mpsc::UnboundedReceiver<Job>, pool: Pool, shared: Arc<Shared>) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.request.body.len();
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.request.body.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        run(&pool, &shared, jobs).await;
    }
}

async fn run(pool: &Pool, shared: &Shared, jobs: Vec<Job>) {
    let mut attempt = 1;
    loop {
        match attempt_batch(pool, &jobs).await {
            Ok((answers, writes)) => {
                writes.publish_to(shared);
                for (job, answer) in jobs.into_iter().zip(answers) {
                    // A caller that went away no longer needs its answer.
                    let _ = job.reply.send(answer);
                }
                return;
            }
            Err(e) if e.is_retryable() && attempt < MAX_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "append batch will be retried");
                attempt += 1;
            }
            Err(e) => {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    appends = jobs.len(),
                    "append batch failed"
                );
                for job in jobs {
                    let _ = job.reply.send(Err(AppendError::Storage(e.clone())));
                }
                return;
            }
        }
    }
}

/// One try at the batch: its answers and what to publish once it is committed, or why it
/// failed and whether trying again may help.
async fn attempt_batch(
    pool: &Pool,
    jobs: &[Job],
) -> Result<(Vec<Result<Appended, AppendError>>, StreamWrites), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut writes = StreamWrites::new();
    let paths: BTreeSet<&str> = jobs.iter().map(|j| j.path.as_str()).collect();
    let paths: Vec<&str> = paths.into_iter().collect();
    let rows = writes.lock_paths(&tx, &paths).await?;
    // Streams whose time is up go now, in this transaction; their appends are not found.
    let mut expired = HashSet::new();
    for row in rows.values() {
        if !row.soft_deleted && row.expired(writes.now_ms()) {
            writes.remove(&tx, row).await?;
            expired.insert(row.id);
        } else if !row.soft_deleted {
            writes.adopt(row);
        }
    }
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        let answer = match rows.get(&job.path) {
            None => Err(AppendError::NotFound),
            Some(row) if !job.request.access.sees(row.owner) => Err(AppendError::NotFound),
            Some(row) if row.soft_deleted => Err(AppendError::Gone),
            Some(row) if expired.contains(&row.id) => Err(AppendError::NotFound),
            Some(row) => {
                let json = tether_types::headers::is_json(&row.config.content_type);
                let body = stored_body(json, &job.request.body, false)
                    .map_err(|e| AppendError::InvalidBody(e.to_string()));
                let prepared = PreparedAppend {
                    request: job.request.clone(),
                    body,
                };
                writes.append(&tx, row.id, prepared).await
            }
        };
        if let Err(AppendError::Storage(e)) = answer {
            return Err(e);
        }
        answers.push(answer);
    }
    writes.flush(&tx).await?;
    tx.commit().await?;
    Ok((answers, writes))
}
