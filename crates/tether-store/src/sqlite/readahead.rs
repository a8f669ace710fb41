//! Read-ahead for catch-up readers.
//!
//! A reader catching up on a long stream asks for one window, receives it, and only then
//! asks for the next, so without help the database read of each window and the sending of
//! the previous one take turns. When a read from the log stops short of the tail, the next
//! window is read at once on the blocking pool; the reader's next request, from exactly
//! where this one ended, takes it (waiting for it if it is still being read). Stored chunks
//! never change, so a window read early is the same as one read on request; deletion is
//! caught by the catalog lookup every read does first.
//!
//! A few windows at most are read ahead at a time and each is dropped after a short while
//! if nobody took it, so many concurrent catch-up readers, or readers that stop early,
//! cannot multiply the database's work or hold much memory: past the limit they simply
//! read on request.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::entry::{Chunk, Entry};

/// Windows read ahead and not yet taken, at most.
const SLOTS: usize = 4;
/// How long a window waits to be taken.
const KEEP: Duration = Duration::from_secs(2);

pub(crate) type Window = JoinHandle<rusqlite::Result<Vec<Chunk>>>;

struct Slot {
    id: u64,
    stream: Weak<Entry>,
    /// The window holds the stream's chunks from the one containing `pos`, below `hi`.
    pos: u64,
    hi: u64,
    window: Window,
}

#[derive(Default)]
struct Slots {
    slots: VecDeque<Slot>,
    next_id: u64,
}

#[derive(Default)]
pub(crate) struct ReadAhead {
    inner: Arc<Mutex<Slots>>,
}

impl ReadAhead {
    /// The window read ahead for a read of `stream` from `pos` below `hi`, if there is one.
    /// It may end below `hi` (the tail moved since), which is still a correct answer.
    pub fn take(&self, stream: &Arc<Entry>, pos: u64, hi: u64) -> Option<Window> {
        let mut inner = self.inner.lock();
        let at = inner.slots.iter().position(|s| {
            s.pos == pos && s.hi <= hi && std::ptr::eq(s.stream.as_ptr(), Arc::as_ptr(stream))
        })?;
        inner.slots.remove(at).map(|s| s.window)
    }

    /// Starts reading `stream` from `pos` below `hi` with `read`, unless every slot is taken.
    pub fn start(&self, stream: &Arc<Entry>, pos: u64, hi: u64, read: impl FnOnce() -> Window) {
        let id = {
            let mut inner = self.inner.lock();
            if inner.slots.len() >= SLOTS {
                return;
            }
            let id = inner.next_id;
            inner.next_id += 1;
            inner.slots.push_back(Slot {
                id,
                stream: Arc::downgrade(stream),
                pos,
                hi,
                window: read(),
            });
            id
        };
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(KEEP).await;
            if let Some(inner) = inner.upgrade() {
                // Dropping the handle abandons the window; its read finishes unobserved.
                inner.lock().slots.retain(|s| s.id != id);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StreamConfig;
    use crate::tail::Tail;

    fn entry(id: i64) -> Arc<Entry> {
        let config = StreamConfig {
            content_type: "text/plain".into(),
            ttl_secs: None,
            expires_at: None,
        };
        let tail = Tail {
            next: 100,
            closed: false,
            deleted: false,
        };
        Arc::new(Entry::new(id, "s".into(), config, 0, None, tail, false, 0))
    }

    fn window() -> Window {
        tokio::spawn(async { Ok(Vec::new()) })
    }

    #[tokio::test]
    async fn a_window_is_taken_once_by_a_read_from_where_it_starts() {
        let ahead = ReadAhead::default();
        let stream = entry(1);
        ahead.start(&stream, 10, 50, window);
        assert!(ahead.take(&stream, 11, 50).is_none(), "another position");
        assert!(
            ahead.take(&stream, 10, 40).is_none(),
            "it reaches past this read's tail"
        );
        assert!(
            ahead.take(&stream, 10, 60).is_some(),
            "the tail moved on since"
        );
        assert!(ahead.take(&stream, 10, 60).is_none(), "taken already");
    }

    /// The stream is deleted and created again under its name: the new stream has a new
    /// entry, and a window read for the old one must never be handed to it, even once the
    /// old entry is dropped.
    #[tokio::test]
    async fn a_window_goes_only_to_the_stream_it_was_read_for() {
        let ahead = ReadAhead::default();
        let old = entry(1);
        ahead.start(&old, 10, 50, window);
        drop(old);
        for id in 2..200 {
            let recreated = entry(id);
            assert!(ahead.take(&recreated, 10, 50).is_none(), "stream {id}");
        }
    }
}
