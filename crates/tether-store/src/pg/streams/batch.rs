//! Group commit for appends: concurrent appends on one node share one transaction.
//!
//! Callers queue their appends; a dispatcher takes everything queued, hands it to a batch
//! task, and goes back for more. A batch locks its streams' rows in id order (the order every
//! node locks in, so two nodes' batches wait for each other instead of deadlocking), checks
//! and buffers every append, writes them with one multi-row insert, commits once, and only
//! then answers its callers and publishes the new tails. A batch that fails to commit fails
//! every caller in it: nothing is acknowledged that is not committed (G1). A few batches run
//! at once, so one slow commit does not stall the node; while they are all busy, appends
//! queue up and the next batch is larger.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use deadpool_postgres::Pool;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use super::tx::StreamWrites;
use super::{begin, failure, Failure, Shared};
use crate::body::{stored_body, PreparedAppend};
use crate::model::*;

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
    sender: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
}

impl Batcher {
    /// Starts the dispatcher; at most `concurrency` batches run at once.
    pub fn start(pool: Pool, shared: Arc<Shared>, concurrency: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let concurrency = concurrency.max(1);
        let dispatcher = tokio::spawn(dispatch(rx, pool, shared, concurrency));
        Batcher {
            sender: Mutex::new(Some(tx)),
            dispatcher: Mutex::new(Some(dispatcher)),
        }
    }

    pub async fn append(&self, path: &str, request: Append) -> Result<Appended, AppendError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            path: path.to_string(),
            request,
            reply,
        };
        let sent = match &*self.sender.lock() {
            Some(sender) => sender.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(AppendError::Storage("store is shut down".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(AppendError::Storage("store is shut down".into())))
    }

    /// Takes no new appends, and returns once every queued one is answered.
    pub async fn stop(&self) {
        drop(self.sender.lock().take());
        let dispatcher = self.dispatcher.lock().take();
        if let Some(handle) = dispatcher {
            let _ = handle.await;
        }
    }
}

async fn dispatch(
    mut rx: mpsc::UnboundedReceiver<Job>,
    pool: Pool,
    shared: Arc<Shared>,
    concurrency: usize,
) {
    let permits = Arc::new(Semaphore::new(concurrency));
    while let Some(first) = rx.recv().await {
        // Wait for a free slot first: what queues meanwhile joins this batch.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
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
        let (pool, shared) = (pool.clone(), shared.clone());
        tokio::spawn(async move {
            run(&pool, &shared, jobs).await;
            drop(permit);
        });
    }
    // Stopping: wait until the running batches have answered.
    let _ = permits.acquire_many(concurrency as u32).await;
}

async fn run(pool: &Pool, shared: &Shared, jobs: Vec<Job>) {
    let mut attempt = 1;
    loop {
        match attempt_batch(pool, &jobs).await {
            Ok((answers, writes)) => {
                writes.publish_to(&shared.tails);
                for (job, answer) in jobs.into_iter().zip(answers) {
                    // A caller that went away no longer needs its answer.
                    let _ = job.reply.send(answer);
                }
                return;
            }
            Err((msg, retry)) if retry && attempt < MAX_ATTEMPTS => {
                tracing::debug!(error = %msg, attempt, "append batch will be retried");
                attempt += 1;
            }
            Err((msg, _)) => {
                tracing::error!(error = %msg, appends = jobs.len(), "append batch failed");
                for job in jobs {
                    let _ = job.reply.send(Err(AppendError::Storage(msg.clone())));
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
) -> Result<(Vec<Result<Appended, AppendError>>, StreamWrites), Failure> {
    let mut client = pool.get().await.map_err(|e| (e.to_string(), false))?;
    let tx = begin(&mut client).await?;
    let mut writes = StreamWrites::new();
    let paths: BTreeSet<&str> = jobs.iter().map(|j| j.path.as_str()).collect();
    let paths: Vec<&str> = paths.into_iter().collect();
    let rows = match writes.lock_paths(&tx, &paths).await {
        Ok(rows) => rows,
        Err(msg) => return Err((msg, writes.retryable())),
    };
    // Streams whose time is up go now, in this transaction; their appends are not found.
    let mut expired = HashSet::new();
    for row in rows.values() {
        if !row.soft_deleted && row.expired(writes.now_ms()) {
            if let Err(msg) = writes.remove(&tx, row).await {
                return Err((msg, writes.retryable()));
            }
            expired.insert(row.id);
        } else if !row.soft_deleted {
            writes.adopt(row);
        }
    }
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        let answer = match rows.get(&job.path) {
            None => Err(AppendError::NotFound),
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
        if let Err(AppendError::Storage(msg)) = answer {
            return Err((msg, writes.retryable()));
        }
        answers.push(answer);
    }
    if let Err(msg) = writes.flush(&tx).await {
        return Err((msg, writes.retryable()));
    }
    tx.commit().await.map_err(failure)?;
    Ok((answers, writes))
}
