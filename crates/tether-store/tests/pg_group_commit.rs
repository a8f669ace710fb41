//! Group commit on PostgreSQL: a batch commits whole or not at all, and its callers hear
//! exactly that (G1): no append is acknowledged that is not committed, and none that failed
//! is there afterwards.
//!
//! Skipped, saying so, without `TETHER_TEST_DATABASE_URL`.

use std::time::{Duration, Instant};

use tether_store::pg::scratch::ScratchDatabase;
use tether_store::{AppendError, PgOptions, PgStore, ReadFrom, StreamStore};

#[allow(dead_code)] // The conformance suite's helpers; this file needs a few.
mod common;
use common::{bytes, bytes_stream, PATIENCE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_fails_every_caller_in_it_and_stores_none_of_it() {
    let Some(db) = ScratchDatabase::create("failing batches").await else {
        return;
    };
    // A pool of two runs one append batch at a time, so appends queued behind a running
    // batch all go into the next one.
    let store = PgStore::connect(db.url(), PgOptions { pool_size: 2 })
        .await
        .expect("connect");
    store.create("s", bytes_stream()).await.unwrap();

    let (mut admin, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the scratch database");
    tokio::spawn(connection);
    // A storage failure the store cannot tell from a full disk: the database refuses any
    // chunk that contains "poison", failing the whole transaction it is in.
    admin
        .batch_execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF position('poison'::bytea IN NEW.data) > 0 THEN
                     RAISE EXCEPTION 'refusing a poisoned chunk';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_poison BEFORE INSERT ON chunks
                 FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
        )
        .await
        .expect("install the trigger");

    // Hold the stream's row so the first batch waits on it...
    let holder = admin.transaction().await.expect("begin");
    holder
        .execute("SELECT 1 FROM streams WHERE path = 's' FOR UPDATE", &[])
        .await
        .expect("lock the stream row");
    let mut first = Box::pin(store.append("s", bytes("first;")));
    assert!(futures::poll!(&mut first).is_pending(), "first is queued");
    let deadline = Instant::now() + PATIENCE;
    let blocked = "SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    while holder
        .query_one(blocked, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(Instant::now() < deadline, "the first batch never waited");
        // Lets `first`'s batch task run up to the lock.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...while the next appends, one of them poisoned, queue up behind it as one batch.
    let bodies = ["a;", "b;", "poison;", "c;"];
    let mut queued: Vec<_> = bodies
        .iter()
        .map(|body| Box::pin(store.append("s", bytes(*body))))
        .collect();
    for append in &mut queued {
        assert!(futures::poll!(append).is_pending(), "queued");
    }
    holder.commit().await.expect("release the row");

    assert_eq!(first.await.expect("the first batch commits").next.0, 6);
    for (body, append) in bodies.iter().zip(queued) {
        match append.await {
            Err(AppendError::Storage(_)) => {}
            other => panic!("{body} shared a batch that failed, yet got {other:?}"),
        }
    }
    let chunk = store.read("s", ReadFrom::Start, 1 << 20).await.unwrap();
    assert_eq!(
        chunk.records.concat(),
        b"first;",
        "nothing of the failed batch"
    );
    assert_eq!(
        store.append("s", bytes("after;")).await.unwrap().next.0,
        12,
        "the next batch continues where the last commit ended"
    );
    store.shutdown().await;
}
