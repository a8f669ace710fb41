//! The WAL does not stay at its high-water size: after a burst that a long read kept from
//! being checkpointed, it is truncated once the store is quiet, so it cannot fill a nearly
//! full disk again when space is freed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_store::sqlite::disk::wal_bytes;
use tether_store::sqlite::{DATABASE_FILE, QUIET_WAL_BYTES};
use tether_store::{Append, CreateStream, SqliteStore, StreamStore};

#[tokio::test]
async fn the_wal_is_truncated_under_its_bound_after_a_burst_and_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let create = CreateStream {
        content_type: Some("application/octet-stream".into()),
        ..CreateStream::default()
    };
    store.create("burst", create).await.unwrap();

    // A reader in the middle of a transaction pins the WAL: checkpoints cannot restart it,
    // so the burst grows it, as a slow catch-up read under heavy writing would.
    let reader = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    let body = Bytes::from(vec![7u8; 256 << 10]);
    for _ in 0..32 {
        let append = Append {
            content_type: Some("application/octet-stream".into()),
            body: body.clone(),
            ..Append::default()
        };
        store.append("burst", append).await.unwrap();
    }
    let high_water = wal_bytes(dir.path());
    assert!(
        high_water > 4 * QUIET_WAL_BYTES,
        "the burst should have grown the WAL; it is {high_water} bytes"
    );
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);

    // The checkpointer runs every 250 ms: copies the WAL back, sees the store quiet for 5 s,
    // and truncates.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = wal_bytes(dir.path());
        if now <= QUIET_WAL_BYTES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the WAL stayed at {now} bytes (high water {high_water}) after the burst"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything is still there.
    let head = store.head("burst").await.unwrap();
    assert_eq!(head.next.0, 32 * (256 << 10));
    store.shutdown().await;
}
