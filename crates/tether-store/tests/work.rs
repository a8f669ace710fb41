//! Execution on every backend: claims, admission, leases, steps with rewind, fencing,
//! finishing, expiry and nudges. Time is passed in, so lease expiry needs no sleeping.
//!
//! Each case is generic over a [`Backend`]; `work_suite!` at the bottom runs every case on
//! SQLite and on PostgreSQL.

#[macro_use]
mod backends;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tether_core::lease::{Fenced, Loss};
use tether_core::machine::created_event;
use tether_store::*;
use tether_types::event::kind;
use tether_types::{Event, TaskId, TaskSpec, TaskState};

use backends::{events as log, Backend};

const TTL: Duration = Duration::from_secs(10);

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

async fn submit(store: &impl ControlStore, owner: &UserRecord, n: u128) -> TaskId {
    let spec = TaskSpec {
        description: format!("task {n}"),
        ..TaskSpec::default()
    };
    let id = TaskId::from_random(n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835));
    store
        .create_task(
            NewTask {
                id: id.clone(),
                owner_id: owner.id,
                spec: spec.clone(),
                idempotency: None,
                now: t0(),
            },
            created_event(&spec, &owner.name, String::new()),
        )
        .await
        .unwrap();
    id
}

fn claim(lease: &str, now: DateTime<Utc>, limit: u64) -> Claim {
    Claim {
        worker: "w1".into(),
        lease_id: lease.into(),
        now,
        lease_ttl: TTL,
        default_max_concurrent: limit,
    }
}

fn event(kind: &str, step: Option<&str>, attempt: Option<u32>) -> Event {
    let mut e = Event::new(kind, String::new(), Value::Null);
    e.step = step.map(str::to_string);
    e.attempt = attempt;
    e
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

async fn claims_go_oldest_first_within_each_owners_limit<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let ann = store.create_user("ann", t0()).await.unwrap();
    let bob = store.create_user("bob", t0()).await.unwrap();
    let a1 = submit(&*store, &ann, 1).await;
    let a2 = submit(&*store, &ann, 2).await;
    let b1 = submit(&*store, &bob, 3).await;

    let first = store.claim(claim("l1", t0(), 1)).await.unwrap().unwrap();
    assert_eq!(first.task.id, a1);
    assert_eq!(first.task.state, TaskState::Running);
    // Ann is at her limit of one: Bob's task comes next although Ann's second is older.
    let second = store.claim(claim("l2", t0(), 1)).await.unwrap().unwrap();
    assert_eq!(second.task.id, b1);
    assert!(store.claim(claim("l3", t0(), 1)).await.unwrap().is_none());
    // Finishing frees the slot (counted from states, nothing to release).
    store
        .finish(
            &a1,
            "l1",
            Outcome::Completed {
                result: Value::Null,
            },
            t0(),
        )
        .await
        .unwrap();
    let third = store.claim(claim("l3", t0(), 1)).await.unwrap().unwrap();
    assert_eq!(third.task.id, a2);
}

async fn concurrent_claims_never_hand_one_task_to_two_workers<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let ann = store.create_user("ann", t0()).await.unwrap();
    for n in 0..20 {
        submit(&*store, &ann, n).await;
    }
    let claims = (0..40).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.claim(claim(&format!("l{i}"), t0(), 100)).await })
    });
    let mut got = Vec::new();
    for c in claims {
        if let Some(claimed) = c.await.unwrap().unwrap() {
            got.push(claimed.task.id);
        }
    }
    let unique: std::collections::HashSet<_> = got.iter().collect();
    assert_eq!((got.len(), unique.len()), (20, 20));
}

async fn a_lost_lease_is_fenced_and_the_retry_rewinds_the_step_it_wrote_to<B: Backend>(
    backend: &B,
) {
    let store = backend.open().await;
    let ann = store.create_user("ann", t0()).await.unwrap();
    let id = submit(&*store, &ann, 1).await;
    store.claim(claim("l1", t0(), 10)).await.unwrap().unwrap();
    assert_eq!(
        store
            .begin_step(&id, "l1", "hydrate", at(1))
            .await
            .unwrap()
            .epoch,
        1
    );
    store
        .complete_step(&id, "l1", "hydrate", 1, json!({"files": 3}), at(1))
        .await
        .unwrap();
    let clone = store.begin_step(&id, "l1", "clone", at(1)).await.unwrap();
    assert_eq!(
        clone,
        StepStart {
            epoch: 1,
            checkpoint: None
        }
    );
    store
        .worker_events(
            &id,
            "l1",
            vec![event("log", Some("clone"), None)],
            None,
            at(2),
        )
        .await
        .unwrap();

    // The worker dies; its lease runs out; the reconciler requeues.
    let expired = store.expire_leases(at(5)).await.unwrap();
    assert!(expired.is_empty(), "the lease is still valid at 5 s");
    let expired = store.expire_leases(at(11)).await.unwrap();
    assert_eq!(
        expired,
        [Expired {
            task: id.clone(),
            state: TaskState::Submitted
        }]
    );

    // A zombie write from the old lease is refused and not stored.
    let zombie = store
        .worker_events(
            &id,
            "l1",
            vec![event("log", Some("clone"), None)],
            None,
            at(12),
        )
        .await
        .unwrap_err();
    assert_eq!(zombie, WorkError::Fenced(Fenced::LeaseLost(Loss::Replaced)));

    let again = store.claim(claim("l2", at(12), 10)).await.unwrap().unwrap();
    assert_eq!(again.task.attempt, 2);
    assert_eq!(
        again.checkpoints,
        [("hydrate".to_string(), json!({"files": 3}))]
    );
    // The completed step is skipped with its checkpoint; the other is retried as epoch 2.
    let hydrate = store
        .begin_step(&id, "l2", "hydrate", at(12))
        .await
        .unwrap();
    assert_eq!(hydrate.checkpoint, Some(json!({"files": 3})));
    assert_eq!(
        store
            .begin_step(&id, "l2", "clone", at(12))
            .await
            .unwrap()
            .epoch,
        2
    );
    // Asking again with the same lease keeps the epoch and writes no second rewind.
    assert_eq!(
        store
            .begin_step(&id, "l2", "clone", at(12))
            .await
            .unwrap()
            .epoch,
        2
    );
    // A batch with one stale event is refused whole: its good event is not stored either.
    let stale = store
        .worker_events(
            &id,
            "l2",
            vec![
                event("log", Some("clone"), None),
                event("log", Some("clone"), Some(1)),
            ],
            None,
            at(13),
        )
        .await
        .unwrap_err();
    let stale_step = store
        .complete_step(&id, "l2", "clone", 1, Value::Null, at(13))
        .await
        .unwrap_err();
    assert!(matches!(
        stale_step,
        WorkError::Fenced(Fenced::StaleAttempt {
            current: 2,
            given: 1,
            ..
        })
    ));
    assert!(matches!(
        stale,
        WorkError::Fenced(Fenced::StaleAttempt {
            current: 2,
            given: 1,
            ..
        })
    ));
    store
        .worker_events(
            &id,
            "l2",
            vec![event("log", Some("clone"), None)],
            None,
            at(13),
        )
        .await
        .unwrap();
    store
        .finish(
            &id,
            "l2",
            Outcome::Completed {
                result: json!("ok"),
            },
            at(14),
        )
        .await
        .unwrap();

    let (events, closed) = log(&*store, &id).await;
    assert_eq!(
        kinds(&events),
        [
            kind::TASK_CREATED,
            kind::TASK_STARTED,
            kind::STEP_COMPLETED,
            "log",
            kind::TASK_REQUEUED,
            kind::TASK_STARTED,
            kind::STREAM_REWIND,
            "log",
            kind::TASK_COMPLETED
        ]
    );
    assert!(closed);
    let rewind = &events[6];
    assert_eq!(rewind.step.as_deref(), Some("clone"));
    assert_eq!(rewind.data["new_epoch"], 2);
    assert_eq!(
        rewind.data["superseded_after"],
        "0000000000000000_0000000000000003"
    );
    assert_eq!((events[3].attempt, events[7].attempt), (Some(1), Some(2)));
    let status = tether_core::project(
        events
            .iter()
            .enumerate()
            .map(|(i, e)| (tether_types::Offset(i as u64 + 1), e.clone())),
    );
    assert_eq!(status.state, Some(TaskState::Completed));
}

async fn finishing_twice_answers_the_same_and_appends_one_terminal_event<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let ann = store.create_user("ann", t0()).await.unwrap();
    let id = submit(&*store, &ann, 1).await;
    store.claim(claim("l1", t0(), 10)).await.unwrap().unwrap();
    let failed = Outcome::Failed {
        code: "AGENT_ERROR".into(),
        message: "exit 3".into(),
    };
    let first = store
        .finish(&id, "l1", failed.clone(), at(1))
        .await
        .unwrap();
    let again = store.finish(&id, "l1", failed, at(2)).await.unwrap();
    assert_eq!(first.task, again.task);
    assert!(first.changed && !again.changed);
    assert_eq!(first.task.state, TaskState::Failed);
    // A different outcome, or another lease, is not a repeat.
    let other = store
        .finish(
            &id,
            "l1",
            Outcome::Completed {
                result: Value::Null,
            },
            at(2),
        )
        .await
        .unwrap_err();
    assert_eq!(other, WorkError::Fenced(Fenced::LeaseLost(Loss::Ended)));
    let (events, _) = log(&*store, &id).await;
    let terminals = events.iter().filter(|e| kind::is_terminal(&e.kind)).count();
    assert_eq!(terminals, 1);
}

async fn heartbeats_extend_the_lease_and_tell_a_cancelled_worker_to_stop<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let ann = store.create_user("ann", t0()).await.unwrap();
    let id = submit(&*store, &ann, 1).await;
    store.claim(claim("l1", t0(), 10)).await.unwrap().unwrap();
    let beat = store.heartbeat(&id, "l1", at(8), TTL).await.unwrap();
    assert_eq!(beat.expires_at, at(18));
    assert!(
        store.expire_leases(at(15)).await.unwrap().is_empty(),
        "extended"
    );
    assert_eq!(
        store.heartbeat(&id, "other", at(9), TTL).await.unwrap_err(),
        WorkError::Fenced(Fenced::LeaseLost(Loss::Replaced))
    );

    store
        .create_nudge(&id, nudge("n1", "also update the changelog"), at(9), 10)
        .await
        .unwrap();
    let beat = store.heartbeat(&id, "l1", at(10), TTL).await.unwrap();
    assert_eq!(beat.nudges.len(), 1);
    store.ack_nudge(&id, "l1", "n1", at(10)).await.unwrap();
    store.ack_nudge(&id, "l1", "n1", at(11)).await.unwrap();
    assert!(store
        .heartbeat(&id, "l1", at(11), TTL)
        .await
        .unwrap()
        .nudges
        .is_empty());

    store
        .transition(
            &id,
            tether_core::TaskOp::Cancel {
                by: "ann".into(),
                reason: None,
            },
            at(12),
        )
        .await
        .unwrap();
    let beat = store.heartbeat(&id, "l1", at(12), TTL).await.unwrap();
    assert!(beat.cancel_requested);
    let late = store
        .worker_events(&id, "l1", vec![event("log", None, None)], None, at(12))
        .await;
    // The cancelled task's own worker is told it was a cancel, not a lost lease, so it can
    // give its command the grace period whichever call of it hears first.
    assert_eq!(late.unwrap_err(), WorkError::Fenced(Fenced::Cancelled));
    let (events, _) = log(&*store, &id).await;
    assert_eq!(
        kinds(&events),
        [
            kind::TASK_CREATED,
            kind::TASK_STARTED,
            kind::NUDGE_SENT,
            kind::NUDGE_ACKNOWLEDGED,
            kind::TASK_CANCELLED
        ]
    );
    // Who said what is in the log, not only that something was acknowledged.
    assert_eq!(
        events[2].data,
        serde_json::json!({"nudge_id": "n1", "message": "also update the changelog", "author": "ann"})
    );
}

async fn attempts_run_out_into_timed_out_with_lease_expired<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let ann = store.create_user("ann", t0()).await.unwrap();
    let id = submit(&*store, &ann, 1).await;
    for attempt in 1..=3 {
        let start = at(attempt * 100);
        let claimed = store
            .claim(claim(&format!("l{attempt}"), start, 10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.task.attempt, attempt as u32);
        store
            .expire_leases(start + chrono::Duration::seconds(11))
            .await
            .unwrap();
    }
    let task = store.task(&id).await.unwrap().unwrap();
    assert_eq!(task.state, TaskState::TimedOut);
    let (events, closed) = log(&*store, &id).await;
    assert_eq!(events.last().unwrap().data["code"], "LEASE_EXPIRED");
    assert!(closed);
}

/// A nudge from ann.
fn nudge<'a>(id: &'a str, message: &'a str) -> NewNudge<'a> {
    NewNudge {
        id,
        message,
        author: "ann",
    }
}

async fn nudges_are_limited_per_minute_and_refused_on_ended_tasks<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let ann = store.create_user("ann", t0()).await.unwrap();
    let id = submit(&*store, &ann, 1).await;
    for i in 0..3 {
        store
            .create_nudge(&id, nudge(&format!("n{i}"), "hi"), at(i), 3)
            .await
            .unwrap();
    }
    let too_many = store
        .create_nudge(&id, nudge("n3", "hi"), at(10), 3)
        .await
        .unwrap_err();
    assert_eq!(
        too_many,
        NudgeError::TooMany {
            limit: 3,
            retry_after_secs: 50
        }
    );
    store
        .create_nudge(&id, nudge("n4", "hi"), at(61), 3)
        .await
        .unwrap();
    store
        .transition(
            &id,
            tether_core::TaskOp::Cancel {
                by: "ann".into(),
                reason: None,
            },
            at(62),
        )
        .await
        .unwrap();
    let ended = store
        .create_nudge(&id, nudge("n5", "hi"), at(63), 3)
        .await
        .unwrap_err();
    assert_eq!(ended, NudgeError::Terminal(TaskState::Cancelled));
    // Each accepted nudge is recorded once, with its acceptance; refused ones not at all.
    let (events, _) = log(&*store, &id).await;
    let sent: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e.kind == kind::NUDGE_SENT)
        .map(|e| &e.data["nudge_id"])
        .collect();
    assert_eq!(sent, ["n0", "n1", "n2", "n4"]);
}

async fn a_users_own_limit_overrides_the_default_and_max_attempts_comes_from_the_spec<
    B: Backend,
>(
    backend: &B,
) {
    let store = backend.open().await;
    let ann = store.create_user("ann", t0()).await.unwrap();
    store.set_max_concurrent("ann", Some(2)).await.unwrap();
    assert_eq!(
        store
            .set_max_concurrent("nobody", Some(2))
            .await
            .unwrap_err(),
        UserError::NotFound
    );
    for n in 0..3 {
        submit(&*store, &ann, n).await;
    }
    assert!(store.claim(claim("l1", t0(), 1)).await.unwrap().is_some());
    assert!(
        store.claim(claim("l2", t0(), 1)).await.unwrap().is_some(),
        "her limit is 2"
    );
    assert!(store.claim(claim("l3", t0(), 1)).await.unwrap().is_none());
    assert_eq!(store.running_by_owner(None).await.unwrap(), [(ann.id, 2)]);

    let spec = TaskSpec {
        description: "one shot".into(),
        max_attempts: Some(1),
        ..TaskSpec::default()
    };
    let bob = store.create_user("bob", t0()).await.unwrap();
    let id = TaskId::from_random(77);
    store
        .create_task(
            NewTask {
                id: id.clone(),
                owner_id: bob.id,
                spec: spec.clone(),
                idempotency: None,
                now: t0(),
            },
            created_event(&spec, "bob", String::new()),
        )
        .await
        .unwrap();
    let claimed = store.claim(claim("l9", t0(), 10)).await.unwrap().unwrap();
    assert_eq!(claimed.task.id, id);
    store.expire_leases(at(11)).await.unwrap();
    assert_eq!(
        store.task(&id).await.unwrap().unwrap().state,
        TaskState::TimedOut
    );
}

async fn a_released_claim_is_claimable_again_as_the_same_attempt<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let ann = store.create_user("ann", t0()).await.unwrap();
    let id = submit(&*store, &ann, 1).await;
    let first = store.claim(claim("l1", t0(), 10)).await.unwrap().unwrap();
    assert_eq!(first.task.attempt, 1);

    assert!(store.release(&id, "l1", at(1)).await.unwrap());
    assert_eq!(
        store.task(&id).await.unwrap().unwrap().state,
        TaskState::Submitted
    );
    // Nothing is handed back twice, and the released lease writes nothing more.
    assert!(!store.release(&id, "l1", at(1)).await.unwrap());
    assert!(store
        .worker_events(&id, "l1", vec![event("log", None, None)], None, at(1))
        .await
        .is_err());
    let again = store.claim(claim("l2", at(1), 10)).await.unwrap().unwrap();
    assert_eq!((&again.task.id, again.task.attempt), (&id, 1));
    // The old lease cannot release the new holder's claim.
    assert!(!store.release(&id, "l1", at(2)).await.unwrap());

    let (events, _) = log(&*store, &id).await;
    assert_eq!(
        kinds(&events),
        [
            kind::TASK_CREATED,
            kind::TASK_STARTED,
            kind::TASK_REQUEUED,
            kind::TASK_STARTED
        ]
    );
    assert!(
        events.iter().all(|e| e.attempt.unwrap_or(1) == 1),
        "{events:?}"
    );
}

/// Instantiates every case for one backend.
macro_rules! work_suite {
    ($backend:ty) => {
        backend_cases!($backend;
            claims_go_oldest_first_within_each_owners_limit,
            concurrent_claims_never_hand_one_task_to_two_workers,
            a_lost_lease_is_fenced_and_the_retry_rewinds_the_step_it_wrote_to,
            finishing_twice_answers_the_same_and_appends_one_terminal_event,
            heartbeats_extend_the_lease_and_tell_a_cancelled_worker_to_stop,
            attempts_run_out_into_timed_out_with_lease_expired,
            nudges_are_limited_per_minute_and_refused_on_ended_tasks,
            a_users_own_limit_overrides_the_default_and_max_attempts_comes_from_the_spec,
            a_released_claim_is_claimable_again_as_the_same_attempt,
        );
    };
}

mod sqlite {
    work_suite!(crate::backends::Sqlite);
}

mod postgres {
    work_suite!(crate::backends::Postgres);
}
