//! Creating and deleting streams: idempotent PUT, configuration conflicts, initial bodies, and
//! re-creation after delete (protocol 5.1, 5.4).

use tether_store::{AppendError, CreateError, DeleteError, LookupError};
use tether_types::{Offset, ReadFrom};

use crate::common::*;

pub(crate) async fn new_stream_is_empty_at_offset_zero(h: &impl Harness) {
    let store = h.open().await;
    let created = store.create("s", bytes_stream()).await.unwrap();
    assert!(created.created);
    assert_eq!(created.info.next, Offset::START);
    assert!(!created.info.closed);

    let info = store.head("s").await.unwrap();
    assert_eq!(info.id, created.info.id);
    assert_eq!((info.start, info.next), (Offset::START, Offset::START));
    assert!(!info.closed);

    let chunk = store.read("s", ReadFrom::Start, ALL).await.unwrap();
    assert!(chunk.is_empty());
    assert_eq!((chunk.from, chunk.next), (Offset::START, Offset::START));
    assert!(chunk.up_to_date);
    assert!(!chunk.at_closed_end());
}

pub(crate) async fn missing_stream_is_not_found_by_every_operation(h: &impl Harness) {
    let store = h.open().await;
    assert_eq!(store.head("nope").await.unwrap_err(), LookupError::NotFound);
    assert_eq!(
        store.read("nope", ReadFrom::Start, ALL).await.unwrap_err(),
        LookupError::NotFound
    );
    assert_eq!(
        store.watch("nope").await.unwrap_err(),
        LookupError::NotFound
    );
    assert_eq!(
        store.append("nope", bytes("x")).await.unwrap_err(),
        AppendError::NotFound
    );
    assert_eq!(
        store.delete("nope").await.unwrap_err(),
        DeleteError::NotFound
    );
}

pub(crate) async fn identical_create_returns_the_existing_stream_unchanged(h: &impl Harness) {
    let store = h.open().await;
    let first = store.create("j", json_stream()).await.unwrap();
    store.append("j", json("[1,2]")).await.unwrap();

    let again = store.create("j", json_stream()).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.info.id, first.info.id);
    assert_eq!(again.info.next, Offset(2), "reports the current tail");
    assert_eq!(read_messages(&*store, "j").await, values(&["1", "2"]));

    let ttl = || with_ttl(3600, bytes_stream());
    assert!(store.create("t", ttl()).await.unwrap().created);
    assert!(!store.create("t", ttl()).await.unwrap().created);

    let at = in_an_hour();
    assert!(
        store
            .create("e", expiring_at(at, bytes_stream()))
            .await
            .unwrap()
            .created
    );
    assert!(
        !store
            .create("e", expiring_at(at, bytes_stream()))
            .await
            .unwrap()
            .created
    );
}

pub(crate) async fn create_with_a_different_content_type_conflicts(h: &impl Harness) {
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    for other in [json_stream(), stream("text/plain")] {
        assert_eq!(
            store.create("s", other).await.unwrap_err(),
            CreateError::ConfigMismatch
        );
    }
    let info = store.head("s").await.unwrap();
    assert!(!info.is_json());
    assert_eq!(
        store.append("s", bytes("ok")).await.unwrap().next,
        Offset(2)
    );
}

pub(crate) async fn create_with_a_different_ttl_or_expiry_conflicts(h: &impl Harness) {
    let store = h.open().await;
    let at = in_an_hour();
    let later = at + chrono::TimeDelta::seconds(1);
    let cases = [
        (
            with_ttl(60, bytes_stream()),
            vec![
                with_ttl(120, bytes_stream()),
                bytes_stream(),
                expiring_at(at, bytes_stream()),
            ],
        ),
        (
            bytes_stream(),
            vec![
                with_ttl(60, bytes_stream()),
                expiring_at(at, bytes_stream()),
            ],
        ),
        (
            expiring_at(at, bytes_stream()),
            vec![
                expiring_at(later, bytes_stream()),
                with_ttl(60, bytes_stream()),
                bytes_stream(),
            ],
        ),
    ];
    for (i, (original, others)) in cases.into_iter().enumerate() {
        let path = format!("s{i}");
        store.create(&path, original.clone()).await.unwrap();
        for other in others {
            assert_eq!(
                store.create(&path, other.clone()).await.unwrap_err(),
                CreateError::ConfigMismatch,
                "{original:?} re-created as {other:?}"
            );
        }
        let config = store.head(&path).await.unwrap().config;
        assert_eq!(
            (config.ttl_secs, config.expires_at),
            (original.ttl_secs, original.expires_at),
            "a rejected create leaves the configuration alone"
        );
    }
}

pub(crate) async fn create_with_a_different_closed_flag_conflicts(h: &impl Harness) {
    let store = h.open().await;
    store.create("open", bytes_stream()).await.unwrap();
    assert_eq!(
        store
            .create("open", closed(bytes_stream()))
            .await
            .unwrap_err(),
        CreateError::ConfigMismatch
    );
    assert!(
        !store.head("open").await.unwrap().closed,
        "a rejected create does not close the stream"
    );

    let shut = store.create("shut", closed(bytes_stream())).await.unwrap();
    assert!(shut.created && shut.info.closed);
    assert_eq!(
        store.create("shut", bytes_stream()).await.unwrap_err(),
        CreateError::ConfigMismatch
    );
    let again = store.create("shut", closed(bytes_stream())).await.unwrap();
    assert!(!again.created && again.info.closed);

    // The comparison is with the stream's current state, not the one it was created with.
    store.create("later", bytes_stream()).await.unwrap();
    store.append("later", close_only()).await.unwrap();
    assert_eq!(
        store.create("later", bytes_stream()).await.unwrap_err(),
        CreateError::ConfigMismatch
    );
    assert!(
        !store
            .create("later", closed(bytes_stream()))
            .await
            .unwrap()
            .created
    );
}

pub(crate) async fn content_types_match_without_case_or_parameters(h: &impl Harness) {
    let store = h.open().await;
    store
        .create("j", stream("application/json; charset=utf-8"))
        .await
        .unwrap();
    assert!(store.head("j").await.unwrap().is_json());
    assert!(
        !store
            .create("j", stream("Application/JSON"))
            .await
            .unwrap()
            .created
    );
    let appended = store
        .append("j", append("APPLICATION/json", "[1,2]"))
        .await
        .unwrap();
    assert_eq!(
        appended.next,
        Offset(2),
        "still JSON mode: the array is flattened"
    );

    store.create("t", stream("text/plain")).await.unwrap();
    assert!(
        !store
            .create("t", stream("TEXT/Plain; charset=utf-8"))
            .await
            .unwrap()
            .created
    );
    store
        .append("t", append("text/plain;charset=utf-8", "hi"))
        .await
        .unwrap();
    assert_eq!(read_bytes(&*store, "t").await, b"hi");
}

pub(crate) async fn initial_body_becomes_the_first_content(h: &impl Harness) {
    let store = h.open().await;
    let b = store
        .create("b", with_body("hello", bytes_stream()))
        .await
        .unwrap();
    assert_eq!(b.info.next, Offset(5));
    assert_eq!(read_bytes(&*store, "b").await, b"hello");

    let j = store
        .create("j", with_body(r#"[{"a":1},{"b":2}]"#, json_stream()))
        .await
        .unwrap();
    assert_eq!(j.info.next, Offset(2));
    assert_eq!(
        read_messages(&*store, "j").await,
        values(&[r#"{"a":1}"#, r#"{"b":2}"#])
    );

    let single = store
        .create("one", with_body(r#"{"c":3}"#, json_stream()))
        .await
        .unwrap();
    assert_eq!(single.info.next, Offset(1));

    let empty = store
        .create("empty", with_body("[]", json_stream()))
        .await
        .unwrap();
    assert!(empty.created, "PUT with [] creates an empty JSON stream");
    assert_eq!(empty.info.next, Offset::START);

    let fin = store
        .create("final", closed(with_body("done", bytes_stream())))
        .await
        .unwrap();
    assert!(fin.info.closed);
    assert_eq!(fin.info.next, Offset(4));
    let chunk = store.read("final", ReadFrom::Start, ALL).await.unwrap();
    assert_eq!(chunk.records.concat(), b"done");
    assert!(chunk.at_closed_end());
}

pub(crate) async fn invalid_initial_json_creates_nothing(h: &impl Harness) {
    let store = h.open().await;
    let err = store
        .create("j", with_body("{oops", json_stream()))
        .await
        .unwrap_err();
    assert!(matches!(err, CreateError::InvalidBody(_)), "{err:?}");
    assert_eq!(store.head("j").await.unwrap_err(), LookupError::NotFound);
    assert!(store.create("j", json_stream()).await.unwrap().created);
}

pub(crate) async fn delete_then_recreate_gives_a_new_empty_stream(h: &impl Harness) {
    let store = h.open().await;
    let old = store.create("s", json_stream()).await.unwrap().info.id;
    store.append("s", json("[1,2]")).await.unwrap();

    store.delete("s").await.unwrap();
    assert_eq!(store.head("s").await.unwrap_err(), LookupError::NotFound);
    assert_eq!(
        store.read("s", ReadFrom::Start, ALL).await.unwrap_err(),
        LookupError::NotFound
    );
    assert_eq!(
        store.append("s", json("3")).await.unwrap_err(),
        AppendError::NotFound
    );
    assert_eq!(store.delete("s").await.unwrap_err(), DeleteError::NotFound);

    let new = store.create("s", bytes_stream()).await.unwrap();
    assert!(new.created);
    assert_ne!(new.info.id, old, "a new stream, not the old one revived");
    assert_eq!(new.info.next, Offset::START);
    assert!(!new.info.is_json());
    assert!(read_bytes(&*store, "s").await.is_empty());
    assert_eq!(store.append("s", bytes("x")).await.unwrap().next, Offset(1));
    assert_eq!(read_bytes(&*store, "s").await, b"x");
}
