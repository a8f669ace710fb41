//! The SQLite store forgets idle streams from memory; everything must come back from disk.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_store::{
    Append, AppendError, AppendStatus, CreateStream, LookupError, ProducerStamp, ReadFrom,
    SqliteStore, StreamStore, SweepPolicy,
};

fn producer(seq: u64) -> Option<ProducerStamp> {
    Some(ProducerStamp {
        id: "p".into(),
        epoch: 0,
        seq,
    })
}

fn append(body: &'static str, seq: u64, stream_seq: &str) -> Append {
    Append {
        content_type: Some("application/json".into()),
        body: Bytes::from_static(body.as_bytes()),
        producer: producer(seq),
        stream_seq: Some(stream_seq.into()),
        ..Append::default()
    }
}

#[tokio::test]
async fn idle_streams_are_forgotten_and_come_back_intact() {
    let dir = tempfile::tempdir().unwrap();
    let forget_at_once = SweepPolicy {
        interval: Duration::ZERO,
        idle_for: Duration::ZERO,
    };
    let store = SqliteStore::open_with(dir.path(), forget_at_once).unwrap();
    let create = CreateStream {
        content_type: Some("application/json".into()),
        ttl_secs: None,
        expires_at: None,
        closed: false,
        fork: None,
        body: Bytes::new(),
        ..CreateStream::default()
    };
    store.create("s", create).await.unwrap();
    let first = store.append("s", append(r#"[1,2]"#, 0, "a")).await.unwrap();
    assert_eq!(first.status, AppendStatus::Appended);

    // Each lookup of a missing stream is a writer batch, after which the sweep runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.streams_in_memory() > 0 {
        assert!(Instant::now() < deadline, "the stream was never forgotten");
        assert_eq!(
            store.head("nothing").await.unwrap_err(),
            LookupError::NotFound
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Reloaded from disk: data, tail, producer and Stream-Seq state are all as they were.
    let retry = store.append("s", append(r#"[1,2]"#, 0, "b")).await.unwrap();
    assert_eq!(
        retry.status,
        AppendStatus::Duplicate,
        "producer state survived"
    );
    let regress = store.append("s", append("3", 1, "a")).await.unwrap_err();
    assert_eq!(
        regress,
        AppendError::SeqConflict,
        "Stream-Seq state survived"
    );
    let next = store.append("s", append("3", 1, "b")).await.unwrap();
    assert_eq!(next.next.0, 3);
    let chunk = store.read("s", ReadFrom::Start, 1 << 20).await.unwrap();
    let joined: Vec<u8> = chunk.records.join(&b","[..]);
    assert_eq!(joined, b"1,2,3");
    assert!(chunk.up_to_date);
}
