//! The control plane across nodes: several `PgStore`s on one database, as several `tether
//! serve` nodes are, racing for the same tasks. Every decision must still happen once: one
//! claim per task, no owner over their limit, one terminal event per task, one task per
//! idempotency key, one requeue per expired lease.
//!
//! The races are real: each round's calls start together behind a barrier and run on a
//! multi-threaded runtime, spread over the nodes. Skipped without `TETHER_TEST_DATABASE_URL`.

mod backends;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tether_core::machine::created_event;
use tether_core::TaskOp;
use tether_store::tail::Wake;
use tether_store::*;
use tether_types::event::kind;
use tether_types::{TaskId, TaskSpec, TaskState};
use tokio::sync::Barrier;

use backends::{events, Backend, Postgres};

const NODES: usize = 3;
const TTL: Duration = Duration::from_secs(10);

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

/// A scratch database and `NODES` stores on it, or `None` when PostgreSQL is not configured.
async fn nodes(what: &str) -> Option<(Postgres, Vec<Arc<PgStore>>)> {
    let backend = Postgres::create(what).await?;
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(backend.open().await);
    }
    Some((backend, nodes))
}

fn new_task(owner: &UserRecord, n: u128, key: Option<&str>) -> (NewTask, tether_types::Event) {
    let spec = TaskSpec {
        description: format!("task {n}"),
        ..TaskSpec::default()
    };
    let id = TaskId::from_random(n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) | 1);
    let created = created_event(&spec, &owner.name, String::new());
    let task = NewTask {
        id,
        owner_id: owner.id,
        spec,
        idempotency: key.map(|k| (k.to_string(), b"same request".to_vec())),
        now: t0(),
    };
    (task, created)
}

async fn submit(store: &PgStore, owner: &UserRecord, n: u128) -> TaskId {
    let (task, created) = new_task(owner, n, None);
    store.create_task(task, created).await.unwrap().task.id
}

fn claim(lease: String, now: DateTime<Utc>, limit: u64) -> Claim {
    Claim {
        worker: format!("worker-{lease}"),
        lease_id: lease,
        now,
        lease_ttl: TTL,
        default_max_concurrent: limit,
    }
}

/// Runs `calls` at once, call `i` on node `i % NODES`, each released by one barrier, and
/// collects their results in order.
async fn race<T, F, Fut>(nodes: &[Arc<PgStore>], calls: usize, call: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, Arc<PgStore>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(calls));
    let handles: Vec<_> = (0..calls)
        .map(|i| {
            let fut = call(i, nodes[i % nodes.len()].clone());
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(calls);
    for h in handles {
        out.push(h.await.expect("a racing call panicked"));
    }
    out
}

/// How many tasks are RUNNING or FINALIZING for `owner`, counted from the rows themselves.
async fn running_rows(store: &PgStore, owner: UserId) -> usize {
    let mut n = 0;
    for state in [TaskState::Running, TaskState::Finalizing] {
        n += store
            .list_tasks(TaskFilter {
                owner_id: Some(owner),
                state: Some(state),
                before_seq: None,
                search: None,
                limit: 10_000,
            })
            .await
            .unwrap()
            .len();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claimers_on_every_node_take_each_task_exactly_once() {
    let Some((_db, nodes)) = nodes("claims across nodes").await else {
        return;
    };
    let ann = nodes[0].create_user("ann", t0()).await.unwrap();
    let bob = nodes[1].create_user("bob", t0()).await.unwrap();
    let mut submitted = HashSet::new();
    for n in 0..40 {
        let owner = if n % 2 == 0 { &ann } else { &bob };
        submitted.insert(submit(&nodes[n as usize % NODES], owner, n).await);
    }
    // Each claimer keeps claiming until it finds nothing.
    let claimed = race(&nodes, 12, |i, node| async move {
        let mut got = Vec::new();
        for round in 0.. {
            let lease = format!("l{i}-{round}");
            match node.claim(claim(lease.clone(), t0(), 1_000)).await.unwrap() {
                Some(c) => {
                    assert_eq!(c.lease.id, lease);
                    got.push(c.task.id)
                }
                None => break,
            }
        }
        got
    })
    .await;
    let all: Vec<TaskId> = claimed.into_iter().flatten().collect();
    let unique: HashSet<TaskId> = all.iter().cloned().collect();
    assert_eq!(all.len(), unique.len(), "a task was claimed twice");
    assert_eq!(unique, submitted, "every task was claimed");
    for id in &submitted {
        let (log, _) = events(&*nodes[0], id).await;
        let started = log.iter().filter(|e| e.kind == kind::TASK_STARTED).count();
        assert_eq!(started, 1, "task {id} started once");
    }
    assert!(nodes[2]
        .claim(claim("late".into(), t0(), 1_000))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_on_different_nodes_never_take_an_owner_past_the_limit() {
    let Some((_db, nodes)) = nodes("admission across nodes").await else {
        return;
    };
    let ann = nodes[0].create_user("ann", t0()).await.unwrap();
    let bob = nodes[0].create_user("bob", t0()).await.unwrap();
    nodes[1].set_max_concurrent("ann", Some(3)).await.unwrap();
    // Ann's tasks are all older than Bob's: claims must get past her once she is full.
    for n in 0..20 {
        submit(&nodes[0], &ann, n).await;
    }
    for n in 20..25 {
        submit(&nodes[0], &bob, n).await;
    }
    let default_limit = 2;
    let claims = |round: usize| {
        move |i: usize, node: Arc<PgStore>| async move {
            node.claim(claim(format!("l{round}-{i}"), t0(), default_limit))
                .await
                .unwrap()
                .map(|c| c.task.owner_id)
        }
    };
    let got = race(&nodes, 12, claims(0)).await;
    let per_owner =
        |got: &[Option<UserId>], owner| got.iter().filter(|o| **o == Some(owner)).count();
    assert_eq!(
        (per_owner(&got, ann.id), per_owner(&got, bob.id)),
        (3, 2),
        "each owner is filled to their limit and not past it"
    );
    assert_eq!(
        nodes[2].running_by_owner(None).await.unwrap(),
        [(ann.id, 3), (bob.id, 2)]
    );
    assert_eq!(running_rows(&nodes[1], ann.id).await, 3);

    // One of Ann's tasks ends: of another burst of claims, exactly one takes her freed slot.
    let running = nodes[0]
        .list_tasks(TaskFilter {
            owner_id: Some(ann.id),
            state: Some(TaskState::Running),
            before_seq: None,
            search: None,
            limit: 1,
        })
        .await
        .unwrap();
    nodes[1]
        .transition(
            &running[0].id,
            TaskOp::Cancel {
                by: "ann".into(),
                reason: None,
            },
            at(1),
        )
        .await
        .unwrap();
    let got = race(&nodes, 12, claims(1)).await;
    assert_eq!(per_owner(&got, ann.id), 1);
    assert_eq!(per_owner(&got, bob.id), 0);
    assert_eq!(
        nodes[0].running_by_owner(Some(ann.id)).await.unwrap(),
        [(ann.id, 3)]
    );
    assert_eq!(running_rows(&nodes[2], ann.id).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_finishes_and_cancels_from_different_nodes_end_a_task_once() {
    let Some((_db, nodes)) = nodes("terminal races across nodes").await else {
        return;
    };
    let ann = nodes[0].create_user("ann", t0()).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let id = submit(&nodes[0], &ann, n).await;
        let c = nodes[1]
            .claim(claim(format!("l{n}"), t0(), 100))
            .await
            .unwrap()
            .expect("a task to claim");
        assert_eq!(c.task.id, id);
        tasks.push((id, c.lease.id));
    }
    for (id, lease) in &tasks {
        // Two finishes (a retried request) and two cancels, on different nodes, at once.
        let results = race(&nodes, 4, |i, node| {
            let (id, lease) = (id.clone(), lease.clone());
            async move {
                if i % 2 == 0 {
                    let outcome = Outcome::Completed {
                        result: Value::Null,
                    };
                    match node.finish(&id, &lease, outcome, at(1)).await {
                        Ok(f) => f.changed,
                        Err(WorkError::Fenced(_)) => false,
                        Err(e) => panic!("finish: {e}"),
                    }
                } else {
                    let cancel = TaskOp::Cancel {
                        by: "ann".into(),
                        reason: None,
                    };
                    match node.transition(&id, cancel, at(1)).await {
                        Ok(_) => true,
                        Err(TransitionFailed::Refused(_)) => false,
                        Err(e) => panic!("cancel: {e}"),
                    }
                }
            }
        })
        .await;
        let changes = results.iter().filter(|changed| **changed).count();
        assert_eq!(
            changes, 1,
            "exactly one of the racing calls ended task {id}"
        );
        let (log, closed) = events(&*nodes[2], id).await;
        let terminals = log.iter().filter(|e| kind::is_terminal(&e.kind)).count();
        assert_eq!(terminals, 1, "one terminal event for {id}");
        assert!(
            kind::is_terminal(&log.last().unwrap().kind),
            "and it is last"
        );
        assert!(closed);
        let state = nodes[0].task(id).await.unwrap().unwrap().state;
        assert!(matches!(state, TaskState::Completed | TaskState::Cancelled));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_idempotency_keys_on_different_nodes_create_one_task() {
    let Some((_db, nodes)) = nodes("idempotency keys across nodes").await else {
        return;
    };
    let ann = nodes[0].create_user("ann", t0()).await.unwrap();
    for k in 0..5u128 {
        let key = format!("key-{k}");
        let ann = ann.clone();
        let results = race(&nodes, 6, |i, node| {
            // Every request has its own new task id, as every node would draw one.
            let (task, created) = new_task(&ann, k * 100 + i as u128, Some(&key));
            async move { node.create_task(task, created).await.unwrap() }
        })
        .await;
        let ids: HashSet<TaskId> = results.iter().map(|r| r.task.id.clone()).collect();
        assert_eq!(ids.len(), 1, "one task for key {key}");
        let fresh = results.iter().filter(|r| !r.replayed).count();
        assert_eq!(fresh, 1, "one request created it, the others replayed it");
    }
    let listed = nodes[1]
        .list_tasks(TaskFilter {
            owner_id: Some(ann.id),
            limit: 100,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 5);
    for task in &listed {
        let (log, _) = events(&*nodes[2], &task.id).await;
        assert_eq!(log.len(), 1, "one task_created event");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconcilers_on_every_node_requeue_each_expired_lease_once() {
    let Some((_db, nodes)) = nodes("expiry across nodes").await else {
        return;
    };
    let ann = nodes[0].create_user("ann", t0()).await.unwrap();
    let mut ids = HashSet::new();
    for n in 0..10 {
        ids.insert(submit(&nodes[0], &ann, n).await);
        nodes[1]
            .claim(claim(format!("l{n}"), t0(), 100))
            .await
            .unwrap()
            .expect("a task to claim");
    }
    let expired = race(&nodes, 6, |_, node| async move {
        node.expire_leases(at(11)).await.unwrap()
    })
    .await;
    let mut per_task: HashMap<TaskId, usize> = HashMap::new();
    for e in expired.into_iter().flatten() {
        assert_eq!(e.state, TaskState::Submitted);
        *per_task.entry(e.task).or_default() += 1;
    }
    assert_eq!(per_task.len(), ids.len());
    assert!(per_task.values().all(|n| *n == 1), "{per_task:?}");
    for id in &ids {
        let task = nodes[2].task(id).await.unwrap().unwrap();
        assert_eq!((task.state, task.attempt), (TaskState::Submitted, 2));
        let (log, _) = events(&*nodes[0], id).await;
        let requeued = log.iter().filter(|e| e.kind == kind::TASK_REQUEUED).count();
        assert_eq!(requeued, 1);
    }
}

/// Returns once every node's listener runs its notification loop. On connecting, a listener
/// wakes every work waiter once (it may have missed announcements), which a test must not
/// take for the announcement it waits for. Two tail notices from another node are the proof:
/// the first may be caught up by the listener's start-up, but the second is appended after
/// that and can only arrive through the loop, which starts after that wake.
async fn listening(nodes: &[Arc<PgStore>]) {
    for (k, node) in nodes.iter().enumerate() {
        let other = &nodes[(k + 1) % nodes.len()];
        let path = format!("sync-{k}");
        let json = || Some("application/json".to_string());
        let create = CreateStream {
            content_type: json(),
            ttl_secs: None,
            expires_at: None,
            closed: false,
            fork: None,
            body: bytes::Bytes::new(),
            ..CreateStream::default()
        };
        other.create(&path, create).await.unwrap();
        let (_, mut watch) = node.watch(&path).await.unwrap();
        for n in 1..=2 {
            let append = Append {
                content_type: json(),
                body: bytes::Bytes::from_static(b"1"),
                ..Append::default()
            };
            other.append(&path, append).await.unwrap();
            match watch.wait_past(n - 1, Duration::from_secs(10)).await {
                Wake::Changed(tail) if tail.next >= n => {}
                other => panic!("node {k} did not hear of another node's append: {other:?}"),
            }
        }
    }
}

/// Waits (bounded) for `node`'s work notification, armed before `action` runs on another
/// node: the announcement is sent in the transaction, so it arrives only after the commit.
async fn announces_work<F: std::future::Future>(node: &PgStore, action: F) -> F::Output {
    let notified = node.work_notify().notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let out = action.await;
    tokio::time::timeout(Duration::from_secs(10), notified)
        .await
        .expect("the other node heard of the new work");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_that_free_work_wake_claim_waiters_on_other_nodes() {
    let Some((_db, nodes)) = nodes("work notifications across nodes").await else {
        return;
    };
    listening(&nodes).await;
    let ann = nodes[0].create_user("ann", t0()).await.unwrap();
    // A new task.
    let id = announces_work(&nodes[1], submit(&nodes[0], &ann, 1)).await;
    let claimed = nodes[2]
        .claim(claim("l1".into(), t0(), 1))
        .await
        .unwrap()
        .expect("the task");
    assert_eq!(claimed.task.id, id);
    // A requeue.
    let expired = announces_work(&nodes[2], nodes[0].expire_leases(at(11))).await;
    assert_eq!(expired.unwrap().len(), 1);
    nodes[2]
        .claim(claim("l2".into(), at(12), 1))
        .await
        .unwrap()
        .expect("the requeued task");
    // A running task ending frees its owner's slot.
    let outcome = Outcome::Completed {
        result: Value::Null,
    };
    let finished = announces_work(&nodes[0], nodes[1].finish(&id, "l2", outcome, at(13))).await;
    assert!(finished.unwrap().changed);
    // A raised limit.
    let raised = announces_work(&nodes[1], nodes[2].set_max_concurrent("ann", Some(5))).await;
    raised.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_without_a_user_row_is_still_held_to_the_default_limit() {
    let Some((_db, nodes)) = nodes("admission without a user row").await else {
        return;
    };
    // Tasks name their owner by id; nothing ties that to a `users` row.
    let ghost = UserRecord {
        id: 4242,
        name: "ghost".into(),
        created_at: t0(),
        max_concurrent: None,
    };
    for n in 0..10 {
        submit(&nodes[n as usize % NODES], &ghost, n).await;
    }
    let got = race(&nodes, 9, |i, node| async move {
        node.claim(claim(format!("l{i}"), t0(), 2)).await.unwrap()
    })
    .await;
    assert_eq!(got.iter().flatten().count(), 2);
    assert_eq!(
        nodes[1].running_by_owner(Some(ghost.id)).await.unwrap(),
        [(ghost.id, 2)]
    );
}
