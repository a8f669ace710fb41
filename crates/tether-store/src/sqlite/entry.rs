//! The in-memory face of a stream: its immutable configuration, its published tail, and a
//! cache of its most recent records.
//!
//! Entries are created and changed only by the writer thread, after commit. Readers take a
//! snapshot of the tail first and never read past it, so they only ever see committed data.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::model::{ForkFrom, StreamConfig, StreamId, StreamInfo};
use crate::tail::{self, Tail, TailWatch};
use tether_types::Offset;

/// How much of a stream's tail stays in memory for live readers.
const RECENT_MAX_BYTES: usize = 1 << 20;
const RECENT_MAX_RECORDS: usize = 4096;

pub(crate) struct ForkLink {
    pub source: Arc<Entry>,
    /// Where the fork diverges: positions below come from `source`.
    pub point: u64,
    /// What the creating PUT asked for, resolved; idempotent re-creation must match it.
    pub spec: ForkFrom,
}

pub(crate) struct Entry {
    pub id: StreamId,
    pub path: String,
    pub config: StreamConfig,
    pub json: bool,
    /// First position of this stream's own records (the fork point for forks, else 0).
    pub start: u64,
    pub fork: Option<ForkLink>,
    pub tail: watch::Sender<Tail>,
    pub soft_deleted: AtomicBool,
    pub last_access_ms: AtomicI64,
    pub recent: Mutex<Recent>,
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: StreamId,
        path: String,
        config: StreamConfig,
        start: u64,
        fork: Option<ForkLink>,
        tail: Tail,
        soft_deleted: bool,
        last_access_ms: i64,
    ) -> Self {
        let json = tether_types::headers::is_json(&config.content_type);
        Entry {
            id,
            path,
            config,
            json,
            start,
            fork,
            tail: tail::channel(tail),
            soft_deleted: AtomicBool::new(soft_deleted),
            last_access_ms: AtomicI64::new(last_access_ms),
            recent: Mutex::new(Recent::starting_at(tail.next)),
        }
    }

    pub fn current_tail(&self) -> Tail {
        *self.tail.borrow()
    }

    pub fn watch(&self) -> TailWatch {
        TailWatch::new(self.tail.subscribe())
    }

    pub fn info(&self) -> StreamInfo {
        let tail = self.current_tail();
        StreamInfo {
            id: self.id,
            config: self.config.clone(),
            start: Offset::START,
            next: Offset(tail.next),
            closed: tail.closed,
        }
    }

    pub fn touch(&self, now_ms: i64) {
        self.last_access_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    pub fn is_soft_deleted(&self) -> bool {
        self.soft_deleted.load(Ordering::Acquire)
    }

    pub fn expired(&self, now_ms: i64) -> bool {
        if let Some(at) = self.config.expires_at {
            if now_ms >= at.timestamp_millis() {
                return true;
            }
        }
        if let Some(ttl) = self.config.ttl_secs {
            let idle = now_ms - self.last_access_ms.load(Ordering::Relaxed);
            if idle >= (ttl as i64).saturating_mul(1000) {
                return true;
            }
        }
        false
    }

    /// Size of one stored record in positions.
    pub fn units(&self, data: &[u8]) -> u64 {
        if self.json {
            1
        } else {
            data.len() as u64
        }
    }
}

/// A contiguous run of a stream's latest records, complete from `covered_from` to the tail.
pub(crate) struct Recent {
    covered_from: u64,
    records: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Recent {
    fn starting_at(position: u64) -> Self {
        Recent {
            covered_from: position,
            records: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Adds records the writer just committed, in order, each with its position and units.
    pub fn push(&mut self, pos: u64, data: Bytes, units: u64) {
        self.bytes += data.len();
        self.records.push_back((pos, data));
        while self.bytes > RECENT_MAX_BYTES || self.records.len() > RECENT_MAX_RECORDS {
            let Some((_, old)) = self.records.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            self.covered_from = self.records.front().map_or(pos + units, |(p, _)| *p);
        }
    }

    /// Records with positions in `[from, end)` if the cache is complete from `from`, else
    /// `None` (the caller reads the log instead). Only whole records that start at or after
    /// `from` are returned, so `from` must be a record boundary; callers fall back to the log
    /// for anything else.
    pub fn read(&self, from: u64, end: u64, max_bytes: usize) -> Option<Vec<(u64, Bytes)>> {
        if from < self.covered_from {
            return None;
        }
        let first = self.records.partition_point(|(p, _)| *p < from);
        if let Some((p, _)) = self.records.get(first) {
            if *p != from {
                return None;
            }
        }
        let mut out = Vec::new();
        let mut size = 0;
        for (p, data) in self.records.range(first..) {
            if *p >= end || (size >= max_bytes && !out.is_empty()) {
                break;
            }
            size += data.len();
            out.push((*p, data.clone()));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_cache_serves_only_what_it_fully_covers() {
        let mut r = Recent::starting_at(10);
        r.push(10, Bytes::from_static(b"abc"), 3);
        r.push(13, Bytes::from_static(b"de"), 2);
        assert!(r.read(9, 15, 100).is_none(), "before the covered range");
        assert!(r.read(11, 15, 100).is_none(), "not a record boundary");
        let hit = r.read(13, 15, 100).unwrap();
        assert_eq!(hit, vec![(13, Bytes::from_static(b"de"))]);
        assert_eq!(
            r.read(10, 13, 100).unwrap().len(),
            1,
            "clipped at the tail snapshot"
        );
        assert!(
            r.read(15, 15, 100).unwrap().is_empty(),
            "at the tail: nothing yet"
        );
    }

    #[test]
    fn recent_cache_moves_its_start_when_it_evicts() {
        let mut r = Recent::starting_at(0);
        let big = Bytes::from(vec![0u8; RECENT_MAX_BYTES]);
        r.push(0, big.clone(), big.len() as u64);
        r.push(big.len() as u64, Bytes::from_static(b"x"), 1);
        assert!(r.read(0, u64::MAX, usize::MAX).is_none());
        assert_eq!(r.read(big.len() as u64, u64::MAX, 10).unwrap().len(), 1);
    }
}
