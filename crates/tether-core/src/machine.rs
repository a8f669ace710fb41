//! The task state machine (DESIGN.md, Tasks).
//!
//! ```text
//! SUBMITTED -> RUNNING -> FINALIZING -> COMPLETED | FAILED | TIMED_OUT
//!     ^           |  (requeue: attempt + 1)
//!     |___________|
//! any non-terminal state -> CANCELLED, FAILED, TIMED_OUT
//! ```
//!
//! [`decide`] is the whole rule: given the current state and an operation, it answers the
//! new state and the one event that records the change, or why the change is refused. A store
//! calls it inside the transaction that holds the task's row, writes the row and appends the
//! event together (G5); a terminal event also closes the stream, so it is the last one.

use serde_json::{json, Value};
use tether_types::event::kind;
use tether_types::{Event, TaskSpec, TaskState};

/// What a caller asks of a task.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskOp {
    /// A worker begins (or, after a requeue, resumes) the task.
    Start {
        worker: Option<String>,
    },
    /// The work is done; the task is wrapping up (opening a pull request, notifying).
    Finalize,
    Complete {
        result: Value,
    },
    Fail {
        code: String,
        message: String,
    },
    TimeOut {
        code: String,
        message: String,
    },
    /// The attempt was lost (its lease expired); run the task again as the next attempt.
    Requeue {
        reason: String,
    },
    Cancel {
        by: String,
        reason: Option<String>,
    },
    /// The claim that started the task never reached its worker: hand the task back as the
    /// same attempt, which no worker ran.
    Release {
        reason: String,
    },
}

impl TaskOp {
    pub fn name(&self) -> &'static str {
        match self {
            TaskOp::Start { .. } => "start",
            TaskOp::Finalize => "finalize",
            TaskOp::Complete { .. } => "complete",
            TaskOp::Fail { .. } => "fail",
            TaskOp::TimeOut { .. } => "time out",
            TaskOp::Requeue { .. } => "requeue",
            TaskOp::Cancel { .. } => "cancel",
            TaskOp::Release { .. } => "release",
        }
    }
}

/// The part of a task the machine looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Current {
    pub state: TaskState,
    pub attempt: u32,
}

/// An accepted change: the task's new state and the event that records it.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub state: TaskState,
    pub attempt: u32,
    pub event: Event,
}

impl Transition {
    /// The event is the task's last: the stream closes after it.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the task has already ended ({0})")]
    AlreadyTerminal(TaskState),
    #[error("cannot {op} a task that is {from}")]
    NotAllowed { from: TaskState, op: &'static str },
}

/// The first event of every task.
pub fn created_event(spec: &TaskSpec, owner: &str, ts: String) -> Event {
    let mut data = serde_json::to_value(spec).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut data {
        map.insert("owner".into(), Value::String(owner.to_string()));
    }
    let mut event = Event::new(kind::TASK_CREATED, ts, data);
    event.attempt = Some(1);
    event
}

/// Decides whether `op` may happen to a task in `current`, and what it changes.
pub fn decide(current: Current, op: &TaskOp, ts: String) -> Result<Transition, TransitionError> {
    use TaskState::*;
    let from = current.state;
    if from.is_terminal() {
        return Err(TransitionError::AlreadyTerminal(from));
    }
    let refuse = || TransitionError::NotAllowed {
        from,
        op: op.name(),
    };
    let attempt = current.attempt;
    let (state, attempt, kind, data) = match op {
        TaskOp::Start { worker } => match from {
            Submitted => (
                Running,
                attempt,
                kind::TASK_STARTED,
                json!({ "worker": worker }),
            ),
            _ => return Err(refuse()),
        },
        TaskOp::Finalize => match from {
            Running => (Finalizing, attempt, kind::TASK_FINALIZING, Value::Null),
            _ => return Err(refuse()),
        },
        TaskOp::Complete { result } => match from {
            Running | Finalizing => (
                Completed,
                attempt,
                kind::TASK_COMPLETED,
                json!({ "result": result }),
            ),
            _ => return Err(refuse()),
        },
        TaskOp::Fail { code, message } => (
            Failed,
            attempt,
            kind::TASK_FAILED,
            json!({ "code": code, "message": message }),
        ),
        TaskOp::TimeOut { code, message } => (
            TimedOut,
            attempt,
            kind::TASK_TIMED_OUT,
            json!({ "code": code, "message": message }),
        ),
        TaskOp::Requeue { reason } => match from {
            Running | Finalizing => (
                Submitted,
                attempt + 1,
                kind::TASK_REQUEUED,
                json!({ "reason": reason }),
            ),
            _ => return Err(refuse()),
        },
        TaskOp::Release { reason } => match from {
            Running => (
                Submitted,
                attempt,
                kind::TASK_REQUEUED,
                json!({ "reason": reason }),
            ),
            _ => return Err(refuse()),
        },
        TaskOp::Cancel { by, reason } => (
            Cancelled,
            attempt,
            kind::TASK_CANCELLED,
            json!({ "by": by, "reason": reason }),
        ),
    };
    let mut event = Event::new(kind, ts, data);
    event.attempt = Some(attempt);
    Ok(Transition {
        state,
        attempt,
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::project;
    use proptest::prelude::*;
    use tether_types::Offset;

    fn arb_op() -> impl Strategy<Value = TaskOp> {
        prop_oneof![
            Just(TaskOp::Start { worker: None }),
            Just(TaskOp::Finalize),
            Just(TaskOp::Complete {
                result: Value::Null
            }),
            Just(TaskOp::Fail {
                code: "AGENT_ERROR".into(),
                message: "boom".into()
            }),
            Just(TaskOp::TimeOut {
                code: "LEASE_EXPIRED".into(),
                message: "no heartbeat".into()
            }),
            Just(TaskOp::Requeue {
                reason: "lease expired".into()
            }),
            Just(TaskOp::Cancel {
                by: "ann".into(),
                reason: None
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever operations arrive, in whatever order and however often: the log has
        /// exactly one terminal event once the task has ended, it is the last event, nothing
        /// is accepted after it, the attempt only grows, and folding the log gives the state
        /// the machine holds.
        #[test]
        fn any_sequence_of_operations_keeps_the_lifecycle_invariants(
            ops in proptest::collection::vec(arb_op(), 0..40)
        ) {
            let spec = TaskSpec { description: "d".into(), ..TaskSpec::default() };
            let mut current = Current { state: TaskState::Submitted, attempt: 1 };
            let mut log = vec![created_event(&spec, "ann", "t0".into())];
            for (i, op) in ops.iter().enumerate() {
                match decide(current, op, format!("t{}", i + 1)) {
                    Ok(t) => {
                        prop_assert!(!current.state.is_terminal());
                        prop_assert!(t.attempt >= current.attempt);
                        prop_assert_eq!(t.event.attempt, Some(t.attempt));
                        prop_assert_eq!(kind::is_terminal(&t.event.kind), t.is_terminal());
                        current = Current { state: t.state, attempt: t.attempt };
                        log.push(t.event);
                    }
                    Err(TransitionError::AlreadyTerminal(s)) => {
                        prop_assert!(current.state.is_terminal());
                        prop_assert_eq!(s, current.state);
                    }
                    Err(TransitionError::NotAllowed { from, .. }) => {
                        prop_assert_eq!(from, current.state);
                    }
                }
                let terminals = log.iter().filter(|e| kind::is_terminal(&e.kind)).count();
                prop_assert_eq!(terminals, usize::from(current.state.is_terminal()));
                if current.state.is_terminal() {
                    prop_assert!(kind::is_terminal(&log.last().unwrap().kind));
                }
                let status = project(
                    log.iter().enumerate().map(|(i, e)| (Offset(i as u64 + 1), e.clone())),
                );
                prop_assert_eq!(status.state, Some(current.state));
                prop_assert_eq!(status.attempt, current.attempt);
            }
        }
    }

    #[test]
    fn cancel_is_refused_once_the_task_has_ended() {
        let done = Current {
            state: TaskState::Completed,
            attempt: 1,
        };
        let cancel = TaskOp::Cancel {
            by: "ann".into(),
            reason: None,
        };
        assert_eq!(
            decide(done, &cancel, String::new()),
            Err(TransitionError::AlreadyTerminal(TaskState::Completed))
        );
    }

    #[test]
    fn requeue_starts_the_next_attempt() {
        let running = Current {
            state: TaskState::Running,
            attempt: 1,
        };
        let t = decide(
            running,
            &TaskOp::Requeue {
                reason: "lease expired".into(),
            },
            String::new(),
        )
        .unwrap();
        assert_eq!((t.state, t.attempt), (TaskState::Submitted, 2));
        assert_eq!(t.event.kind, kind::TASK_REQUEUED);
    }

    #[test]
    fn a_release_hands_back_a_running_task_as_the_same_attempt() {
        let release = TaskOp::Release {
            reason: "undelivered".into(),
        };
        let running = Current {
            state: TaskState::Running,
            attempt: 2,
        };
        let t = decide(running, &release, String::new()).unwrap();
        assert_eq!((t.state, t.attempt), (TaskState::Submitted, 2));
        assert_eq!(
            (t.event.kind.as_str(), t.event.attempt),
            (kind::TASK_REQUEUED, Some(2))
        );
        let finalizing = Current {
            state: TaskState::Finalizing,
            attempt: 1,
        };
        assert!(decide(finalizing, &release, String::new()).is_err());
    }
}
