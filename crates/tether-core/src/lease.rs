//! Leases and fencing (G6): whether a worker's write may land.
//!
//! A task that is RUNNING or FINALIZING holds at most one lease. A write carries the lease it
//! was given and, for step events, the step attempt it belongs to. [`check`] is the whole
//! rule, and stores call it inside the transaction that would append, so a write that loses
//! the race with an expiry, a requeue, a cancel or a newer attempt is refused, never stored.

use tether_types::TaskState;

/// The lease fields of a task row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held<'a> {
    pub state: TaskState,
    pub lease_id: Option<&'a str>,
    pub expires_ms: Option<i64>,
}

/// Why a write was fenced. The worker acts on the difference: a cancel deserves the
/// command's grace period (SIGTERM first), a lost lease an immediate stop, since another
/// worker may own the task now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    #[error("the lease was lost: {0}")]
    LeaseLost(Loss),
    /// The task was cancelled while this lease held it.
    #[error("the task was cancelled")]
    Cancelled,
    #[error("step {step} is at attempt {current}; writes for attempt {given} are refused")]
    StaleAttempt {
        step: String,
        current: u32,
        given: u32,
    },
}

/// How a lease that was not cancelled came to be lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Loss {
    #[error("it expired without a heartbeat")]
    Expired,
    #[error("the task was requeued or is held by another lease")]
    Replaced,
    #[error("the task already ended")]
    Ended,
}

/// Whether `lease` is the task's live lease at `now_ms`.
pub fn check(held: &Held<'_>, lease: &str, now_ms: i64) -> Result<(), Fenced> {
    let active = matches!(held.state, TaskState::Running | TaskState::Finalizing);
    let same = held.lease_id == Some(lease);
    let alive = held.expires_ms.is_some_and(|expires| now_ms < expires);
    match (same, active, alive) {
        (true, true, true) => Ok(()),
        (false, _, _) => Err(Fenced::LeaseLost(Loss::Replaced)),
        (true, true, false) => Err(Fenced::LeaseLost(Loss::Expired)),
        (true, false, _) if held.state == TaskState::Cancelled => Err(Fenced::Cancelled),
        (true, false, _) if held.state.is_terminal() => Err(Fenced::LeaseLost(Loss::Ended)),
        (true, false, _) => Err(Fenced::LeaseLost(Loss::Replaced)),
    }
}

/// Whether a write for `given` attempt of a step may land when `current` is the newest begun.
pub fn check_attempt(step: &str, current: Option<u32>, given: u32) -> Result<(), Fenced> {
    match current {
        Some(current) if given == current => Ok(()),
        Some(current) => Err(Fenced::StaleAttempt {
            step: step.to_string(),
            current,
            given,
        }),
        // A step never begun has no attempt to write for.
        None => Err(Fenced::StaleAttempt {
            step: step.to_string(),
            current: 0,
            given,
        }),
    }
}

/// Whether an owner with `running` tasks may start one more under `limit` (G7: the count
/// comes from task states in the same transaction, never from a counter).
pub fn admits(running: u64, limit: u64) -> bool {
    running < limit
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_state() -> impl Strategy<Value = TaskState> {
        proptest::sample::select(TaskState::ALL.to_vec())
    }

    proptest! {
        /// A write passes only with the task's own lease, before it expires, while the task
        /// runs: every other combination is fenced.
        #[test]
        fn only_the_live_lease_of_a_running_task_passes(
            state in arb_state(),
            held in proptest::option::of("[ab]"),
            given in "[ab]",
            expires in proptest::option::of(0i64..100),
            now in 0i64..100,
        ) {
            let ok = check(&Held { state, lease_id: held.as_deref(), expires_ms: expires }, &given, now).is_ok();
            let expected = matches!(state, TaskState::Running | TaskState::Finalizing)
                && held.as_deref() == Some(given.as_str())
                && expires.is_some_and(|e| now < e);
            prop_assert_eq!(ok, expected);
        }

        /// Only the lease the task held when it was cancelled hears of the cancel; every other
        /// refusal is a lost lease.
        #[test]
        fn a_cancel_is_told_apart_from_a_lost_lease(
            state in arb_state(),
            held in proptest::option::of("[ab]"),
            given in "[ab]",
            expires in proptest::option::of(0i64..100),
            now in 0i64..100,
        ) {
            let result = check(&Held { state, lease_id: held.as_deref(), expires_ms: expires }, &given, now);
            let cancelled = state == TaskState::Cancelled && held.as_deref() == Some(given.as_str());
            prop_assert_eq!(result == Err(Fenced::Cancelled), cancelled);
        }

        #[test]
        fn only_the_newest_attempt_of_a_step_may_write(current in proptest::option::of(1u32..5), given in 1u32..5) {
            prop_assert_eq!(check_attempt("clone", current, given).is_ok(), current == Some(given));
        }
    }

    #[test]
    fn admission_counts_against_the_limit() {
        assert!(admits(9, 10));
        assert!(!admits(10, 10));
        assert!(!admits(0, 0));
    }
}
