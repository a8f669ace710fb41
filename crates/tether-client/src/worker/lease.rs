//! Keeping a task's lease: heartbeats at a third of its length, which also bring cancel
//! requests and nudges.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tether_types::worker::Nudge;
use tether_types::TaskId;
use tokio::sync::mpsc::UnboundedSender;

use super::retry::worker_backoff;
use super::stop::{Stop, StopSignal};
use crate::Client;

/// Never heartbeat more often than this, whatever the lease says.
const MIN_INTERVAL: Duration = Duration::from_millis(20);

/// A third of the time left on the lease: two heartbeats can fail before it expires.
pub(crate) fn heartbeat_interval(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let left = (expires_at - now).to_std().unwrap_or_default();
    (left / 3).max(MIN_INTERVAL)
}

/// Heartbeats until the work is stopped. Raises [`Stop::Cancelled`] when the server says
/// the task was cancelled, and [`Stop::Fenced`] when the lease is lost or could not be
/// renewed before it expired. Each nudge goes to the runner once, then is acknowledged;
/// an acknowledgement that fails is repeated when the next heartbeat brings the nudge again.
pub(crate) async fn keep(
    client: Client,
    task: TaskId,
    lease: String,
    mut expires_at: DateTime<Utc>,
    stop: StopSignal,
    nudges: UnboundedSender<Nudge>,
) {
    let mut delivered = HashSet::new();
    let mut backoff = worker_backoff();
    let mut wait = heartbeat_interval(expires_at, Utc::now());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.raised() => return,
        }
        match client.heartbeat(&task, &lease).await {
            Ok(answer) => {
                backoff.reset();
                expires_at = answer.expires_at;
                wait = heartbeat_interval(expires_at, Utc::now());
                if answer.cancel_requested {
                    tracing::info!(%task, "the task was cancelled; stopping it");
                    stop.raise(Stop::Cancelled);
                    return;
                }
                for nudge in answer.nudges {
                    let id = nudge.id.clone();
                    // A runner that already ended has no use for it, but the ack still
                    // tells the user it arrived at the worker.
                    if delivered.insert(id.clone()) {
                        let _ = nudges.send(nudge);
                    }
                    if let Err(error) = client.ack_nudge(&task, &id, &lease).await {
                        tracing::warn!(%error, %task, nudge = %id, "acknowledging a nudge failed; will repeat");
                    }
                }
            }
            Err(error) if error.is_retryable() && Utc::now() < expires_at => {
                wait = backoff
                    .next_delay()
                    .min(heartbeat_interval(expires_at, Utc::now()));
                tracing::warn!(%error, %task, ?wait, "heartbeat failed; retrying");
            }
            Err(error) if error.is_cancelled() => {
                tracing::info!(%task, "the task was cancelled; stopping it");
                stop.raise(Stop::Cancelled);
                return;
            }
            Err(error) => {
                // Fenced, expired while the server was away, or refused (a revoked token):
                // either way the lease cannot be trusted any more.
                tracing::warn!(%error, %task, "lost the lease; stopping the task's work");
                stop.raise(Stop::Fenced);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_come_at_a_third_of_the_time_left() {
        let now = Utc::now();
        let in_30s = now + chrono::Duration::seconds(30);
        assert_eq!(heartbeat_interval(in_30s, now), Duration::from_secs(10));
        let in_2s = now + chrono::Duration::seconds(2);
        let interval = heartbeat_interval(in_2s, now);
        assert!(interval > Duration::from_millis(600) && interval < Duration::from_millis(700));
    }

    #[test]
    fn an_expired_or_skewed_lease_still_gets_a_prompt_heartbeat() {
        let now = Utc::now();
        let past = now - chrono::Duration::seconds(5);
        assert_eq!(heartbeat_interval(past, now), MIN_INTERVAL);
    }
}
