//! Everything acknowledged before a shutdown is there after reopening, with the same offsets and
//! the same protocol state (G1).

use tether_store::{AppendError, AppendStatus, CreateError, LookupError};
use tether_types::{Offset, ReadFrom};

use crate::common::*;

pub(crate) async fn acknowledged_data_survives_reopen_with_the_same_offsets(h: &impl Harness) {
    let store = h.open().await;
    let b_id = store.create("b", bytes_stream()).await.unwrap().info.id;
    store.create("j", json_stream()).await.unwrap();
    let mut b_offsets = Vec::new();
    let mut written = Vec::new();
    for i in 0..30u8 {
        let piece = vec![i, 0x00, 0xFF, i];
        b_offsets.push(store.append("b", bytes(piece.clone())).await.unwrap().next);
        written.extend(piece);
    }
    let mut j_offsets = Vec::new();
    for i in 0..30 {
        let body = format!(r#"[{{"i":{i}}},{{"i":{i},"again":true}}]"#);
        j_offsets.push(store.append("j", json(&body)).await.unwrap().next);
    }
    let messages = read_messages(&*store, "j").await;
    let middle = read_at(&*store, "b", b_offsets[9].0).await.records.concat();

    let store = reopen(h, store).await;
    let info = store.head("b").await.unwrap();
    assert_eq!(info.id, b_id, "same stream after reopen");
    assert_eq!(info.next, *b_offsets.last().unwrap());
    assert_eq!(read_bytes(&*store, "b").await, written);
    assert_eq!(
        read_at(&*store, "b", b_offsets[9].0).await.records.concat(),
        middle,
        "an offset handed out before the restart names the same place after it"
    );
    assert_eq!(
        store.head("j").await.unwrap().next,
        *j_offsets.last().unwrap()
    );
    assert_eq!(read_messages(&*store, "j").await, messages);

    let next = store.append("b", bytes("tail")).await.unwrap().next;
    assert_eq!(
        next.0,
        written.len() as u64 + 4,
        "appends continue at the old tail"
    );
    assert_eq!(store.append("j", json("0")).await.unwrap().next, Offset(61));
}

pub(crate) async fn closure_and_its_closer_survive_reopen(h: &impl Harness) {
    let store = h.open().await;
    store.create("plain", bytes_stream()).await.unwrap();
    store.append("plain", bytes("abc")).await.unwrap();
    store.append("plain", close_only()).await.unwrap();

    store.create("produced", bytes_stream()).await.unwrap();
    store
        .append("produced", bytes("x").by_producer("p", 0, 0))
        .await
        .unwrap();
    store
        .append("produced", bytes("y").by_producer("p", 0, 1).closing())
        .await
        .unwrap();

    store
        .create("born", closed(with_body("z", bytes_stream())))
        .await
        .unwrap();

    let store = reopen(h, store).await;
    let info = store.head("plain").await.unwrap();
    assert!(info.closed);
    assert_eq!(info.next, Offset(3));
    assert_eq!(
        store.append("plain", bytes("d")).await.unwrap_err(),
        AppendError::Closed { next: Offset(3) }
    );
    assert_eq!(
        store.append("plain", close_only()).await.unwrap().status,
        AppendStatus::AlreadyClosed
    );

    let repeat = store
        .append("produced", bytes("y").by_producer("p", 0, 1).closing())
        .await
        .unwrap();
    assert_eq!(repeat.status, AppendStatus::Duplicate);
    assert!(repeat.closed);
    assert_eq!(
        store
            .append("produced", bytes("w").by_producer("p", 0, 2))
            .await
            .unwrap_err(),
        AppendError::Closed { next: Offset(2) }
    );
    assert_eq!(read_bytes(&*store, "produced").await, b"xy");

    let chunk = store.read("born", ReadFrom::Start, ALL).await.unwrap();
    assert_eq!(chunk.records.concat(), b"z");
    assert!(chunk.at_closed_end());
}

pub(crate) async fn producer_state_survives_reopen(h: &impl Harness) {
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
    store
        .append("s", bytes("x").by_producer("q", 3, 0))
        .await
        .unwrap();

    let store = reopen(h, store).await;
    let dup = store
        .append("s", bytes("b").by_producer("p", 0, 1))
        .await
        .unwrap();
    assert_eq!(dup.status, AppendStatus::Duplicate);
    assert_eq!(dup.producer, Some((0, 1)));
    assert_eq!(
        store
            .append("s", bytes("c").by_producer("p", 0, 3))
            .await
            .unwrap_err(),
        AppendError::SeqGap {
            expected: 2,
            received: 3
        }
    );
    store
        .append("s", bytes("c").by_producer("p", 0, 2))
        .await
        .unwrap();
    assert_eq!(
        store
            .append("s", bytes("y").by_producer("q", 2, 0))
            .await
            .unwrap_err(),
        AppendError::StaleEpoch { current: 3 }
    );
    store
        .append("s", bytes("A").by_producer("p", 1, 0))
        .await
        .unwrap();

    let store = reopen(h, store).await;
    assert_eq!(
        store
            .append("s", bytes("z").by_producer("p", 0, 3))
            .await
            .unwrap_err(),
        AppendError::StaleEpoch { current: 1 }
    );
    assert_eq!(
        store
            .append("s", bytes("A").by_producer("p", 1, 0))
            .await
            .unwrap()
            .status,
        AppendStatus::Duplicate
    );
    assert_eq!(read_bytes(&*store, "s").await, b"abxcA");
}

pub(crate) async fn stream_seq_survives_reopen(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store
        .append("s", bytes("a").with_stream_seq("05"))
        .await
        .unwrap();

    let store = reopen(h, store).await;
    for stale in ["05", "04"] {
        assert_eq!(
            store
                .append("s", bytes("x").with_stream_seq(stale))
                .await
                .unwrap_err(),
            AppendError::SeqConflict,
            "{stale}"
        );
    }
    store
        .append("s", bytes("b").with_stream_seq("06"))
        .await
        .unwrap();
    assert_eq!(read_bytes(&*store, "s").await, b"ab");
}

pub(crate) async fn forks_and_soft_deletes_survive_reopen(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    store.append("src", bytes("hello ")).await.unwrap();
    store.append("src", bytes("world")).await.unwrap();
    store.create("f", fork_of("src", Some(6), 3)).await.unwrap();
    store.append("f", bytes("!")).await.unwrap();
    store.create("g", fork_of("f", None, 0)).await.unwrap();
    store.delete("src").await.unwrap();

    let store = reopen(h, store).await;
    assert_eq!(store.head("src").await.unwrap_err(), LookupError::Gone);
    assert_eq!(
        store.create("src", bytes_stream()).await.unwrap_err(),
        CreateError::PathBlocked
    );
    assert_eq!(store.head("f").await.unwrap().next, Offset(10));
    assert_eq!(read_bytes(&*store, "f").await, b"hello wor!");
    assert_eq!(read_bytes(&*store, "g").await, b"hello wor!");
    store.append("g", bytes("?")).await.unwrap();

    store.delete("f").await.unwrap();
    assert_eq!(store.head("f").await.unwrap_err(), LookupError::Gone);
    assert_eq!(read_bytes(&*store, "g").await, b"hello wor!?");
    store.delete("g").await.unwrap();
    eventually_not_found(&*store, "f").await;
    eventually_not_found(&*store, "src").await;
}

pub(crate) async fn deleted_streams_stay_deleted_after_reopen(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    store.append("s", bytes("old")).await.unwrap();
    store.delete("s").await.unwrap();

    let store = reopen(h, store).await;
    assert_eq!(store.head("s").await.unwrap_err(), LookupError::NotFound);
    let created = store.create("s", bytes_stream()).await.unwrap();
    assert!(created.created);
    assert_eq!(created.info.next, Offset::START);
    assert!(read_bytes(&*store, "s").await.is_empty());
}

/// Catch-up readers of a log that is only on disk (after a reopen, nothing is cached), in
/// windows smaller than the log, get every message once and in order: with appends large
/// and small, while the tail moves between their reads, and with two readers at different
/// places taking turns.
pub(crate) async fn reopened_logs_read_back_in_windows_while_the_tail_moves(h: &impl Harness) {
    let store = h.open().await;
    store.create("j", json_stream()).await.unwrap();
    let mut n = 0u64;
    for i in 0..24 {
        // Appends over 64 KiB and tiny ones, interleaved.
        let size = if i % 3 == 0 { 400 } else { 1 + i % 5 };
        store.append("j", numbered(&mut n, size)).await.unwrap();
    }
    let store = reopen(h, store).await;

    const WINDOW: usize = 150_000;
    let mut readers = [(Offset(0), Vec::new()), (Offset(0), Vec::new())];
    let mut appended_after = 0;
    loop {
        let mut all_up_to_date = true;
        for (which, (at, seen)) in readers.iter_mut().enumerate() {
            if which == 1 && seen.is_empty() && appended_after < 2 {
                continue; // the second reader starts later, at another place in the log
            }
            let chunk = store.read("j", ReadFrom::At(*at), WINDOW).await.unwrap();
            assert_eq!(chunk.from, *at);
            assert_eq!(units(&chunk), chunk.next.0 - at.0, "{chunk:?}");
            seen.extend(messages(&chunk.records));
            *at = chunk.next;
            all_up_to_date &= chunk.up_to_date;
        }
        if appended_after < 6 {
            store.append("j", numbered(&mut n, 300)).await.unwrap();
            appended_after += 1;
        } else if all_up_to_date && readers[1].1.len() as u64 == n {
            break;
        }
    }
    for (at, seen) in &readers {
        assert_eq!(at.0, n);
        let numbers: Vec<u64> = seen.iter().map(|m| m["n"].as_u64().unwrap()).collect();
        assert_eq!(numbers, (0..n).collect::<Vec<u64>>());
    }
}

/// A JSON append of `size` messages of about 220 bytes, numbered on from `n`.
fn numbered(n: &mut u64, size: usize) -> tether_store::Append {
    let items: Vec<String> = (0..size as u64)
        .map(|k| format!(r#"{{"n":{},"pad":"{}"}}"#, *n + k, "x".repeat(200)))
        .collect();
    *n += size as u64;
    json(&format!("[{}]", items.join(",")))
}
