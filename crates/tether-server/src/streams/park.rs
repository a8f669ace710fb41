//! Idle SSE subscribers, parked without a task of their own.
//!
//! A subscriber whose connection Tether took over from hyper (see `crate::takeover`), that
//! has caught up and heard nothing for `sse_park_after`, gives up its task: its pump (which
//! holds its position) and its socket go into its stream's lot. One task per stream tends the
//! lot. It wakes when the tail moves past the earliest parked position, when the earliest
//! keep-alive or deadline is due, or when the server shuts down, and hands each subscriber
//! that has something to do back to a task of its own, which reads from the log as before
//! (G3). An idle subscriber then costs its pump and its socket, not a task, and its socket is
//! off the reactor meanwhile.
//!
//! A client that hangs up while parked is noticed at the next write to it: a delivery or its
//! keep-alive.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use tether_store::{StreamId, TailWatch};

use super::sse::Pump;
use crate::live::{self, KEEPALIVE};
use crate::takeover::ParkedResponse;

/// Every stream's lot of parked subscribers.
#[derive(Default)]
pub struct Parking {
    lots: Mutex<HashMap<StreamId, Arc<Lot>>>,
}

#[derive(Default)]
struct Lot {
    inner: Mutex<LotInner>,
    /// A subscriber was added: the tending task looks again at what it waits for.
    added: Notify,
}

#[derive(Default)]
struct LotInner {
    parked: Vec<Parked>,
    /// Whether a task tends this lot.
    tended: bool,
}

struct Parked {
    pump: Pump,
    out: ParkedResponse,
    /// When it is owed a keep-alive.
    keepalive_at: Instant,
}

impl Parked {
    /// When it must be handed back even if the stream stays still.
    fn due(&self) -> Instant {
        self.keepalive_at.min(self.pump.deadline())
    }
}

impl Parking {
    /// Parks an idle subscriber until the tail of its stream moves past its position or
    /// `keepalive_at`, whichever comes first.
    pub(super) fn park(self: &Arc<Self>, pump: Pump, out: ParkedResponse, keepalive_at: Instant) {
        let id = pump.stream();
        let watch = pump.tail_watch();
        let shutdown = pump.shutdown();
        let mut lots = self.lots.lock();
        let lot = lots.entry(id).or_default().clone();
        let mut inner = lot.inner.lock();
        pump.metrics().parked(1);
        inner.parked.push(Parked {
            pump,
            out,
            keepalive_at,
        });
        if inner.tended {
            lot.added.notify_one();
        } else {
            inner.tended = true;
            tokio::spawn(tend(self.clone(), id, lot.clone(), watch, shutdown));
        }
    }

    /// Drops the lot of `id` if it is still `lot` and empty; false if someone parked there
    /// meanwhile.
    fn retire(&self, id: StreamId, lot: &Arc<Lot>) -> bool {
        let mut lots = self.lots.lock();
        let mut inner = lot.inner.lock();
        if !inner.parked.is_empty() {
            return false;
        }
        inner.tended = false;
        if lots.get(&id).is_some_and(|l| Arc::ptr_eq(l, lot)) {
            lots.remove(&id);
        }
        true
    }
}

/// What woke a lot's task.
enum Woke {
    /// The tail moved, or the server is stopping: everyone goes.
    All,
    /// A keep-alive or deadline is due: those whose time has come go.
    Due,
}

/// The task of one stream's lot: runs while anyone is parked there.
async fn tend(
    parking: Arc<Parking>,
    id: StreamId,
    lot: Arc<Lot>,
    mut watch: TailWatch,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let waits = {
            let inner = lot.inner.lock();
            let from = inner.parked.iter().map(|p| p.pump.position()).min();
            let due = inner.parked.iter().map(Parked::due).min();
            from.zip(due)
        };
        let Some((from, due)) = waits else {
            if parking.retire(id, &lot) {
                return;
            }
            continue;
        };
        let woke = if *shutdown.borrow() {
            Woke::All
        } else {
            tokio::select! {
                _ = watch.past(from) => Woke::All,
                () = tokio::time::sleep_until(due) => Woke::Due,
                // Someone new parked: look again at what to wait for.
                () = lot.added.notified() => continue,
                // Changed (it only ever turns true) or gone: the server is stopping.
                _ = shutdown.changed() => Woke::All,
            }
        };
        let now = Instant::now();
        let going: Vec<Parked> = {
            let mut inner = lot.inner.lock();
            match woke {
                Woke::All => std::mem::take(&mut inner.parked),
                Woke::Due => {
                    let (going, staying) = std::mem::take(&mut inner.parked)
                        .into_iter()
                        .partition(|p| p.due() <= now);
                    inner.parked = staying;
                    going
                }
            }
        };
        for parked in going {
            parked.pump.metrics().parked(-1);
            let keepalive = parked.keepalive_at <= now;
            // An error: the socket could not go back on the reactor, and the subscriber ends.
            if let Ok(out) = parked.out.resume() {
                live::drive(parked.pump, out, keepalive.then_some(KEEPALIVE));
            }
        }
    }
}
