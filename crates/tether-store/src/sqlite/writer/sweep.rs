//! The stream sweeper: a named job on the writer thread that forgets streams nobody uses.
//!
//! Every stream touched since start keeps an entry in the catalog, with writer-side state and
//! a cache of its newest chunks. Without this job a server that sees many short-lived
//! streams would keep all of them in memory. An entry is forgotten only when nothing but the
//! catalog refers to it (no append in flight, no live reader, no fork loaded, no chunk
//! waiting for the index) and it has not been read or written for a while; the next use
//! loads it again from the database, which holds everything the writer state had.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{now_ms, Writer};

/// When the sweep runs and how long a stream must be idle to be forgotten.
#[derive(Clone, Copy, Debug)]
pub struct SweepPolicy {
    pub interval: Duration,
    pub idle_for: Duration,
}

impl Default for SweepPolicy {
    fn default() -> Self {
        SweepPolicy {
            interval: Duration::from_secs(10),
            idle_for: Duration::from_secs(60),
        }
    }
}

impl Writer {
    /// Runs the sweep if its interval has passed. Called between batches.
    pub(super) fn sweep_if_due(&mut self) {
        if self.last_sweep.elapsed() < self.sweep.interval {
            return;
        }
        self.last_sweep = Instant::now();
        let now = now_ms();
        let idle_for = self.sweep.idle_for.as_millis() as i64;
        let mut forgotten = Vec::new();
        self.catalog.lock().retain(|_, entry| {
            let idle = now - entry.last_access_ms.load(Ordering::Relaxed) >= idle_for;
            let unused = Arc::strong_count(entry) == 1 && entry.tail.receiver_count() == 0;
            // A sliding TTL counts from the last access, which only memory knows exactly.
            let sliding = entry.config.ttl_secs.is_some();
            if idle && unused && !sliding {
                forgotten.push(entry.id);
                false
            } else {
                true
            }
        });
        for id in &forgotten {
            self.states.remove(id);
        }
        if !forgotten.is_empty() {
            tracing::debug!(
                job = "stream-sweeper",
                streams = forgotten.len(),
                "forgot idle streams"
            );
        }
    }
}
