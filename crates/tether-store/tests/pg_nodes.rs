//! Several `tether serve` nodes on one PostgreSQL database: a live reader on one node follows
//! appends made on another, concurrent appends from every node get gap-free offsets in commit
//! order (G2), and a node whose listener connection drops catches up and keeps following.
//!
//! Each node here is a `PgStore` of its own (its own pool and listener) on one scratch
//! database. Skipped, saying so, without `TETHER_TEST_DATABASE_URL`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_store::pg::scratch::ScratchDatabase;
use tether_store::tail::Wake;
use tether_store::{
    AppendStatus, PgOptions, PgStore, ReadFrom, StreamStore, LISTENER_APPLICATION_NAME,
};
use tether_types::Offset;
use tokio::task::JoinSet;

#[allow(dead_code)] // The conformance suite's helpers; this file needs a few.
mod common;
use common::{
    bytes, bytes_stream, close_only, eventually_not_found, read_bytes, with_ttl, PATIENCE,
};

async fn node(db: &ScratchDatabase) -> Arc<PgStore> {
    Arc::new(
        PgStore::connect(db.url(), PgOptions::default())
            .await
            .expect("connect a node"),
    )
}

async fn read_all(store: &PgStore, path: &str) -> Vec<u8> {
    let chunk = store
        .read(path, ReadFrom::Start, 64 << 20)
        .await
        .expect("read");
    assert!(chunk.up_to_date);
    chunk.records.concat()
}

/// Waits (bounded) until `store`'s listener has connected more than `count` times.
async fn listener_connected_more_than(store: &PgStore, count: u64) {
    let deadline = Instant::now() + PATIENCE;
    while store.listener_connects() <= count {
        assert!(
            Instant::now() < deadline,
            "the listener did not (re)connect within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn admin(db: &ScratchDatabase) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the scratch database");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_node_wakes_when_another_node_appends_closes_or_deletes() {
    let Some(db) = ScratchDatabase::create("cross-node watch").await else {
        return;
    };
    let (a, b) = (node(&db).await, node(&db).await);
    a.create("s", bytes_stream()).await.unwrap();
    let (info, mut watch) = a.watch("s").await.unwrap();
    assert_eq!(info.next, Offset(0));

    // B's commit publishes only to B's own readers; A hears of it through the database.
    assert_eq!(b.append("s", bytes("hello")).await.unwrap().next, Offset(5));
    match watch.wait_past(0, PATIENCE).await {
        Wake::Changed(tail) => assert_eq!(tail.next, 5),
        Wake::TimedOut(tail) => panic!("A's watcher never heard of B's append: {tail:?}"),
    }
    assert_eq!(read_all(&a, "s").await, b"hello", "A reads what B wrote");

    b.append("s", close_only()).await.unwrap();
    match watch.wait_past(5, PATIENCE).await {
        Wake::Changed(tail) => assert!(tail.closed && tail.next == 5, "{tail:?}"),
        Wake::TimedOut(tail) => panic!("A's watcher never heard of B's close: {tail:?}"),
    }

    a.create("t", bytes_stream()).await.unwrap();
    let (_, mut watch) = a.watch("t").await.unwrap();
    b.delete("t").await.unwrap();
    match watch.wait_past(0, PATIENCE).await {
        Wake::Changed(tail) => assert!(tail.deleted, "{tail:?}"),
        Wake::TimedOut(tail) => panic!("A's watcher never heard of B's delete: {tail:?}"),
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_from_two_nodes_get_gap_free_offsets_in_commit_order() {
    const TASKS_PER_NODE: usize = 6;
    const APPENDS: usize = 60;
    let Some(db) = ScratchDatabase::create("cross-node appends").await else {
        return;
    };
    let nodes = [node(&db).await, node(&db).await];
    nodes[0].create("s", bytes_stream()).await.unwrap();

    let mut tasks = JoinSet::new();
    for (n, store) in nodes.iter().enumerate() {
        for t in 0..TASKS_PER_NODE {
            let store = store.clone();
            tasks.spawn(async move {
                let mut acks = Vec::with_capacity(APPENDS);
                for k in 0..APPENDS {
                    let body = format!("<n{n}t{t}k{k:02}>");
                    let ack = store.append("s", bytes(body.clone())).await.unwrap();
                    assert_eq!(ack.status, AppendStatus::Appended);
                    acks.push((body, ack.next.0));
                }
                // Each append began after the one before it was acknowledged, so it
                // committed later, and commit order is offset order.
                let ordered = acks.windows(2).all(|w| w[0].1 < w[1].1);
                assert!(
                    ordered,
                    "node {n} task {t}: offsets follow commit order: {acks:?}"
                );
                acks
            });
        }
    }
    let mut acks = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        acks.extend(joined.expect("an append task panicked"));
    }
    acks.sort_by_key(|(_, next)| *next);

    // Read back on both nodes: the acknowledged ranges tile the stream exactly.
    for store in &nodes {
        let data = read_all(store, "s").await;
        let mut pos = 0;
        for (body, next) in &acks {
            let end = pos + body.len();
            assert_eq!(*next, end as u64, "no gap and no overlap before {body}");
            assert_eq!(
                &data[pos..end],
                body.as_bytes(),
                "{body} is where its ack said"
            );
            pos = end;
        }
        assert_eq!(pos, data.len(), "nothing but acknowledged data");
    }
    assert_eq!(acks.len(), 2 * TASKS_PER_NODE * APPENDS);
    for store in &nodes {
        store.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_connection_is_killed_reconnects_and_still_delivers() {
    let Some(db) = ScratchDatabase::create("listener reconnect").await else {
        return;
    };
    let (a, b) = (node(&db).await, node(&db).await);
    a.create("s", bytes_stream()).await.unwrap();
    let (_, mut watch) = a.watch("s").await.unwrap();
    listener_connected_more_than(&a, 0).await;
    let connects = a.listener_connects();

    let killed = admin(&db)
        .await
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database()",
            &[&LISTENER_APPLICATION_NAME],
        )
        .await
        .expect("terminate the listeners");
    assert!(!killed.is_empty(), "the listeners' connections were found");

    // Appended while A's listener may be down: its notification can be lost, so A must
    // catch up by re-reading the tails it watches once it is back.
    b.append("s", bytes("abc")).await.unwrap();
    match watch.wait_past(0, PATIENCE).await {
        Wake::Changed(tail) => assert_eq!(tail.next, 3),
        Wake::TimedOut(tail) => panic!("A missed an append made while it reconnected: {tail:?}"),
    }
    listener_connected_more_than(&a, connects).await;

    // And once back, it follows new commits as before.
    b.append("s", bytes("de")).await.unwrap();
    match watch.wait_past(3, PATIENCE).await {
        Wake::Changed(tail) => assert_eq!(tail.next, 5),
        Wake::TimedOut(tail) => panic!("A's reconnected listener missed an append: {tail:?}"),
    }
    assert_eq!(read_all(&a, "s").await, b"abcde");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_was_never_announced_still_reaches_watchers() {
    let Some(db) = ScratchDatabase::create("unannounced commit").await else {
        return;
    };
    let a = node(&db).await;
    a.create("s", bytes_stream()).await.unwrap();
    let (_, mut watch) = a.watch("s").await.unwrap();
    listener_connected_more_than(&a, 0).await;

    // A node announces its commits after them; one that dies in between never does. Here
    // the commit is made behind every node's back, so no announcement exists at all: the
    // listener's periodic re-read of the tails it watches must find it.
    admin(&db)
        .await
        .execute("UPDATE streams SET closed = true WHERE path = 's'", &[])
        .await
        .expect("close the stream behind the nodes' backs");
    match watch.wait_past(0, PATIENCE).await {
        Wake::Changed(tail) => assert!(tail.closed, "woken for the close: {tail:?}"),
        Wake::TimedOut(tail) => panic!("the unannounced close never reached A: {tail:?}"),
    }
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_announced_on_any_node_wakes_waiters_on_every_node() {
    let Some(db) = ScratchDatabase::create("work notifications").await else {
        return;
    };
    let a = node(&db).await;
    listener_connected_more_than(&a, 0).await;
    let notified = a.work_notify().notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    // What a node's announcer sends after a submit, requeue or end commits.
    admin(&db)
        .await
        .execute("SELECT pg_notify('tether_work', '')", &[])
        .await
        .expect("announce work");
    tokio::time::timeout(PATIENCE, notified)
        .await
        .expect("the work waiter was woken");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_racing_to_create_one_path_make_one_stream_and_agree_on_recreation() {
    let Some(db) = ScratchDatabase::create("cross-node create").await else {
        return;
    };
    let (a, b) = (node(&db).await, node(&db).await);
    let mut creates = JoinSet::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        creates.spawn(async move { store.create("s", bytes_stream()).await });
    }
    let mut ids = Vec::new();
    let mut created = 0;
    while let Some(joined) = creates.join_next().await {
        let outcome = joined.unwrap().expect("identical creates all succeed");
        created += usize::from(outcome.created);
        ids.push(outcome.info.id);
    }
    assert_eq!(created, 1, "exactly one node created the stream");
    assert!(ids.iter().all(|id| *id == ids[0]), "all name one stream");

    // A reads the stream, so it knows (and caches) it; B deletes and re-creates the path.
    a.append("s", bytes("old")).await.unwrap();
    assert_eq!(read_bytes(&*a, "s").await, b"old");
    let (_, mut watch) = a.watch("s").await.unwrap();
    b.delete("s").await.unwrap();
    let fresh = b.create("s", bytes_stream()).await.unwrap();
    assert!(fresh.created && fresh.info.id != ids[0]);
    match watch.wait_past(3, PATIENCE).await {
        Wake::Changed(tail) => assert!(tail.deleted, "{tail:?}"),
        Wake::TimedOut(tail) => panic!("A's watcher of the old stream was not told: {tail:?}"),
    }
    b.append("s", bytes("new")).await.unwrap();
    assert_eq!(a.head("s").await.unwrap().id, fresh.info.id);
    assert_eq!(
        read_bytes(&*a, "s").await,
        b"new",
        "A reads the new stream only"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_one_node_keep_a_sliding_ttl_alive_for_every_node() {
    let Some(db) = ScratchDatabase::create("cross-node TTL").await else {
        return;
    };
    let (a, b) = (node(&db).await, node(&db).await);
    a.create("s", with_ttl(2, bytes_stream())).await.unwrap();
    let created = Instant::now();
    // Only B reads, every half second, for longer than the TTL; A only looks (head does not
    // count as an access).
    for step in 1..=7u32 {
        tokio::time::sleep_until((created + Duration::from_millis(500) * step).into()).await;
        b.read("s", ReadFrom::Start, 1 << 20)
            .await
            .unwrap_or_else(|e| panic!("B's read {step}: {e}"));
    }
    a.head("s")
        .await
        .expect("3.5 s after creation, B's reads kept the 2 s TTL alive on A too");
    // Nobody reads any more: the stream expires, for both nodes.
    eventually_not_found(&*a, "s").await;
    eventually_not_found(&*b, "s").await;
    a.shutdown().await;
    b.shutdown().await;
}
