//! Sends a task's events in batches, as an idempotent producer.
//!
//! The producer id is the lease id and the epoch 0, so each lease is a fresh producer whose
//! sequence starts at 0. A batch keeps its sequence number until the server accepts it: a
//! retry after a lost answer sends the same batch with the same number and is stored once.
//! The number moves on only after a 2xx, so a batch the server refused outright (which it
//! did not store) leaves no gap.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tether_types::worker::WorkerEvents;
use tether_types::TaskId;
use tokio::sync::Notify;

use super::api::ProducerStamp;
use super::retry::retry;
use super::stop::StopSignal;
use super::TaskError;
use crate::Client;

/// Most events in one request.
pub(crate) const MAX_BATCH_EVENTS: usize = 256;
/// Most serialized event bytes in one request, well under the server's append limit.
pub(crate) const MAX_BATCH_BYTES: usize = 2 << 20;
/// How long the first event of a batch waits for company: short enough that watchers see
/// progress live, long enough to gather a burst into one request.
pub(crate) const LINGER: Duration = Duration::from_millis(20);

pub(crate) struct EventSender {
    client: Client,
    task: TaskId,
    lease: String,
    stop: StopSignal,
    pending: Mutex<Vec<Value>>,
    wake: Notify,
    /// The next batch's sequence number; held for the whole send, so batches go in order.
    seq: tokio::sync::Mutex<u64>,
}

impl EventSender {
    pub(crate) fn new(client: Client, task: TaskId, lease: String, stop: StopSignal) -> Self {
        EventSender {
            client,
            task,
            lease,
            stop,
            pending: Mutex::new(Vec::new()),
            wake: Notify::new(),
            seq: tokio::sync::Mutex::new(0),
        }
    }

    /// Queues an event. Once the task's work was stopped nothing more is queued: after a lost
    /// lease, not writing is the point.
    pub(crate) fn emit(&self, event: Value) {
        if self.stop.get().is_some() {
            return;
        }
        let mut pending = self.lock_pending();
        pending.push(event);
        if pending.len() == 1 || pending.len() >= MAX_BATCH_EVENTS {
            self.wake.notify_one();
        }
    }

    /// Sends everything queued so far; returns once the server stored it (or the work was
    /// stopped).
    pub(crate) async fn flush(&self) -> Result<(), TaskError> {
        let mut seq = self.seq.lock().await;
        loop {
            let batch = self.take_batch();
            if batch.is_empty() {
                return Ok(());
            }
            if let Err(error) = self.send(&mut seq, batch).await {
                self.lock_pending().clear();
                return Err(error);
            }
        }
    }

    /// The background half: sends a batch shortly after its first event arrives.
    pub(crate) async fn run(&self) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.stop.raised() => return,
            }
            if self.lock_pending().len() < MAX_BATCH_EVENTS {
                tokio::time::sleep(LINGER).await;
            }
            if self.flush().await.is_err() {
                // Stopped: the runtime learns why from the stop signal.
                return;
            }
        }
    }

    /// One batch, retried under the same sequence number. A batch refused as a whole (one
    /// bad event among good ones) is sent again event by event, so only the bad one is lost.
    async fn send(&self, seq: &mut u64, batch: Vec<Value>) -> Result<(), TaskError> {
        match self.send_once(seq, batch.clone()).await {
            Err(TaskError::Api(error)) if batch.len() > 1 => {
                tracing::warn!(%error, task = %self.task, events = batch.len(),
                    "the server refused an event batch; sending its events one by one");
                for event in batch {
                    self.send_single(seq, event).await?;
                }
                Ok(())
            }
            Err(TaskError::Api(error)) => {
                tracing::warn!(%error, task = %self.task, "the server refused an event; dropped");
                Ok(())
            }
            other => other,
        }
    }

    async fn send_single(&self, seq: &mut u64, event: Value) -> Result<(), TaskError> {
        match self.send_once(seq, vec![event]).await {
            Err(TaskError::Api(error)) => {
                tracing::warn!(%error, task = %self.task, "the server refused an event; dropped");
                Ok(())
            }
            other => other,
        }
    }

    async fn send_once(&self, seq: &mut u64, events: Vec<Value>) -> Result<(), TaskError> {
        let body = WorkerEvents {
            lease: self.lease.clone(),
            events,
        };
        let stamp = ProducerStamp {
            id: self.lease.clone(),
            epoch: 0,
            seq: *seq,
        };
        retry("sending events", &self.stop, || {
            self.client
                .append_worker_events(&self.task, &body, Some(&stamp))
        })
        .await?;
        *seq += 1;
        Ok(())
    }

    /// Up to a batch's worth of the oldest queued events.
    fn take_batch(&self) -> Vec<Value> {
        let mut pending = self.lock_pending();
        let mut bytes = 0;
        let mut count = 0;
        for event in pending.iter() {
            let size = serialized_len(event);
            if count > 0 && (count == MAX_BATCH_EVENTS || bytes + size > MAX_BATCH_BYTES) {
                break;
            }
            bytes += size;
            count += 1;
        }
        pending.drain(..count).collect()
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<Value>> {
        // A panic while holding this lock leaves a plain Vec behind, still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn serialized_len(event: &Value) -> usize {
    serde_json::to_vec(event).map_or(0, |v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sender() -> EventSender {
        let client = Client::new("http://127.0.0.1:9", None).unwrap();
        let task = TaskId::from_random(7);
        EventSender::new(client, task, "lse_1".into(), StopSignal::new())
    }

    #[test]
    fn batches_are_cut_by_count_and_by_size_keeping_order() {
        let sender = sender();
        for i in 0..(MAX_BATCH_EVENTS + 3) {
            sender.emit(json!({"type": "log", "data": {"i": i}}));
        }
        let first = sender.take_batch();
        assert_eq!(first.len(), MAX_BATCH_EVENTS);
        assert_eq!(first[0]["data"]["i"], 0);
        let second = sender.take_batch();
        assert_eq!(second.len(), 3);
        assert_eq!(second[0]["data"]["i"], MAX_BATCH_EVENTS);

        let big = "x".repeat(MAX_BATCH_BYTES / 2);
        for _ in 0..3 {
            sender.emit(json!({"type": "log", "data": {"line": big}}));
        }
        assert_eq!(sender.take_batch().len(), 1);
        assert_eq!(sender.take_batch().len(), 1);
        assert_eq!(sender.take_batch().len(), 1);
        assert!(sender.take_batch().is_empty());
    }

    #[test]
    fn nothing_is_queued_once_the_work_is_stopped() {
        let sender = sender();
        sender.stop.raise(super::super::Stop::Fenced);
        sender.emit(json!({"type": "log"}));
        assert!(sender.take_batch().is_empty());
    }
}
