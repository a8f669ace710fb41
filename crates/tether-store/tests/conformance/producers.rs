//! Idempotent producers and `Stream-Seq` (protocol 5.2, 5.2.1).

use tether_store::{AppendError, AppendStatus};
use tether_types::Offset;

use crate::common::*;

pub(crate) async fn producer_duplicates_are_acknowledged_without_storing_twice(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    for seq in 0..=2u64 {
        let ack = store
            .append("s", bytes(seq.to_string()).by_producer("p", 0, seq))
            .await
            .unwrap();
        assert_eq!(ack.status, AppendStatus::Appended);
        assert_eq!(ack.producer, Some((0, seq)));
        assert_eq!(ack.next, Offset(seq + 1));
    }
    for seq in [2, 0, 1] {
        let ack = store
            .append("s", bytes(seq.to_string()).by_producer("p", 0, seq))
            .await
            .unwrap();
        assert_eq!(ack.status, AppendStatus::Duplicate, "seq {seq}");
        assert_eq!(
            ack.producer,
            Some((0, 2)),
            "a duplicate reports the highest accepted seq"
        );
        assert_eq!(ack.next, Offset(3));
    }
    assert_eq!(read_bytes(&*store, "s").await, b"012");

    store.create("j", json_stream()).await.unwrap();
    let batch = || json("[1,2]").by_producer("p", 0, 0);
    store.append("j", batch()).await.unwrap();
    assert_eq!(
        store.append("j", batch()).await.unwrap().status,
        AppendStatus::Duplicate
    );
    assert_eq!(read_messages(&*store, "j").await, values(&["1", "2"]));
}

pub(crate) async fn producer_sequence_gap_is_rejected_with_expected_and_received(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store
        .append("s", bytes("a").by_producer("p", 0, 0))
        .await
        .unwrap();
    assert_eq!(
        store
            .append("s", bytes("c").by_producer("p", 0, 2))
            .await
            .unwrap_err(),
        AppendError::SeqGap {
            expected: 1,
            received: 2
        }
    );
    assert_eq!(store.head("s").await.unwrap().next, Offset(1));
    store
        .append("s", bytes("b").by_producer("p", 0, 1))
        .await
        .unwrap();
    assert_eq!(
        store
            .append("s", bytes("f").by_producer("p", 0, 5))
            .await
            .unwrap_err(),
        AppendError::SeqGap {
            expected: 2,
            received: 5
        }
    );
    assert_eq!(read_bytes(&*store, "s").await, b"ab");
}

pub(crate) async fn stale_producer_epoch_is_fenced(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store
        .append("s", bytes("a").by_producer("p", 0, 0))
        .await
        .unwrap();
    let ack = store
        .append("s", bytes("b").by_producer("p", 1, 0))
        .await
        .unwrap();
    assert_eq!(ack.status, AppendStatus::Appended);
    assert_eq!(ack.producer, Some((1, 0)));
    for (seq, body) in [(1, "zombie"), (0, "a")] {
        assert_eq!(
            store
                .append("s", bytes(body).by_producer("p", 0, seq))
                .await
                .unwrap_err(),
            AppendError::StaleEpoch { current: 1 },
            "epoch 0 seq {seq}"
        );
    }
    assert_eq!(read_bytes(&*store, "s").await, b"ab");
}

pub(crate) async fn new_producer_epoch_must_start_at_seq_zero(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store
        .append("s", bytes("a").by_producer("p", 0, 0))
        .await
        .unwrap();
    store
        .append("s", bytes("b").by_producer("p", 0, 1))
        .await
        .unwrap();
    assert_eq!(
        store
            .append("s", bytes("x").by_producer("p", 1, 1))
            .await
            .unwrap_err(),
        AppendError::EpochNeedsSeqZero
    );
    assert_eq!(store.head("s").await.unwrap().next, Offset(2));
    let ack = store
        .append("s", bytes("c").by_producer("p", 1, 0))
        .await
        .unwrap();
    assert_eq!(ack.status, AppendStatus::Appended);
    assert_eq!(ack.producer, Some((1, 0)));
    store
        .append("s", bytes("d").by_producer("p", 1, 1))
        .await
        .unwrap();
    assert_eq!(read_bytes(&*store, "s").await, b"abcd");
}

pub(crate) async fn producers_keep_independent_state(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    for (id, epoch, seq, body) in [
        ("p", 0, 0, "p0"),
        ("q", 0, 0, "q0"),
        ("p", 0, 1, "p1"),
        ("q", 0, 1, "q1"),
        ("q", 2, 0, "Q0"),
        ("p", 0, 2, "p2"),
    ] {
        let ack = store
            .append("s", bytes(body).by_producer(id, epoch, seq))
            .await
            .unwrap();
        assert_eq!(ack.status, AppendStatus::Appended, "{id} {epoch}/{seq}");
    }
    assert_eq!(read_bytes(&*store, "s").await, b"p0q0p1q1Q0p2");
}

pub(crate) async fn rejected_producer_request_does_not_advance_its_sequence(h: &impl Harness) {
    let store = h.open().await;
    store.create("j", json_stream()).await.unwrap();
    store
        .append("j", json("0").by_producer("p", 0, 0))
        .await
        .unwrap();
    let invalid = store
        .append("j", json("{broken").by_producer("p", 0, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(invalid, AppendError::InvalidBody(_)),
        "{invalid:?}"
    );
    assert_eq!(
        store
            .append("j", bytes("1").by_producer("p", 0, 1))
            .await
            .unwrap_err(),
        AppendError::ContentTypeMismatch
    );
    let ack = store
        .append("j", json("1").by_producer("p", 0, 1))
        .await
        .unwrap();
    assert_eq!(
        ack.status,
        AppendStatus::Appended,
        "seq 1 was never accepted, so it is not a duplicate"
    );
    assert_eq!(read_messages(&*store, "j").await, values(&["0", "1"]));
}

pub(crate) async fn stream_seq_must_increase_byte_wise(h: &impl Harness) {
    let store = h.open().await;
    store.create("a", bytes_stream()).await.unwrap();
    store
        .append("a", bytes("2").with_stream_seq("2"))
        .await
        .unwrap();
    for stale in ["10", "2", "1"] {
        assert_eq!(
            store
                .append("a", bytes(stale).with_stream_seq(stale))
                .await
                .unwrap_err(),
            AppendError::SeqConflict,
            "{stale:?} after \"2\""
        );
    }
    store
        .append("a", bytes("3").with_stream_seq("3"))
        .await
        .unwrap();
    assert_eq!(read_bytes(&*store, "a").await, b"23");

    store.create("b", bytes_stream()).await.unwrap();
    store
        .append("b", bytes("09").with_stream_seq("09"))
        .await
        .unwrap();
    store
        .append("b", bytes("10").with_stream_seq("10"))
        .await
        .unwrap();
    assert_eq!(read_bytes(&*store, "b").await, b"0910");
}

pub(crate) async fn producer_duplicate_wins_over_a_stream_seq_regression(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    let request = || bytes("a").by_producer("p", 0, 0).with_stream_seq("1");
    store.append("s", request()).await.unwrap();
    assert_eq!(
        store.append("s", request()).await.unwrap().status,
        AppendStatus::Duplicate
    );
    assert_eq!(read_bytes(&*store, "s").await, b"a");
}
