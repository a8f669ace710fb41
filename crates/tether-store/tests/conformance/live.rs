//! The live tail: watchers wake when the committed tail passes their position, and only then (G3).

use tether_store::tail::Wake;
use tether_store::Tail;
use tether_types::Offset;

use crate::common::*;

pub(crate) async fn watcher_wakes_when_another_task_appends(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store.append("s", bytes("abc")).await.unwrap();
    let (info, mut watch) = store.watch("s").await.unwrap();
    assert_eq!(info.next, Offset(3));
    assert_eq!(watch.current().next, 3);

    let writer = {
        let store = store.clone();
        tokio::spawn(async move { store.append("s", bytes("defg")).await })
    };
    let tail = tail_of(watch.wait_past(3, PATIENCE).await);
    assert_eq!(tail.next, 7);
    assert!(!tail.closed && !tail.deleted);
    assert_eq!(
        read_at(&*store, "s", 3).await.records.concat(),
        b"defg",
        "a woken reader finds the data it was woken for"
    );
    assert_eq!(writer.await.unwrap().unwrap().next, Offset(7));
}

pub(crate) async fn watcher_times_out_when_nothing_is_appended(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store.append("s", bytes("abc")).await.unwrap();
    let (_, mut watch) = store.watch("s").await.unwrap();
    match watch.wait_past(3, QUIET).await {
        Wake::TimedOut(tail) => assert_eq!(
            tail,
            Tail {
                next: 3,
                closed: false,
                deleted: false
            }
        ),
        changed => panic!("nothing was appended, yet the watcher woke: {changed:?}"),
    }
    assert_eq!(
        watch.wait_past(2, QUIET).await,
        Wake::Changed(watch.current()),
        "a position behind the tail is passed already"
    );
}

pub(crate) async fn live_reader_sees_every_append_exactly_once(h: &impl Harness) {
    const MESSAGES: u64 = 300;
    let store = h.open().await;
    store.create("s", json_stream()).await.unwrap();
    let (_, mut watch) = store.watch("s").await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while n < MESSAGES {
                // Batches of 1 to 3 messages.
                let batch: Vec<String> = (n..(n + 1 + n % 3).min(MESSAGES))
                    .map(|i| i.to_string())
                    .collect();
                n += batch.len() as u64;
                store
                    .append("s", json(&format!("[{}]", batch.join(","))))
                    .await
                    .unwrap();
            }
        })
    };

    let mut seen = Vec::new();
    let mut position = 0;
    while position < MESSAGES {
        let tail = tail_of(watch.wait_past(position, PATIENCE).await);
        assert!(!tail.deleted && !tail.closed);
        let chunk = read_at(&*store, "s", position).await;
        assert!(
            chunk.next.0 >= tail.next,
            "a woken reader finds at least what it was woken for"
        );
        seen.extend(messages(&chunk.records).iter().map(|m| m.as_u64().unwrap()));
        position = chunk.next.0;
    }
    writer.await.unwrap();
    assert_eq!(seen, (0..MESSAGES).collect::<Vec<_>>());
}

pub(crate) async fn closing_wakes_a_watcher_with_closed(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    let (_, mut watch) = store.watch("s").await.unwrap();
    let closer = {
        let store = store.clone();
        tokio::spawn(async move { store.append("s", close_only()).await })
    };
    let tail = tail_of(watch.wait_past(0, PATIENCE).await);
    assert!(tail.closed);
    assert_eq!(tail.next, 0, "a close-only request adds no data");
    assert!(closer.await.unwrap().unwrap().closed);
}

pub(crate) async fn deleting_wakes_a_watcher_with_deleted(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store.append("s", bytes("abc")).await.unwrap();
    let (_, mut watch) = store.watch("s").await.unwrap();
    let deleter = {
        let store = store.clone();
        tokio::spawn(async move { store.delete("s").await })
    };
    let tail = tail_of(watch.wait_past(3, PATIENCE).await);
    assert!(tail.deleted);
    deleter.await.unwrap().unwrap();
}

pub(crate) async fn soft_deleting_wakes_a_watcher_with_deleted(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    store.create("f", fork_of("src", None, 0)).await.unwrap();
    let (_, mut watch) = store.watch("src").await.unwrap();
    store.delete("src").await.unwrap();
    let tail = tail_of(watch.wait_past(0, PATIENCE).await);
    assert!(tail.deleted);
}

pub(crate) async fn fork_watcher_is_not_woken_by_source_appends(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    store.append("src", bytes("abc")).await.unwrap();
    store.create("f", fork_of("src", None, 0)).await.unwrap();
    let (_, mut watch) = store.watch("f").await.unwrap();

    // The source append is acknowledged before the wait starts: had it moved the fork's tail,
    // the wait would return at once.
    store.append("src", bytes("def")).await.unwrap();
    match watch.wait_past(3, QUIET).await {
        Wake::TimedOut(tail) => assert_eq!(tail.next, 3),
        woke => panic!("a source append woke the fork's watcher: {woke:?}"),
    }

    let writer = {
        let store = store.clone();
        tokio::spawn(async move { store.append("f", bytes("xy")).await })
    };
    let tail = tail_of(watch.wait_past(3, PATIENCE).await);
    assert_eq!(tail.next, 5);
    writer.await.unwrap().unwrap();
}
