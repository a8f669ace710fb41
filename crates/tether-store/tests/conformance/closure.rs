//! Closing streams: EOF, idempotent closes, and closing appends (protocol 4.1, 5.2, 5.3).

use tether_store::{AppendError, AppendStatus, Tail};
use tether_types::{Offset, ReadFrom};

use crate::common::*;

pub(crate) async fn append_to_a_closed_stream_is_rejected_with_its_final_offset(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store.append("s", bytes("abc")).await.unwrap();
    let close = store.append("s", close_only()).await.unwrap();
    assert_eq!(close.status, AppendStatus::Appended);
    assert!(close.closed);
    assert_eq!(close.next, Offset(3));

    for rejected in [bytes("d"), bytes("d").closing()] {
        assert_eq!(
            store.append("s", rejected).await.unwrap_err(),
            AppendError::Closed { next: Offset(3) }
        );
    }
    let info = store.head("s").await.unwrap();
    assert!(info.closed);
    assert_eq!(info.next, Offset(3));
    let chunk = store.read("s", ReadFrom::Start, ALL).await.unwrap();
    assert_eq!(
        chunk.records.concat(),
        b"abc",
        "data stays readable after closure"
    );
    assert!(chunk.at_closed_end());
}

pub(crate) async fn close_only_on_a_closed_stream_reports_already_closed(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store.append("s", bytes("abc")).await.unwrap();
    store.append("s", close_only()).await.unwrap();
    let again = store.append("s", close_only()).await.unwrap();
    assert_eq!(again.status, AppendStatus::AlreadyClosed);
    assert!(again.closed);
    assert_eq!(again.next, Offset(3));
}

pub(crate) async fn close_only_needs_no_matching_content_type(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store.append("s", bytes("abc")).await.unwrap();
    let ack = store
        .append(
            "s",
            tether_store::Append {
                content_type: Some("text/html".into()),
                ..close_only()
            },
        )
        .await
        .unwrap();
    assert!(ack.closed);
    assert_eq!(ack.next, Offset(3));
    assert!(store.head("s").await.unwrap().closed);
}

pub(crate) async fn closing_append_commits_its_data_and_the_closure_together(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store.append("s", bytes("abc")).await.unwrap();
    let (_, mut watch) = store.watch("s").await.unwrap();
    let closer = {
        let store = store.clone();
        tokio::spawn(async move { store.append("s", bytes("xyz").closing()).await })
    };
    let tail = tail_of(watch.wait_past(3, PATIENCE).await);
    assert_eq!(
        tail,
        Tail {
            next: 6,
            closed: true,
            deleted: false
        },
        "a watcher sees the final data and the closure as one step"
    );
    let ack = closer.await.unwrap().unwrap();
    assert_eq!(ack.status, AppendStatus::Appended);
    assert!(ack.closed);
    assert_eq!(ack.next, Offset(6));
    let chunk = store.read("s", ReadFrom::Start, ALL).await.unwrap();
    assert_eq!(chunk.records.concat(), b"abcxyz");
    assert!(chunk.at_closed_end());

    store.create("j", json_stream()).await.unwrap();
    let ack = store.append("j", json("[1,2]").closing()).await.unwrap();
    assert!(ack.closed);
    assert_eq!(ack.next, Offset(2));
    assert_eq!(read_messages(&*store, "j").await, values(&["1", "2"]));
}

pub(crate) async fn producer_repeating_its_closing_append_is_told_duplicate(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store
        .append("s", bytes("a").by_producer("p", 0, 0))
        .await
        .unwrap();
    let closing = || bytes("b").by_producer("p", 0, 1).closing();
    let first = store.append("s", closing()).await.unwrap();
    assert_eq!(first.status, AppendStatus::Appended);
    assert!(first.closed);
    assert_eq!(first.next, Offset(2));
    assert_eq!(first.producer, Some((0, 1)));

    let repeat = store.append("s", closing()).await.unwrap();
    assert_eq!(repeat.status, AppendStatus::Duplicate);
    assert!(repeat.closed);
    assert_eq!(repeat.next, Offset(2));

    for other in [
        bytes("c").by_producer("p", 0, 2),
        bytes("c").by_producer("q", 0, 0),
        bytes("c"),
    ] {
        assert_eq!(
            store.append("s", other).await.unwrap_err(),
            AppendError::Closed { next: Offset(2) }
        );
    }
    assert_eq!(
        store.append("s", close_only()).await.unwrap().status,
        AppendStatus::AlreadyClosed
    );
    assert_eq!(
        read_bytes(&*store, "s").await,
        b"ab",
        "the closing data once"
    );
}

pub(crate) async fn producer_repeating_its_close_only_request_is_told_duplicate(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store
        .append("s", bytes("a").by_producer("p", 0, 0))
        .await
        .unwrap();
    let first = store
        .append("s", close_only().by_producer("p", 0, 1))
        .await
        .unwrap();
    assert_eq!(first.status, AppendStatus::Appended);
    assert!(first.closed);
    let repeat = store
        .append("s", close_only().by_producer("p", 0, 1))
        .await
        .unwrap();
    assert_eq!(repeat.status, AppendStatus::Duplicate);
    assert!(repeat.closed);
    assert_eq!(repeat.next, Offset(1));
}

pub(crate) async fn a_closed_stream_reports_closed_before_other_conflicts(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store
        .append("s", bytes("a").with_stream_seq("5"))
        .await
        .unwrap();
    store.append("s", close_only()).await.unwrap();
    for request in [append("text/plain", "x"), bytes("x").with_stream_seq("1")] {
        assert_eq!(
            store.append("s", request).await.unwrap_err(),
            AppendError::Closed { next: Offset(1) }
        );
    }
}
