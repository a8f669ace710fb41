//! Per-stream tail notification.
//!
//! Live readers never read from a side buffer: they wait until the committed tail passes their
//! position, then read from the log (guarantee G3). The tail is published on a
//! `tokio::sync::watch` channel only after the data it covers is committed, so a woken reader
//! always finds the data it was woken for.

use std::time::Duration;
use tokio::sync::watch;

/// The committed end of a stream, as live readers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    /// The position the next append will get.
    pub next: u64,
    pub closed: bool,
    /// The stream was deleted (soft or hard) or expired; readers should stop.
    pub deleted: bool,
}

impl Tail {
    /// The later of two views of one stream's tail: tails only move forward, so merging is
    /// idempotent and order-free (a change heard twice, or late, changes nothing).
    pub fn merge(self, other: Tail) -> Tail {
        Tail {
            next: self.next.max(other.next),
            closed: self.closed || other.closed,
            deleted: self.deleted || other.deleted,
        }
    }
}

/// A receiver of a stream's tail.
#[derive(Clone, Debug)]
pub struct TailWatch {
    rx: watch::Receiver<Tail>,
}

/// What a wait on the tail ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// There is data past the position, or the stream is closed or deleted.
    Changed(Tail),
    TimedOut(Tail),
}

impl TailWatch {
    pub(crate) fn new(rx: watch::Receiver<Tail>) -> Self {
        TailWatch { rx }
    }

    pub fn current(&self) -> Tail {
        *self.rx.borrow()
    }

    /// Waits until the tail passes `position` (or the stream closes or goes away), at most
    /// `timeout`.
    pub async fn wait_past(&mut self, position: u64, timeout: Duration) -> Wake {
        match tokio::time::timeout(timeout, self.past(position)).await {
            Ok(tail) => Wake::Changed(tail),
            Err(_) => Wake::TimedOut(self.current()),
        }
    }

    /// Waits until the tail passes `position`, or the stream closes or goes away. Kept small
    /// (one wait on the channel, no timer): ten thousand idle subscribers each hold one.
    pub async fn past(&mut self, position: u64) -> Tail {
        loop {
            let tail = self.current();
            if tail.next > position || tail.closed || tail.deleted {
                return tail;
            }
            // `current` does not mark what it saw, so a change made since the last wait ends
            // this one at once and is checked above.
            if self.rx.changed().await.is_err() {
                // The sender is gone: the store shut down or dropped the stream.
                return Tail {
                    deleted: true,
                    ..self.current()
                };
            }
        }
    }
}

pub(crate) fn channel(initial: Tail) -> watch::Sender<Tail> {
    watch::Sender::new(initial)
}
