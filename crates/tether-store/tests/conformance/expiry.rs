//! TTL and absolute expiry (protocol 5.1). These wait in real time for the deadline itself.

use std::time::{Duration, Instant};

use chrono::Utc;
use tether_store::{AppendError, DeleteError, LookupError};
use tether_types::ReadFrom;

use crate::common::*;

pub(crate) async fn stream_past_its_expiry_time_is_not_found(h: &impl Harness) {
    let store = h.open().await;
    let past = Utc::now() - chrono::TimeDelta::seconds(1);
    store
        .create("old", expiring_at(past, bytes_stream()))
        .await
        .expect("creating an already expired stream is accepted");
    assert_eq!(store.head("old").await.unwrap_err(), LookupError::NotFound);
    assert_eq!(
        store.read("old", ReadFrom::Start, ALL).await.unwrap_err(),
        LookupError::NotFound
    );
    assert_eq!(store.watch("old").await.unwrap_err(), LookupError::NotFound);
    assert_eq!(
        store.append("old", bytes("x")).await.unwrap_err(),
        AppendError::NotFound
    );
    assert_eq!(
        store.delete("old").await.unwrap_err(),
        DeleteError::NotFound
    );
    let fresh = store.create("old", bytes_stream()).await.unwrap();
    assert!(fresh.created, "an expired stream frees its path");

    store
        .create("future", expiring_at(in_an_hour(), bytes_stream()))
        .await
        .unwrap();
    store.append("future", bytes("ok")).await.unwrap();
    assert_eq!(read_bytes(&*store, "future").await, b"ok");
}

pub(crate) async fn idle_stream_expires_after_its_ttl(h: &impl Harness) {
    let store = h.open().await;
    store
        .create("s", with_ttl(1, bytes_stream()))
        .await
        .unwrap();
    store.head("s").await.expect("alive right after creation");
    // `head` does not count as an access, so polling it lets the TTL run out.
    eventually_not_found(&*store, "s").await;
    assert_eq!(
        store.append("s", bytes("x")).await.unwrap_err(),
        AppendError::NotFound
    );
}

pub(crate) async fn reads_extend_a_sliding_ttl(h: &impl Harness) {
    let store = h.open().await;
    store
        .create("s", with_ttl(3, bytes_stream()))
        .await
        .unwrap();
    let created = Instant::now();
    tokio::time::sleep_until((created + Duration::from_millis(1500)).into()).await;
    store.read("s", ReadFrom::Start, ALL).await.unwrap();
    // 3.5 s after creation: expired by now unless the read at 1.5 s restarted the window.
    tokio::time::sleep_until((created + Duration::from_millis(3500)).into()).await;
    store
        .head("s")
        .await
        .expect("a read restarts the TTL window");
    eventually_not_found(&*store, "s").await;
}

pub(crate) async fn fork_outlives_its_expired_source(h: &impl Harness) {
    let store = h.open().await;
    store
        .create("src", with_ttl(1, bytes_stream()))
        .await
        .unwrap();
    store.append("src", bytes("abc")).await.unwrap();
    store
        .create("f", with_ttl(3600, fork_of("src", None, 0)))
        .await
        .unwrap();

    let deadline = Instant::now() + PATIENCE;
    loop {
        match store.head("src").await {
            Err(LookupError::NotFound | LookupError::Gone) => break,
            other => {
                assert!(Instant::now() < deadline, "src never expired: {other:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert_eq!(read_bytes(&*store, "f").await, b"abc");
    store.append("f", bytes("d")).await.unwrap();
    assert_eq!(read_bytes(&*store, "f").await, b"abcd");
}
