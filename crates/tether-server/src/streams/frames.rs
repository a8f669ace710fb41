//! SSE frames rendered once per stream position and shared by every live reader there.
//!
//! A thousand readers of one stream all wake for the same append and would each read the
//! same chunk and render the same bytes. The first to get there leaves the frame in the
//! stream's slot; the others take it if nothing moved since (same start, same committed
//! tail, same cursor). Readers at other positions simply render their own.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use axum::body::Bytes;
use parking_lot::Mutex;

use tether_store::{StreamId, Tail};

/// A rendered data-and-control frame and where it leaves the reader.
#[derive(Clone)]
pub struct Frame {
    pub bytes: Bytes,
    pub next: u64,
    pub up_to_date: bool,
    pub closed_end: bool,
}

#[derive(Clone)]
struct Key {
    from: u64,
    tail: Tail,
    cursor: i64,
}

impl Key {
    fn matches(&self, other: &Key) -> bool {
        self.from == other.from && self.tail == other.tail && self.cursor == other.cursor
    }
}

#[derive(Default)]
pub struct FrameSlot {
    last: Mutex<Option<(Key, Frame)>>,
}

impl FrameSlot {
    pub fn get(&self, from: u64, tail: Tail, cursor: i64) -> Option<Frame> {
        let key = Key { from, tail, cursor };
        match &*self.last.lock() {
            Some((k, frame)) if k.matches(&key) => Some(frame.clone()),
            _ => None,
        }
    }

    pub fn put(&self, from: u64, tail: Tail, cursor: i64, frame: Frame) {
        *self.last.lock() = Some((Key { from, tail, cursor }, frame));
    }
}

/// The slots of the streams that have live readers.
#[derive(Default)]
pub struct FrameShare {
    slots: Mutex<HashMap<StreamId, Weak<FrameSlot>>>,
}

impl FrameShare {
    /// The slot of a stream, shared with its other live readers.
    pub fn slot(&self, stream: StreamId) -> Arc<FrameSlot> {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.get(&stream).and_then(Weak::upgrade) {
            return slot;
        }
        // Forget streams nobody watches any more, now and then.
        if slots.len() >= 64 && slots.len().is_power_of_two() {
            slots.retain(|_, s| s.strong_count() > 0);
        }
        let slot = Arc::new(FrameSlot::default());
        slots.insert(stream, Arc::downgrade(&slot));
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(next: u64) -> Tail {
        Tail {
            next,
            closed: false,
            deleted: false,
        }
    }

    #[test]
    fn a_frame_is_reused_only_for_the_same_position_tail_and_cursor() {
        let share = FrameShare::default();
        let slot = share.slot(7);
        let frame = Frame {
            bytes: Bytes::from_static(b"x"),
            next: 10,
            up_to_date: true,
            closed_end: false,
        };
        slot.put(5, tail(10), 1, frame);
        assert!(
            share.slot(7).get(5, tail(10), 1).is_some(),
            "same stream, same slot"
        );
        assert!(slot.get(4, tail(10), 1).is_none());
        assert!(slot.get(5, tail(11), 1).is_none());
        assert!(slot.get(5, tail(10), 2).is_none());
        assert!(share.slot(8).get(5, tail(10), 1).is_none());
    }
}
