//! Live readers of a hot stream are served from memory: many subscribers must not cost one
//! database query each per append.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tether_store::tail::Wake;
use tether_store::{Append, CreateStream, ReadFrom, SqliteStore, StreamStore};
use tether_types::Offset;

const SUBSCRIBERS: usize = 100;
const APPENDS: u64 = 50;

#[tokio::test]
async fn a_hundred_live_readers_follow_a_stream_without_touching_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let create = CreateStream {
        content_type: Some("text/plain".into()),
        ttl_secs: None,
        expires_at: None,
        closed: false,
        fork: None,
        body: Bytes::new(),
        ..CreateStream::default()
    };
    store.create("hot", create).await.unwrap();

    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let (_, mut watch) = store.watch("hot").await.unwrap();
        let store = store.clone();
        readers.push(tokio::spawn(async move {
            let mut pos = 0;
            let mut got = Vec::new();
            while pos < APPENDS {
                if let Wake::TimedOut(_) = watch.wait_past(pos, Duration::from_secs(30)).await {
                    panic!("no append arrived at {pos}");
                }
                let chunk = store
                    .read("hot", ReadFrom::At(Offset(pos)), 1 << 20)
                    .await
                    .unwrap();
                for r in &chunk.records {
                    got.extend_from_slice(r);
                }
                pos = chunk.next.0;
            }
            got
        }));
    }
    let before = store.log_reads();
    for i in 0..APPENDS {
        let append = Append {
            content_type: Some("text/plain".into()),
            body: Bytes::from(vec![b'a' + (i % 26) as u8]),
            ..Append::default()
        };
        store.append("hot", append).await.unwrap();
    }
    let expected: Vec<u8> = (0..APPENDS).map(|i| b'a' + (i % 26) as u8).collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), expected);
    }
    assert_eq!(
        store.log_reads() - before,
        0,
        "{SUBSCRIBERS} readers x {APPENDS} appends were all served from the recent cache"
    );

    // The counter does count: after a restart the cache is cold and reads go to the log.
    store.shutdown().await;
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    let cold = store.read("hot", ReadFrom::Start, 1 << 20).await.unwrap();
    assert_eq!(cold.records.concat(), expected);
    assert!(store.log_reads() > 0, "a cold read is a database read");
}
