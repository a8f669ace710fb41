//! The in-memory face of a stream: its immutable configuration, its published tail, and a
//! cache of its most recent records.
//!
//! Entries are created and changed only by the writer thread, after commit. Readers take a
//! snapshot of the tail first and never read past it, so they only ever see committed data.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

pub(crate) use crate::chunk::Chunk;
use crate::model::{ForkFrom, StreamConfig, StreamId, StreamInfo};
use crate::tail::{self, Tail, TailWatch};
use tether_types::Offset;

/// How much of a stream's tail stays in memory for live readers.
const RECENT_MAX_BYTES: usize = 256 << 10;
const RECENT_MAX_RECORDS: usize = 1024;

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
    /// The user who owns the stream (see [`crate::Access`]); never changes, so checking it
    /// costs appends and reads nothing but a comparison.
    pub owner: Option<i64>,
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
            owner: None,
        }
    }

    pub fn owned_by(mut self, owner: Option<i64>) -> Self {
        self.owner = owner;
        self
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
        let last_access = self.last_access_ms.load(Ordering::Relaxed);
        crate::lifecycle::expired(&self.config, last_access, now_ms)
    }
}

/// A contiguous run of a stream's latest chunks, complete from `covered_from` to the tail.
///
/// Chunks at or after `pinned_from` are not in the on-disk index yet, so this cache is the
/// only way readers can find them: they are never evicted until the writer's index flush
/// moves `pinned_from` past them.
pub(crate) struct Recent {
    covered_from: u64,
    pinned_from: u64,
    chunks: VecDeque<Chunk>,
    bytes: usize,
}

impl Recent {
    fn starting_at(position: u64) -> Self {
        Recent {
            covered_from: position,
            pinned_from: u64::MAX,
            chunks: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Adds a chunk the writer just committed. It is not in the on-disk index yet, so it
    /// stays pinned until [`Recent::unpin_to`] passes it.
    pub fn push(&mut self, chunk: Chunk) {
        self.pinned_from = self.pinned_from.min(chunk.pos);
        self.bytes += chunk.data.len();
        self.chunks.push_back(chunk);
        self.evict();
    }

    /// The index now covers everything before `position`.
    pub fn unpin_to(&mut self, position: u64) {
        if self.pinned_from < position {
            self.pinned_from = self
                .chunks
                .iter()
                .find(|c| c.pos >= position)
                .map_or(u64::MAX, |c| c.pos);
        }
        self.evict();
    }

    fn evict(&mut self) {
        while self.bytes > RECENT_MAX_BYTES || self.chunks.len() > RECENT_MAX_RECORDS {
            match self.chunks.front() {
                Some(front) if front.end <= self.pinned_from => {}
                _ => break,
            }
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.bytes -= old.data.len();
            self.covered_from = self.chunks.front().map_or(old.end, |c| c.pos);
        }
    }

    /// Chunks overlapping `[from, end)` if the cache is complete from `from`, else `None`
    /// (the caller reads the log). The first chunk may start before `from`.
    pub fn read(&self, from: u64, end: u64, max_bytes: usize) -> Option<Vec<Chunk>> {
        if from < self.covered_from {
            return None;
        }
        let first = self.chunks.partition_point(|c| c.end <= from);
        let mut out = Vec::new();
        let mut size = 0;
        for chunk in self.chunks.range(first..) {
            if chunk.pos >= end || (size >= max_bytes && !out.is_empty()) {
                break;
            }
            size += chunk.data.len();
            out.push(chunk.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::tests::chunk;
    use bytes::Bytes;

    #[test]
    fn recent_cache_serves_only_what_it_fully_covers() {
        let mut r = Recent::starting_at(10);
        r.push(chunk(10, b"abc"));
        r.push(chunk(13, b"de"));
        assert!(r.read(9, 15, 100).is_none(), "before the covered range");
        assert_eq!(
            r.read(11, 15, 100).unwrap()[0].pos,
            10,
            "the chunk containing `from`"
        );
        assert_eq!(r.read(13, 15, 100).unwrap(), vec![chunk(13, b"de")]);
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
    fn unindexed_chunks_stay_until_the_index_covers_them() {
        let mut r = Recent::starting_at(0);
        let big = Bytes::from(vec![0u8; RECENT_MAX_BYTES]);
        let n = big.len() as u64;
        r.push(Chunk {
            pos: 0,
            end: n,
            data: big,
        });
        r.push(chunk(n, b"x"));
        assert!(
            r.read(0, u64::MAX, usize::MAX).is_some(),
            "pinned: not evicted"
        );
        r.unpin_to(n);
        assert!(r.read(0, u64::MAX, usize::MAX).is_none(), "indexed: may go");
        assert_eq!(r.read(n, u64::MAX, 10).unwrap().len(), 1, "still pinned");
    }
}
