//! Background jobs. Each has a name, runs on an interval with jitter, logs what it did, and
//! stops when the server shuts down.

use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio::task::JoinHandle;

use crate::tasks::stopped;
use crate::AppState;

/// The reconciler: tasks whose lease expired without a heartbeat go back to SUBMITTED as
/// their next attempt, or to TIMED_OUT once their attempts are used up.
pub fn spawn_reconciler(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut shutdown = state.shutdown.clone();
        let interval = state.config.reconcile_interval;
        loop {
            let jitter = rand::thread_rng().gen_range(0..=interval.as_millis() as u64 / 10);
            tokio::select! {
                _ = tokio::time::sleep(interval + Duration::from_millis(jitter)) => {}
                _ = stopped(&mut shutdown) => break,
            }
            match state.work.expire_leases(Utc::now()).await {
                Ok(expired) if !expired.is_empty() => {
                    for e in &expired {
                        tracing::info!(job = "reconciler", task = %e.task, state = %e.state, "lease expired");
                        state.metrics.transition(e.state);
                    }
                    state.work_ready.notify_waiters();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(job = "reconciler", error = %e, "could not expire leases"),
            }
        }
        tracing::debug!(job = "reconciler", "stopped");
    })
}
