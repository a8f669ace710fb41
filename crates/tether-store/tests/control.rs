//! The control store on every backend: task lifecycle, idempotency, users and tokens, and
//! the lifecycle invariants under concurrent, repeated operations.
//!
//! Each case is generic over a [`Backend`]; `control_suite!` at the bottom runs every case on
//! SQLite and on PostgreSQL.

#[macro_use]
mod backends;

use bytes::Bytes;
use chrono::Utc;
use proptest::prelude::*;
use tether_core::machine::created_event;
use tether_core::{TaskOp, TransitionError};
use tether_store::*;
use tether_types::event::kind;
use tether_types::{Role, TaskId, TaskSpec, TaskState};

use backends::{events, Backend};

fn spec(text: &str) -> TaskSpec {
    TaskSpec {
        description: text.into(),
        ..TaskSpec::default()
    }
}

async fn user(store: &impl ControlStore, name: &str) -> UserRecord {
    store.create_user(name, Utc::now()).await.unwrap()
}

async fn submit(
    store: &impl ControlStore,
    owner: &UserRecord,
    key: Option<(&str, &[u8])>,
) -> CreatedTask {
    let spec = spec("fix the flaky test");
    let id = TaskId::from_random(rand_id());
    store
        .create_task(
            NewTask {
                id,
                owner_id: owner.id,
                spec: spec.clone(),
                idempotency: key.map(|(k, h)| (k.to_string(), h.to_vec())),
                now: Utc::now(),
            },
            created_event(&spec, &owner.name, "2026-11-21T10:00:00.000Z".into()),
        )
        .await
        .unwrap()
}

fn rand_id() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) as u128;
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
}

async fn a_task_starts_with_its_created_event_and_ends_with_one_terminal_event<B: Backend>(
    backend: &B,
) {
    let store = backend.open().await;
    let store = &*store;
    let ann = user(store, "ann").await;
    let task = submit(store, &ann, None).await.task;
    assert_eq!(
        (task.state, task.attempt, task.owner.as_str()),
        (TaskState::Submitted, 1, "ann")
    );

    store
        .transition(&task.id, TaskOp::Start { worker: None }, Utc::now())
        .await
        .unwrap();
    let cancel = TaskOp::Cancel {
        by: "ann".into(),
        reason: None,
    };
    let done = store
        .transition(&task.id, cancel.clone(), Utc::now())
        .await
        .unwrap();
    assert_eq!(done.task.state, TaskState::Cancelled);
    assert_eq!(
        store
            .transition(&task.id, cancel, Utc::now())
            .await
            .unwrap_err(),
        TransitionFailed::Refused(TransitionError::AlreadyTerminal(TaskState::Cancelled))
    );

    let (log, closed) = events(store, &task.id).await;
    let kinds: Vec<&str> = log.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [kind::TASK_CREATED, kind::TASK_STARTED, kind::TASK_CANCELLED]
    );
    assert!(closed, "the stream closes after the terminal event");
    assert_eq!(done.offset.0, 3);

    let late = store
        .append_events(
            &task.id,
            EventAppend {
                events: vec![Bytes::from_static(br#"{"type":"log"}"#)],
                producer: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(late, AppendEventsError::Terminal(TaskState::Cancelled));
}

async fn an_idempotency_key_returns_the_original_task_and_refuses_another_request<B: Backend>(
    backend: &B,
) {
    let store = backend.open().await;
    let store = &*store;
    let ann = user(store, "ann").await;
    let bob = user(store, "bob").await;
    let first = submit(store, &ann, Some(("k1", b"hash-a"))).await;
    let again = submit(store, &ann, Some(("k1", b"hash-a"))).await;
    assert!(!first.replayed && again.replayed);
    assert_eq!(first.task.id, again.task.id);

    // Keys are per user.
    let bobs = submit(store, &bob, Some(("k1", b"hash-a"))).await;
    assert!(!bobs.replayed);
    assert_ne!(bobs.task.id, first.task.id);

    let spec = spec("something else");
    let reused = store
        .create_task(
            NewTask {
                id: TaskId::from_random(rand_id()),
                owner_id: ann.id,
                spec: spec.clone(),
                idempotency: Some(("k1".into(), b"hash-b".to_vec())),
                now: Utc::now(),
            },
            created_event(&spec, "ann", String::new()),
        )
        .await
        .unwrap_err();
    assert_eq!(reused, CreateTaskError::KeyReused);
    let listed = store
        .list_tasks(TaskFilter {
            owner_id: Some(ann.id),
            limit: 10,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "no second task was created");
}

async fn tasks_list_newest_first_by_owner_and_state_with_a_cursor<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let store = &*store;
    let ann = user(store, "ann").await;
    let bob = user(store, "bob").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit(store, &ann, None).await.task.id);
    }
    submit(store, &bob, None).await;
    store
        .transition(&ids[1], TaskOp::Start { worker: None }, Utc::now())
        .await
        .unwrap();

    let page = |before_seq, state| TaskFilter {
        owner_id: Some(ann.id),
        state,
        before_seq,
        search: None,
        limit: 3,
    };
    let first = store.list_tasks(page(None, None)).await.unwrap();
    let got: Vec<_> = first.iter().map(|t| t.id.clone()).collect();
    assert_eq!(got, [ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    let second = store
        .list_tasks(page(Some(first[2].seq), None))
        .await
        .unwrap();
    let got: Vec<_> = second.iter().map(|t| t.id.clone()).collect();
    assert_eq!(got, [ids[1].clone(), ids[0].clone()]);
    let running = store
        .list_tasks(page(None, Some(TaskState::Running)))
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].id, ids[1]);

    let counts = store.count_tasks().await.unwrap();
    assert!(counts.contains(&(TaskState::Submitted, 5)));
    assert!(counts.contains(&(TaskState::Running, 1)));
}

async fn tokens_resolve_to_their_user_until_revoked<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let store = &*store;
    user(store, "ann").await;
    assert_eq!(
        store.create_user("ann", Utc::now()).await.unwrap_err(),
        UserError::Exists
    );
    let token = |id: &str, user: &str, hash: &[u8]| NewToken {
        id: id.into(),
        user: user.into(),
        role: Role::Worker,
        hash: hash.to_vec(),
        now: Utc::now(),
    };
    assert_eq!(
        store
            .create_token(token("t0", "nobody", b"h0"))
            .await
            .unwrap_err(),
        UserError::NotFound
    );
    store.create_token(token("t1", "ann", b"h1")).await.unwrap();
    let who = store.principal(b"h1").await.unwrap().unwrap();
    assert_eq!(
        (who.user.as_str(), who.role, who.token_id.as_str()),
        ("ann", Role::Worker, "t1")
    );
    assert_eq!(store.principal(b"other").await.unwrap(), None);
    store.revoke_token("t1", Utc::now()).await.unwrap();
    assert_eq!(store.principal(b"h1").await.unwrap(), None);
    assert_eq!(
        store.revoke_token("t1", Utc::now()).await.unwrap_err(),
        UserError::TokenNotFound
    );
    assert_eq!(store.user_count().await.unwrap(), 1);
}

/// A user with one live token, `t1`, whose hash is `h1`.
async fn ann_with_a_token(store: &impl ControlStore) {
    user(store, "ann").await;
    store
        .create_token(NewToken {
            id: "t1".into(),
            user: "ann".into(),
            role: Role::User,
            hash: b"h1".to_vec(),
            now: Utc::now(),
        })
        .await
        .unwrap();
}

fn secret(hash: &[u8], token: &str, ttl_secs: i64) -> NewSecret {
    let now = Utc::now();
    NewSecret {
        hash: hash.to_vec(),
        token_id: token.into(),
        now,
        expires_at: now + chrono::Duration::seconds(ttl_secs),
    }
}

async fn a_login_code_is_taken_once_and_not_after_it_expires<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let store = &*store;
    ann_with_a_token(store).await;
    store
        .create_login_code(secret(b"c1", "t1", 600))
        .await
        .unwrap();
    let now = Utc::now();
    assert_eq!(
        store.take_login_code(b"c1", now).await.unwrap().as_deref(),
        Some("t1")
    );
    assert_eq!(
        store.take_login_code(b"c1", now).await.unwrap(),
        None,
        "a code works once"
    );
    assert_eq!(store.take_login_code(b"unknown", now).await.unwrap(), None);

    store
        .create_login_code(secret(b"c2", "t1", 600))
        .await
        .unwrap();
    let later = now + chrono::Duration::seconds(601);
    assert_eq!(
        store.take_login_code(b"c2", later).await.unwrap(),
        None,
        "an expired code is refused"
    );

    assert_eq!(
        store
            .create_login_code(secret(b"c3", "nope", 600))
            .await
            .unwrap_err(),
        UserError::TokenNotFound,
        "a code needs a live token"
    );
}

async fn a_session_acts_as_its_token_until_revoked_expired_or_deleted<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let store = &*store;
    ann_with_a_token(store).await;
    store
        .create_session(secret(b"s1", "t1", 600))
        .await
        .unwrap();
    store
        .create_session(secret(b"s2", "t1", 600))
        .await
        .unwrap();
    let now = Utc::now();
    let who = store.session(b"s1", now).await.unwrap().unwrap();
    assert_eq!(
        (who.user.as_str(), who.role, who.token_id.as_str()),
        ("ann", Role::User, "t1")
    );
    assert_eq!(store.session(b"other", now).await.unwrap(), None);
    let later = now + chrono::Duration::seconds(601);
    assert_eq!(
        store.session(b"s1", later).await.unwrap(),
        None,
        "an expired session is refused"
    );

    store.delete_session(b"s2").await.unwrap();
    assert_eq!(store.session(b"s2", now).await.unwrap(), None);
    store.delete_session(b"s2").await.unwrap();

    store.revoke_token("t1", Utc::now()).await.unwrap();
    assert_eq!(
        store.session(b"s1", now).await.unwrap(),
        None,
        "a revoked token's session is refused"
    );
    assert_eq!(
        store
            .create_session(secret(b"s3", "t1", 600))
            .await
            .unwrap_err(),
        UserError::TokenNotFound
    );
}

async fn tasks_are_searched_by_description_repository_and_metadata<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let store = &*store;
    let ann = user(store, "ann").await;
    let mut ids = Vec::new();
    for (description, repository, ticket) in [
        ("Fix the flaky LOGIN test", None, "OPS-1"),
        ("bump tokio", Some("acme/login-service"), "OPS-2"),
        ("write release notes", Some("acme/docs"), "LOGIN-7"),
        ("tidy the readme", Some("acme/docs"), "OPS-3"),
    ] {
        let spec = TaskSpec {
            description: description.into(),
            repository: repository.map(str::to_string),
            metadata: serde_json::Map::from_iter([("ticket".to_string(), ticket.into())]),
            ..TaskSpec::default()
        };
        let created = store
            .create_task(
                NewTask {
                    id: TaskId::from_random(rand_id()),
                    owner_id: ann.id,
                    spec: spec.clone(),
                    idempotency: None,
                    now: Utc::now(),
                },
                created_event(&spec, &ann.name, "2026-11-21T10:00:00.000Z".into()),
            )
            .await
            .unwrap();
        ids.push(created.task.id);
    }
    let search = |text: &str, before_seq| TaskFilter {
        owner_id: Some(ann.id),
        search: Some(text.to_string()),
        before_seq,
        limit: 2,
        ..TaskFilter::default()
    };
    // Description (any case), repository and metadata all match; newest first, paged.
    let first = store.list_tasks(search("login", None)).await.unwrap();
    let got: Vec<_> = first.iter().map(|t| t.id.clone()).collect();
    assert_eq!(got, [ids[2].clone(), ids[1].clone()]);
    let rest = store
        .list_tasks(search("login", Some(first[1].seq)))
        .await
        .unwrap();
    let got: Vec<_> = rest.iter().map(|t| t.id.clone()).collect();
    assert_eq!(got, [ids[0].clone()]);
    // The spec's other fields and its JSON keys are not searched; `%` is no wildcard.
    for text in ["description", "repository", "%", "nothing like this"] {
        let none = store.list_tasks(search(text, None)).await.unwrap();
        assert!(none.is_empty(), "{text:?} matched {none:?}");
    }
}

async fn users_and_live_tokens_are_listed_with_when_each_token_was_last_used<B: Backend>(
    backend: &B,
) {
    let store = backend.open().await;
    let store = &*store;
    let ann = user(store, "ann").await;
    user(store, "bob").await;
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["ann", "bob"]);
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    let token = |id: &str, user: &str, ms: i64| NewToken {
        id: id.into(),
        user: user.into(),
        role: Role::User,
        hash: id.as_bytes().to_vec(),
        now: at(ms),
    };
    store.create_token(token("t1", "ann", 1_000)).await.unwrap();
    store.create_token(token("t2", "bob", 2_000)).await.unwrap();
    store.create_token(token("t3", "ann", 3_000)).await.unwrap();
    store.revoke_token("t3", Utc::now()).await.unwrap();

    store
        .record_token_use(vec![("t1".into(), at(5_000)), ("t2".into(), at(6_000))])
        .await
        .unwrap();
    // An older time never moves last use back.
    store
        .record_token_use(vec![("t1".into(), at(4_000)), ("gone".into(), at(9_000))])
        .await
        .unwrap();
    let all = store.list_tokens(None).await.unwrap();
    let seen: Vec<(&str, &str, Option<i64>)> = all
        .iter()
        .map(|t| {
            (
                t.id.as_str(),
                t.user.as_str(),
                t.last_used_at.map(|t| t.timestamp_millis()),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("t1", "ann", Some(5_000)), ("t2", "bob", Some(6_000))],
        "revoked tokens are not listed"
    );
    assert_eq!(all[0].created_at, at(1_000));
    let anns = store.list_tokens(Some(ann.id)).await.unwrap();
    assert_eq!(anns.len(), 1);
    assert_eq!(anns[0].id, "t1");
}

fn arb_op() -> impl Strategy<Value = TaskOp> {
    prop_oneof![
        Just(TaskOp::Start { worker: None }),
        Just(TaskOp::Finalize),
        Just(TaskOp::Complete {
            result: serde_json::Value::Null
        }),
        Just(TaskOp::Fail {
            code: "AGENT_ERROR".into(),
            message: "exit 1".into()
        }),
        Just(TaskOp::TimeOut {
            code: "LEASE_EXPIRED".into(),
            message: "lost".into()
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

/// Random rounds of operations, each round sent several times at once (client retries,
/// duplicate webhooks, two cancels; on PostgreSQL to two nodes): after every round the stream has exactly one terminal
/// event once the task has ended, as its last event, the stream is closed exactly then, and
/// the row's state is the one the events fold to.
fn concurrent_duplicate_operations_keep_one_terminal_event_last<B: Backend>(
    rounds: Vec<(TaskOp, usize)>,
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Some(backend) = B::create("concurrent duplicate operations").await else {
            return Ok(());
        };
        let store = backend.open().await;
        // Duplicates arrive at different nodes where the backend has several.
        let nodes = [store.clone(), backend.another_node(&store).await];
        let ann = user(&*store, "ann").await;
        let id = submit(&*store, &ann, None).await.task.id;
        for (op, copies) in rounds {
            let attempts = (0..copies).map(|i| {
                let store = nodes[i % nodes.len()].clone();
                let (id, op) = (id.clone(), op.clone());
                tokio::spawn(async move { store.transition(&id, op, Utc::now()).await })
            });
            let results = futures_join(attempts).await;
            let accepted = results.iter().filter(|r| r.is_ok()).count();
            // Of simultaneous identical requests, at most one changes anything.
            prop_assert!(
                accepted <= 1,
                "{accepted} of {copies} duplicates were applied"
            );
            for r in &results {
                if let Err(e) = r {
                    prop_assert!(matches!(e, TransitionFailed::Refused(_)), "{e}");
                }
            }
            let task = store.task(&id).await.unwrap().unwrap();
            let (log, closed) = events(&*store, &id).await;
            let terminals = log.iter().filter(|e| kind::is_terminal(&e.kind)).count();
            prop_assert_eq!(terminals, usize::from(task.state.is_terminal()));
            prop_assert_eq!(closed, task.state.is_terminal());
            if task.state.is_terminal() {
                prop_assert!(kind::is_terminal(&log.last().unwrap().kind));
            }
            let status = tether_core::project(
                log.iter()
                    .enumerate()
                    .map(|(i, e)| (tether_types::Offset(i as u64 + 1), e.clone())),
            );
            prop_assert_eq!(status.state, Some(task.state));
            prop_assert_eq!(status.attempt, task.attempt);
        }
        for node in nodes {
            node.shutdown().await;
        }
        Ok(())
    })
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

/// Instantiates every case for one backend; `$cases` is how many random cases the property
/// test runs there.
macro_rules! control_suite {
    ($backend:ty, $cases:expr) => {
        backend_cases!($backend;
            a_task_starts_with_its_created_event_and_ends_with_one_terminal_event,
            an_idempotency_key_returns_the_original_task_and_refuses_another_request,
            tasks_list_newest_first_by_owner_and_state_with_a_cursor,
            tasks_are_searched_by_description_repository_and_metadata,
            tokens_resolve_to_their_user_until_revoked,
            users_and_live_tokens_are_listed_with_when_each_token_was_last_used,
            a_login_code_is_taken_once_and_not_after_it_expires,
            a_session_acts_as_its_token_until_revoked_expired_or_deleted,
        );

        proptest::proptest! {
            #![proptest_config(proptest::prelude::ProptestConfig::with_cases($cases))]

            #[test]
            fn concurrent_duplicate_operations_keep_one_terminal_event_last(
                rounds in proptest::collection::vec((crate::arb_op(), 1usize..4), 1..12)
            ) {
                crate::concurrent_duplicate_operations_keep_one_terminal_event_last::<$backend>(
                    rounds,
                )?;
            }
        }
    };
}

mod sqlite {
    control_suite!(crate::backends::Sqlite, 128);
}

mod postgres {
    control_suite!(crate::backends::Postgres, 32);
}
