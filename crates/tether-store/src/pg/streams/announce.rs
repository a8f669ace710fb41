//! Tells the other nodes what this node committed (tail changes and new work) with
//! `pg_notify`, sent on a connection of its own after the commit rather than inside it.
//!
//! Why after: PostgreSQL serialises the commits of all transactions that notify, on every
//! node, under one lock held until the commit record is flushed. With the notification inside
//! the data transaction, every append batch and every task change waited for the previous
//! one's WAL flush; a profile of the task lifecycle on one node spent most of its waits on
//! that lock. Here the data transactions notify nothing, and the announcements run with
//! `synchronous_commit = off` (they need no durability), so the lock is held only briefly,
//! and under load one statement carries every change queued meanwhile.
//!
//! The cost: a node that dies between a commit and its announcement never sends it. Listeners
//! therefore re-read their watched tails every [`super::tails::RESYNC_EVERY`], so a reader on
//! another node waits at most that long in that case; work waiters re-check on a timer anyway.
//! Tails only move forward, so announcing a tail late, twice or merged with a later one is
//! harmless.

use crate::StoreError;
use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;

use super::tails::{self, AbortOnDrop, TAIL_CHANNEL, WORK_CHANNEL};
use crate::model::StreamId;
use crate::tail::Tail;

/// The announcer's `application_name`.
const APPLICATION_NAME: &str = "tether-announcer";
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

enum Notice {
    Tail(StreamId, Tail),
    Work,
}

/// The sending side; cheap to call from any task.
pub(crate) struct Announcer {
    tx: mpsc::UnboundedSender<Notice>,
}

impl Announcer {
    /// Starts the task that sends the announcements; it ends when the announcer is dropped.
    pub fn start(config: &tokio_postgres::Config) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut config = config.clone();
        config.application_name(APPLICATION_NAME);
        (Announcer { tx }, tokio::spawn(run(config, rx)))
    }

    /// `id`'s tail moved to `tail` (committed).
    pub fn tail(&self, id: StreamId, tail: Tail) {
        // Fails only when the task is gone, at shutdown: nobody is left to tell.
        let _ = self.tx.send(Notice::Tail(id, tail));
    }

    /// Claimable work appeared (committed).
    pub fn work(&self) {
        let _ = self.tx.send(Notice::Work);
    }
}

async fn run(config: tokio_postgres::Config, mut rx: mpsc::UnboundedReceiver<Notice>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let error = match session(&config, &mut rx).await {
            Ok(()) => return,
            Err(e) => e,
        };
        tracing::warn!(error = %error, retry_in = ?backoff, "announcer disconnected");
        let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
        // What queued up meanwhile is dropped: the listeners' periodic re-read covers it,
        // and a queue that grows while the database is away would only cost memory.
        while rx.try_recv().is_ok() {}
    }
}

/// One connection's life: sends batches of announcements until the channel closes (`Ok`) or
/// the connection fails (`Err`, with the batch in flight lost).
async fn session(
    config: &tokio_postgres::Config,
    rx: &mut mpsc::UnboundedReceiver<Notice>,
) -> Result<(), StoreError> {
    let (client, connection) = config.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    let _abort = AbortOnDrop(driver.abort_handle());
    client
        .batch_execute("SET synchronous_commit TO off")
        .await?;
    let statement = client
        .prepare_typed(
            "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)",
            &[Type::TEXT_ARRAY, Type::TEXT_ARRAY],
        )
        .await?;
    let mut batch = Batch::default();
    while let Some(first) = rx.recv().await {
        batch.add(first);
        while let Ok(more) = rx.try_recv() {
            batch.add(more);
        }
        let (channels, payloads) = batch.take();
        client.execute(&statement, &[&channels, &payloads]).await?;
    }
    Ok(())
}

/// Announcements queued since the last send, merged: one per stream (its newest tail) and at
/// most one for work.
#[derive(Default)]
struct Batch {
    tails: HashMap<StreamId, Tail>,
    work: bool,
}

impl Batch {
    fn add(&mut self, notice: Notice) {
        match notice {
            Notice::Work => self.work = true,
            Notice::Tail(id, tail) => {
                let merged = self.tails.entry(id).or_insert(tail);
                *merged = merged.merge(tail);
            }
        }
    }

    /// The statement's parameters: channel names and payloads, side by side.
    fn take(&mut self) -> (Vec<&'static str>, Vec<String>) {
        let mut channels = Vec::with_capacity(self.tails.len() + 1);
        let mut payloads = Vec::with_capacity(self.tails.len() + 1);
        for (id, tail) in self.tails.drain() {
            channels.push(TAIL_CHANNEL);
            payloads.push(tails::encode(id, tail));
        }
        if std::mem::take(&mut self.work) {
            channels.push(WORK_CHANNEL);
            payloads.push(String::new());
        }
        (channels, payloads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(next: u64, closed: bool) -> Tail {
        Tail {
            next,
            closed,
            deleted: false,
        }
    }

    #[test]
    fn a_batch_merges_each_streams_tails_forward_and_work_into_one() {
        let mut batch = Batch::default();
        batch.add(Notice::Tail(1, tail(10, false)));
        batch.add(Notice::Work);
        batch.add(Notice::Tail(1, tail(7, true)));
        batch.add(Notice::Tail(2, tail(3, false)));
        batch.add(Notice::Work);
        let (channels, payloads) = batch.take();
        let mut sent: Vec<(&str, String)> = channels.into_iter().zip(payloads).collect();
        sent.sort();
        assert_eq!(
            sent,
            vec![
                (TAIL_CHANNEL, tails::encode(1, tail(10, true))),
                (TAIL_CHANNEL, tails::encode(2, tail(3, false))),
                (WORK_CHANNEL, String::new()),
            ]
        );
        assert_eq!(batch.take(), (vec![], vec![]), "taking empties the batch");
    }
}
