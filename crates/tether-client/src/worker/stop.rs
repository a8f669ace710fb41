//! Why a task's work must end before its runner is done, shared by everything working on it.

use std::sync::Arc;

use tokio::sync::watch;

/// Why a task's work was stopped from outside its runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A user cancelled the task; the server already ended it.
    Cancelled,
    /// The lease was lost or a newer attempt took over: another worker may be running the
    /// task now, so nothing more may be written for it (G6).
    Fenced,
    /// This worker is shutting down; the lease will expire and the task be retried.
    Shutdown,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Cancelled => "cancelled",
            Stop::Fenced => "lease lost",
            Stop::Shutdown => "worker shutting down",
        })
    }
}

/// Raised once; the first reason wins. Cloning shares it.
#[derive(Clone, Debug)]
pub(crate) struct StopSignal(Arc<watch::Sender<Option<Stop>>>);

impl StopSignal {
    pub(crate) fn new() -> StopSignal {
        StopSignal(Arc::new(watch::channel(None).0))
    }

    pub(crate) fn raise(&self, reason: Stop) {
        self.0.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    pub(crate) fn get(&self) -> Option<Stop> {
        *self.0.borrow()
    }

    /// Resolves once a reason is raised (at once if one already is).
    pub(crate) async fn raised(&self) -> Stop {
        let mut rx = self.0.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.unwrap_or(Stop::Shutdown),
            // The sender lives in `self`, so this cannot close while we wait.
            Err(_) => Stop::Shutdown,
        };
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_and_waiters_see_it() {
        let stop = StopSignal::new();
        assert_eq!(stop.get(), None);
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.raised().await }
        });
        stop.raise(Stop::Cancelled);
        stop.raise(Stop::Fenced);
        assert_eq!(waiter.await.unwrap(), Stop::Cancelled);
        assert_eq!(stop.get(), Some(Stop::Cancelled));
        assert_eq!(stop.raised().await, Stop::Cancelled);
    }
}
