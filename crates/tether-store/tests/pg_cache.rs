//! Live readers of a hot stream on PostgreSQL read the chunks they were woken for from memory:
//! a hundred subscribers must not cost a hundred chunk queries per append (each read still
//! reads the stream's row: tails, deletes and expiry come from the database). What they may read
//! still comes from the tail in the database, so the cache never shows more than it says.
//!
//! Skipped, saying so, without `TETHER_TEST_DATABASE_URL`.

use std::sync::Arc;

use tether_store::pg::scratch::ScratchDatabase;
use tether_store::{PgOptions, PgStore, ReadFrom, StreamStore};
use tether_types::Offset;
use tokio::task::JoinSet;

#[allow(dead_code)] // The conformance suite's helpers; this file needs a few.
mod common;
use common::{bytes, bytes_stream, tail_of, PATIENCE};

const READERS: usize = 100;
const APPENDS: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_readers_of_this_nodes_appends_are_served_from_memory() {
    let Some(db) = ScratchDatabase::create("recent-chunks cache").await else {
        return;
    };
    let store = Arc::new(
        PgStore::connect(db.url(), PgOptions::default())
            .await
            .expect("connect"),
    );
    store.create("hot", bytes_stream()).await.unwrap();

    let mut readers = JoinSet::new();
    for _ in 0..READERS {
        let (_, mut watch) = store.watch("hot").await.unwrap();
        let store = store.clone();
        readers.spawn(async move {
            let (mut seen, mut reads) = (Vec::new(), 0u64);
            while (seen.len() as u64) < APPENDS {
                tail_of(watch.wait_past(seen.len() as u64, PATIENCE).await);
                let at = ReadFrom::At(Offset(seen.len() as u64));
                let chunk = store.read("hot", at, 1 << 20).await.unwrap();
                chunk.records.iter().for_each(|r| seen.extend_from_slice(r));
                reads += 1;
            }
            (seen, reads)
        });
    }
    let before = store.log_reads();
    let expected: Vec<u8> = (0..APPENDS).map(|i| b'a' + (i % 26) as u8).collect();
    for byte in &expected {
        store.append("hot", bytes(vec![*byte])).await.unwrap();
    }
    let mut reads = 0;
    while let Some(joined) = readers.join_next().await {
        let (seen, n) = joined.expect("a reader panicked");
        assert_eq!(seen, expected);
        reads += n;
    }
    // A reader can read the new tail from the database in the moment between a commit and
    // its chunks reaching memory; such a reader queries. Without the cache, every read would.
    let queries = store.log_reads() - before;
    assert!(
        queries * 10 < reads,
        "{queries} of {reads} reads by live readers went to the database"
    );

    // Readers that nobody watches for go to the database: the counter does count.
    let other = PgStore::connect(db.url(), PgOptions::default())
        .await
        .expect("connect a second node");
    let cold = other.read("hot", ReadFrom::Start, 1 << 20).await.unwrap();
    assert_eq!(cold.records.concat(), expected);
    assert!(other.log_reads() > 0, "a cold read is a database read");
    other.shutdown().await;
    store.shutdown().await;
}
