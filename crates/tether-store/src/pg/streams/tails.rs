//! Live tails across nodes: a registry of this node's watched streams, and the listener that
//! brings other nodes' commits into it.
//!
//! After every commit that moves a tail, the committing node announces it with
//! `pg_notify('tether_tail', ..)` (see `announce`). One dedicated connection per node listens
//! and merges what it hears into the registry. Tails only move
//! forward (a larger `next`, closed, deleted), so merging is idempotent and order-free: the
//! same change arriving twice (published locally after commit, then heard back) or late
//! changes nothing.
//!
//! Notifications sent while the listener is disconnected are lost, so after every (re)connect
//! it re-reads the tails of every watched stream from the database. So are the announcements
//! of a node that dies between a commit and its announcement: the listener also re-reads the
//! watched tails every [`RESYNC_EVERY`], which bounds how late a reader hears of such a commit. Watchers register before
//! reading the tail themselves (see `PgStore::watch`), so no commit falls between the two.

use crate::StoreError;
use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls, Notification};

use super::recent::Run;
use super::Shared;
use crate::model::StreamId;
use crate::tail::{self, Tail, TailWatch};

/// The channel tail changes travel on. Payload: `<id> <next> <closed 0|1> <deleted 0|1>`.
/// A wire format between nodes of possibly different versions: keep it stable.
pub(crate) const TAIL_CHANNEL: &str = "tether_tail";
/// The channel claimable work is announced on (the control plane sends, the server waits).
pub(crate) const WORK_CHANNEL: &str = "tether_work";
/// The listener's `application_name`, so operators (and tests) can find its connection.
pub const LISTENER_APPLICATION_NAME: &str = "tether-listener";

/// How often the listener re-reads the watched tails even when no announcement came.
pub(crate) const RESYNC_EVERY: Duration = Duration::from_secs(1);

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A tail change as sent to other nodes.
pub(crate) fn encode(id: StreamId, tail: Tail) -> String {
    format!(
        "{id} {} {} {}",
        tail.next, tail.closed as u8, tail.deleted as u8
    )
}

/// `None` for a payload this node does not understand: it is ignored, never a panic.
pub(crate) fn decode(payload: &str) -> Option<(StreamId, Tail)> {
    let mut parts = payload.split(' ');
    let id = parts.next()?.parse().ok()?;
    let next = parts.next()?.parse().ok()?;
    let flag = |p: Option<&str>| match p {
        Some("0") => Some(false),
        Some("1") => Some(true),
        _ => None,
    };
    let closed = flag(parts.next())?;
    let deleted = flag(parts.next())?;
    Some((
        id,
        Tail {
            next,
            closed,
            deleted,
        },
    ))
}

/// The tails this node's live readers watch, by stream id, with each one's newest chunks.
/// Entries nobody watches any more are dropped as they are met, so the registry stays as
/// large as the set of live readers.
#[derive(Default)]
pub(crate) struct Tails {
    watches: Mutex<HashMap<StreamId, Watched>>,
}

struct Watched {
    tail: watch::Sender<Tail>,
    recent: Arc<Mutex<Run>>,
}

impl Tails {
    /// A watch on `id`, starting from at least `known`.
    pub fn subscribe(&self, id: StreamId, known: Tail) -> TailWatch {
        let mut watches = self.watches.lock();
        if watches.len() >= 64 && watches.len().is_power_of_two() {
            watches.retain(|_, w| w.tail.receiver_count() > 0);
        }
        let watched = watches.entry(id).or_insert_with(|| Watched {
            tail: tail::channel(known),
            recent: Arc::default(),
        });
        merge_into(&watched.tail, known);
        TailWatch::new(watched.tail.subscribe())
    }

    /// Moves `id`'s tail forward to `tail`, if anyone here watches it.
    pub fn merge(&self, id: StreamId, tail: Tail) {
        let mut watches = self.watches.lock();
        let Some(watched) = watches.get(&id) else {
            return;
        };
        if watched.tail.receiver_count() == 0 {
            watches.remove(&id);
            return;
        }
        merge_into(&watched.tail, tail);
    }

    /// The newest chunks of `id`, if anyone here watches it.
    pub fn recent(&self, id: StreamId) -> Option<Arc<Mutex<Run>>> {
        self.watches.lock().get(&id).map(|w| w.recent.clone())
    }

    /// The streams someone here watches.
    pub fn watched(&self) -> Vec<StreamId> {
        let mut watches = self.watches.lock();
        watches.retain(|_, w| w.tail.receiver_count() > 0);
        watches.keys().copied().collect()
    }
}

fn merge_into(sender: &watch::Sender<Tail>, tail: Tail) {
    sender.send_if_modified(|t| {
        let merged = t.merge(tail);
        let changed = merged != *t;
        *t = merged;
        changed
    });
}

/// Runs the listener until the task is aborted (at shutdown), reconnecting with backoff
/// whenever its connection fails.
pub(super) async fn listen(config: tokio_postgres::Config, shared: Arc<Shared>) {
    let mut config = config;
    config.application_name(LISTENER_APPLICATION_NAME);
    let mut backoff = BACKOFF_MIN;
    loop {
        let (listened, error) = session(&config, &shared).await;
        if listened {
            backoff = BACKOFF_MIN;
        }
        tracing::warn!(error = %error, retry_in = ?backoff, "tail listener disconnected");
        let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's life: LISTEN, catch up on what may have been missed, then apply
/// notifications until the connection fails. Returns whether it got as far as listening, and
/// why it ended.
async fn session(config: &tokio_postgres::Config, shared: &Shared) -> (bool, String) {
    let (client, mut connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => return (false, e.to_string()),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Notification>();
    // The connection must be polled for the client's queries to progress too; it hands the
    // notifications over. It ends (dropping `tx`) when the connection fails.
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n).is_err() {
                        return "listener stopped".to_string();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.to_string(),
                None => return "connection closed".to_string(),
            }
        }
    });
    let _abort = AbortOnDrop(driver.abort_handle());
    let listen = format!("LISTEN {TAIL_CHANNEL}; LISTEN {WORK_CHANNEL}");
    if let Err(e) = client.batch_execute(&listen).await {
        return (false, e.to_string());
    }
    if let Err(e) = resync(&client, shared).await {
        return (true, e.to_string());
    }
    // Work announced while disconnected was lost too: let waiters look again.
    shared.work.notify_waiters();
    // Counted once caught up: from here on, every commit reaches this node's watchers.
    shared
        .listener_connects
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut resync_timer = tokio::time::interval(RESYNC_EVERY);
    resync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync_timer.reset();
    loop {
        let n = tokio::select! {
            n = rx.recv() => match n {
                Some(n) => n,
                None => break,
            },
            _ = resync_timer.tick() => {
                if let Err(e) = resync(&client, shared).await {
                    return (true, e.to_string());
                }
                continue;
            }
        };
        match n.channel() {
            TAIL_CHANNEL => match decode(n.payload()) {
                Some((id, tail)) => shared.tails.merge(id, tail),
                None => tracing::warn!(payload = n.payload(), "ignored a malformed tail notice"),
            },
            WORK_CHANNEL => shared.work.notify_waiters(),
            _ => {}
        }
    }
    let why = driver
        .await
        .unwrap_or_else(|e| format!("listener connection task failed: {e}"));
    (true, why)
}

/// Re-reads the tails of every watched stream (after a reconnect, and on a timer); a stream
/// whose row is gone was deleted.
async fn resync(client: &tokio_postgres::Client, shared: &Shared) -> Result<(), StoreError> {
    let ids = shared.tails.watched();
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!("SELECT {TAIL_COLUMNS} FROM streams WHERE id = ANY($1)");
    let rows = client.query(&sql, &[&ids]).await?;
    let mut found = std::collections::HashSet::new();
    for row in rows {
        let (id, tail) = parse_tail(&row)?;
        found.insert(id);
        shared.tails.merge(id, tail);
    }
    for id in ids.into_iter().filter(|id| !found.contains(id)) {
        shared.tails.merge(id, gone());
    }
    Ok(())
}

/// The columns [`parse_tail`] reads.
pub(super) const TAIL_COLUMNS: &str = "id, tail, closed, soft_deleted";

/// A stream's committed tail, from a row of [`TAIL_COLUMNS`].
pub(super) fn parse_tail(row: &tokio_postgres::Row) -> Result<(StreamId, Tail), StoreError> {
    let get = |e| StoreError::corrupt_by("a stream's tail", e);
    let next: i64 = row.try_get(1).map_err(get)?;
    let tail = Tail {
        next: super::row::position(next, "tail")?,
        closed: row.try_get(2).map_err(get)?,
        deleted: row.try_get(3).map_err(get)?,
    };
    Ok((row.try_get(0).map_err(get)?, tail))
}

/// The tail of a stream that no longer exists (merging keeps the last known position).
pub(crate) fn gone() -> Tail {
    Tail {
        next: 0,
        closed: false,
        deleted: true,
    }
}

pub(super) struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_notices_round_trip_and_bad_ones_are_ignored() {
        let tail = Tail {
            next: 42,
            closed: true,
            deleted: false,
        };
        assert_eq!(decode(&encode(7, tail)), Some((7, tail)));
        for bad in ["", "7", "7 x 0 0", "7 1 2 0", "7 1 0", "x 1 0 0"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tails_only_move_forward() {
        let tails = Tails::default();
        let watch = tails.subscribe(
            1,
            Tail {
                next: 5,
                closed: false,
                deleted: false,
            },
        );
        tails.merge(
            1,
            Tail {
                next: 3,
                closed: true,
                deleted: false,
            },
        );
        assert_eq!(
            watch.current(),
            Tail {
                next: 5,
                closed: true,
                deleted: false
            }
        );
        tails.merge(1, gone());
        assert_eq!(watch.current().next, 5);
        assert!(watch.current().deleted);
    }
}
