//! Background jobs. Each has a name, runs on an interval with jitter, logs what it did, and
//! stops when the server shuts down. A singleton job runs only on the node that leads it
//! (see `tether_store::coord`); the others keep trying, so one takes over when the leader goes.

use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tether_store::Leadership;
use tokio::task::JoinHandle;

use crate::shutdown::stopped;
use crate::AppState;

const RECONCILER: &str = "reconciler";

/// The reconciler: tasks whose lease expired without a heartbeat go back to SUBMITTED as
/// their next attempt, or to TIMED_OUT once their attempts are used up.
pub fn spawn_reconciler(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut shutdown = state.shutdown.clone();
        let interval = state.config.reconcile_interval;
        let mut leadership: Option<Leadership> = None;
        loop {
            let jitter = rand::thread_rng().gen_range(0..=interval.as_millis() as u64 / 10);
            tokio::select! {
                _ = tokio::time::sleep(interval + Duration::from_millis(jitter)) => {}
                _ = stopped(&mut shutdown) => break,
            }
            let leading = lead(&state, RECONCILER, &mut leadership).await;
            state.metrics.lead_reconciler(leading);
            if !leading {
                continue;
            }
            match state.work.expire_leases(Utc::now()).await {
                Ok(expired) if !expired.is_empty() => {
                    for e in &expired {
                        tracing::info!(job = RECONCILER, task = %e.task, state = %e.state, "lease expired");
                        state.metrics.transition(e.state);
                    }
                    state.work_ready.notify_waiters();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(job = RECONCILER, error = %e, "could not expire leases"),
            }
        }
        tracing::debug!(job = RECONCILER, "stopped");
    })
}

/// Whether this node leads `job` now: keeps a held leadership, notices a lost one, and tries
/// to take the job when nobody holds it.
async fn lead(state: &AppState, job: &str, leadership: &mut Option<Leadership>) -> bool {
    if leadership.as_ref().is_some_and(|held| held.is_lost()) {
        tracing::warn!(job, "lost the lead of this job; trying to take it again");
        *leadership = None;
    }
    if leadership.is_none() {
        match state.coord.try_lead(job).await {
            Ok(Some(held)) => {
                tracing::info!(job, "this node now runs the job");
                *leadership = Some(held);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(job, error = %e, "could not ask who runs the job"),
        }
    }
    leadership.is_some()
}
