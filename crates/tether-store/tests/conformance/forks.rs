//! Forks: inherited prefixes, sub-offsets, chains, and soft delete with cascading cleanup
//! (protocol 4.2).

use tether_store::{
    AppendError, AppendStatus, CreateError, CreateStream, DeleteError, LookupError,
};
use tether_types::{Offset, ReadFrom};

use crate::common::*;

pub(crate) async fn fork_reads_the_source_prefix_then_its_own_appends(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    store.append("src", bytes("hello ")).await.unwrap();
    store.append("src", bytes("world")).await.unwrap();

    let fork = store.create("f", fork_of("src", Some(6), 0)).await.unwrap();
    assert!(fork.created);
    assert_eq!(fork.info.next, Offset(6));
    assert!(!fork.info.closed);
    assert!(!fork.info.is_json(), "content type inherited");
    assert_ne!(fork.info.id, store.head("src").await.unwrap().id);
    assert_eq!(read_bytes(&*store, "f").await, b"hello ");

    assert_eq!(
        store.append("f", bytes("there")).await.unwrap().next,
        Offset(11)
    );
    assert_eq!(read_bytes(&*store, "f").await, b"hello there");
    assert_eq!(read_at(&*store, "f", 6).await.records.concat(), b"there");
    assert_eq!(
        read_at(&*store, "f", 3).await.records.concat(),
        b"lo there",
        "a read across the fork point"
    );
    assert_eq!(read_bytes(&*store, "src").await, b"hello world");

    let empty = store
        .create("f0", fork_of("src", Some(0), 0))
        .await
        .unwrap();
    assert_eq!(empty.info.next, Offset::START);
    assert!(read_bytes(&*store, "f0").await.is_empty());
}

pub(crate) async fn source_appends_after_a_fork_are_invisible_in_the_fork(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    store.append("src", bytes("abc")).await.unwrap();
    let fork = store.create("f", fork_of("src", None, 0)).await.unwrap();
    assert_eq!(
        fork.info.next,
        Offset(3),
        "no offset forks at the source's tail"
    );
    store.append("src", bytes("def")).await.unwrap();
    assert_eq!(read_bytes(&*store, "f").await, b"abc");
    assert_eq!(store.head("f").await.unwrap().next, Offset(3));
    store.append("f", bytes("X")).await.unwrap();
    assert_eq!(read_bytes(&*store, "f").await, b"abcX");
    assert_eq!(read_bytes(&*store, "src").await, b"abcdef");

    store.create("jsrc", json_stream()).await.unwrap();
    store.append("jsrc", json("[1,2]")).await.unwrap();
    store.create("jf", fork_of("jsrc", None, 0)).await.unwrap();
    store.append("jsrc", json("3")).await.unwrap();
    store.append("jf", json("4")).await.unwrap();
    assert_eq!(read_messages(&*store, "jf").await, values(&["1", "2", "4"]));
    assert_eq!(
        read_messages(&*store, "jsrc").await,
        values(&["1", "2", "3"])
    );
}

pub(crate) async fn binary_fork_sub_offset_inherits_bytes_past_the_anchor(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    store.append("src", bytes("hello ")).await.unwrap(); // [0, 6)
    store.append("src", bytes("world")).await.unwrap(); // [6, 11)

    let f = store.create("f", fork_of("src", Some(6), 3)).await.unwrap();
    assert_eq!(f.info.next, Offset(9));
    assert_eq!(read_bytes(&*store, "f").await, b"hello wor");
    store.append("f", bytes("ld!")).await.unwrap();
    assert_eq!(read_bytes(&*store, "f").await, b"hello world!");

    let whole = store.create("g", fork_of("src", Some(6), 5)).await.unwrap();
    assert_eq!(
        whole.info.next,
        Offset(11),
        "a sub-offset may reach the append's end"
    );
    assert_eq!(read_bytes(&*store, "g").await, b"hello world");
    let first = store.create("k", fork_of("src", Some(0), 6)).await.unwrap();
    assert_eq!(read_bytes(&*store, "k").await, b"hello ");
    let zero = store.create("z", fork_of("src", Some(6), 0)).await.unwrap();
    assert_eq!(zero.info.next, Offset(6));
    assert_eq!(first.info.next, Offset(6));

    for (offset, sub) in [(6, 6), (0, 7)] {
        assert_eq!(
            store
                .create("bad", fork_of("src", Some(offset), sub))
                .await
                .unwrap_err(),
            CreateError::SubOffsetOutOfRange,
            "offset {offset} + sub-offset {sub}"
        );
    }
    assert_eq!(store.head("bad").await.unwrap_err(), LookupError::NotFound);
}

pub(crate) async fn json_fork_sub_offset_inherits_messages_past_the_anchor(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", json_stream()).await.unwrap();
    store.append("src", json("[1,2,3]")).await.unwrap(); // [0, 3)
    store.append("src", json("[4,5]")).await.unwrap(); // [3, 5)

    let f = store.create("f", fork_of("src", Some(3), 1)).await.unwrap();
    assert_eq!(f.info.next, Offset(4));
    assert!(f.info.is_json());
    assert_eq!(
        read_messages(&*store, "f").await,
        values(&["1", "2", "3", "4"])
    );
    store.append("f", json("[6]")).await.unwrap();
    assert_eq!(
        read_messages(&*store, "f").await,
        values(&["1", "2", "3", "4", "6"])
    );

    store
        .create("two", fork_of("src", Some(0), 2))
        .await
        .unwrap();
    assert_eq!(read_messages(&*store, "two").await, values(&["1", "2"]));
    store
        .create("all", fork_of("src", Some(0), 3))
        .await
        .unwrap();
    assert_eq!(
        read_messages(&*store, "all").await,
        values(&["1", "2", "3"])
    );

    for (offset, sub) in [(0, 4), (3, 3)] {
        assert_eq!(
            store
                .create("bad", fork_of("src", Some(offset), sub))
                .await
                .unwrap_err(),
            CreateError::SubOffsetOutOfRange,
            "offset {offset} + sub-offset {sub}"
        );
    }
    store.create("empty", json_stream()).await.unwrap();
    assert_eq!(
        store
            .create("bad", fork_of("empty", Some(0), 1))
            .await
            .unwrap_err(),
        CreateError::SubOffsetOutOfRange,
        "an empty source has nothing to inherit past its start"
    );
}

pub(crate) async fn fork_of_a_fork_reads_through_both_ancestors(h: &impl Harness) {
    let store = h.open().await;
    store.create("a", bytes_stream()).await.unwrap();
    store.append("a", bytes("aaaa")).await.unwrap();
    store.append("a", bytes("AAAA")).await.unwrap();
    store.create("b", fork_of("a", Some(4), 0)).await.unwrap();
    store.append("b", bytes("bbbb")).await.unwrap(); // b: aaaa|bbbb
    store.append("a", bytes("zzzz")).await.unwrap();

    let c = store.create("c", fork_of("b", Some(6), 0)).await.unwrap();
    assert_eq!(c.info.next, Offset(6));
    store.append("c", bytes("cc")).await.unwrap();
    store.append("b", bytes("BB")).await.unwrap();
    assert_eq!(read_bytes(&*store, "c").await, b"aaaabbcc");
    for max_bytes in [1, 3] {
        let (records, next) = follow(&*store, "c", ReadFrom::Start, max_bytes).await;
        assert_eq!(records.concat(), b"aaaabbcc", "max_bytes {max_bytes}");
        assert_eq!(next, Offset(8));
        let (records, _) = follow(&*store, "c", ReadFrom::At(Offset(2)), max_bytes).await;
        assert_eq!(records.concat(), b"aabbcc", "from 2, max_bytes {max_bytes}");
    }

    // Sub-offsets compose with the chain: the batch at b's position 4 is b's own "bbbb".
    store.create("d", fork_of("b", Some(4), 2)).await.unwrap();
    assert_eq!(read_bytes(&*store, "d").await, b"aaaabb");
    assert_eq!(read_bytes(&*store, "b").await, b"aaaabbbbBB");
    assert_eq!(read_bytes(&*store, "a").await, b"aaaaAAAAzzzz");
}

pub(crate) async fn reads_of_a_fork_from_any_position_in_any_chunk_size_have_no_gaps(
    h: &impl Harness,
) {
    let store = h.open().await;
    store.create("a", bytes_stream()).await.unwrap();
    for piece in ["0123456789", "ab", "cdefghij", "k"] {
        store.append("a", bytes(piece)).await.unwrap();
    }
    // Inherits "0123456789ab" and five bytes of the batch at 12.
    store.create("b", fork_of("a", Some(12), 5)).await.unwrap();
    for piece in ["BBBBBBB", "C", "DDDD"] {
        store.append("b", bytes(piece)).await.unwrap();
    }
    // The batch at b's position 17 is its own "BBBBBBB"; the fork keeps three of its bytes.
    store.create("c", fork_of("b", Some(17), 3)).await.unwrap();
    store.append("c", bytes("xyz")).await.unwrap();

    let expected = [
        ("a", "0123456789abcdefghijk"),
        ("b", "0123456789abcdefgBBBBBBBCDDDD"),
        ("c", "0123456789abcdefgBBBxyz"),
    ];
    for (path, content) in expected {
        assert_eq!(read_bytes(&*store, path).await, content.as_bytes());
        for from in 0..=content.len() {
            for max_bytes in [1, 2, 3, 5, 8, 64] {
                let at = ReadFrom::At(Offset(from as u64));
                let (records, next) = follow(&*store, path, at, max_bytes).await;
                assert_eq!(
                    records.concat(),
                    &content.as_bytes()[from..],
                    "{path} from {from}, max_bytes {max_bytes}"
                );
                assert_eq!(next, Offset(content.len() as u64));
            }
        }
    }
}

pub(crate) async fn fork_creation_errors_name_their_cause(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    store.append("src", bytes("abc")).await.unwrap();
    assert_eq!(
        store
            .create("f", fork_of("missing", None, 0))
            .await
            .unwrap_err(),
        CreateError::SourceNotFound
    );
    assert_eq!(
        store
            .create("f", fork_of("src", Some(4), 0))
            .await
            .unwrap_err(),
        CreateError::ForkOffsetBeyondTail
    );
    let mismatched = CreateStream {
        content_type: Some(JSON.into()),
        ..fork_of("src", None, 0)
    };
    assert_eq!(
        store.create("f", mismatched).await.unwrap_err(),
        CreateError::ForkContentTypeMismatch
    );
    assert_eq!(store.head("f").await.unwrap_err(), LookupError::NotFound);

    let matching = CreateStream {
        content_type: Some("Application/Octet-Stream".into()),
        ..fork_of("src", None, 0)
    };
    assert!(store.create("f", matching).await.unwrap().created);
}

pub(crate) async fn fork_creation_is_idempotent(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    store.append("src", bytes("hello ")).await.unwrap();
    store.append("src", bytes("world")).await.unwrap();
    let first = store.create("f", fork_of("src", Some(6), 3)).await.unwrap();
    store.append("f", bytes("!")).await.unwrap();

    let again = store.create("f", fork_of("src", Some(6), 3)).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.info.id, first.info.id);
    assert_eq!(again.info.next, Offset(10));
    for other in [
        fork_of("src", Some(6), 2),
        fork_of("src", Some(0), 0),
        bytes_stream(),
    ] {
        assert_eq!(
            store.create("f", other.clone()).await.unwrap_err(),
            CreateError::ConfigMismatch,
            "{other:?}"
        );
    }
    assert_eq!(read_bytes(&*store, "f").await, b"hello wor!");
}

pub(crate) async fn forks_of_closed_streams_start_open(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    store.append("src", bytes("abc").closing()).await.unwrap();
    let fork = store.create("f", fork_of("src", None, 0)).await.unwrap();
    assert!(!fork.info.closed);
    assert_eq!(store.append("f", bytes("d")).await.unwrap().next, Offset(4));
    assert_eq!(read_bytes(&*store, "f").await, b"abcd");
    assert!(store.head("src").await.unwrap().closed);

    // Closing a fork leaves its source open.
    store.create("open", bytes_stream()).await.unwrap();
    store.create("g", fork_of("open", None, 0)).await.unwrap();
    store.append("g", close_only()).await.unwrap();
    assert!(!store.head("open").await.unwrap().closed);
    store.append("open", bytes("still open")).await.unwrap();
}

pub(crate) async fn forks_do_not_inherit_producer_or_stream_seq_state(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    for (seq, stream_seq) in [(0, "a"), (1, "b"), (2, "c")] {
        store
            .append(
                "src",
                bytes(stream_seq)
                    .by_producer("p", 0, seq)
                    .with_stream_seq(stream_seq),
            )
            .await
            .unwrap();
    }
    store.create("f", fork_of("src", Some(2), 1)).await.unwrap();
    let ack = store
        .append("f", bytes("x").by_producer("p", 0, 0).with_stream_seq("a"))
        .await
        .unwrap();
    assert_eq!(
        ack.status,
        AppendStatus::Appended,
        "fresh writer state on the fork"
    );
    assert_eq!(read_bytes(&*store, "f").await, b"abcx");
    assert_eq!(
        store
            .append("src", bytes("c").by_producer("p", 0, 2))
            .await
            .unwrap()
            .status,
        AppendStatus::Duplicate,
        "the source's producer state is untouched"
    );
}

pub(crate) async fn forks_inherit_the_source_expiry_unless_they_set_their_own(h: &impl Harness) {
    let store = h.open().await;
    let at = in_an_hour();
    store
        .create("ttl", with_ttl(600, bytes_stream()))
        .await
        .unwrap();
    store
        .create("exp", expiring_at(at, bytes_stream()))
        .await
        .unwrap();
    let config = |c: tether_store::StreamConfig| (c.ttl_secs, c.expires_at);

    store.create("f1", fork_of("ttl", None, 0)).await.unwrap();
    assert_eq!(
        config(store.head("f1").await.unwrap().config),
        (Some(600), None)
    );
    store.create("f2", fork_of("exp", None, 0)).await.unwrap();
    assert_eq!(
        config(store.head("f2").await.unwrap().config),
        (None, Some(at))
    );
    store
        .create("f3", with_ttl(30, fork_of("exp", None, 0)))
        .await
        .unwrap();
    assert_eq!(
        config(store.head("f3").await.unwrap().config),
        (Some(30), None)
    );
}

pub(crate) async fn deleting_a_source_with_forks_soft_deletes_it(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    store.append("src", bytes("abc")).await.unwrap();
    store.create("f", fork_of("src", None, 0)).await.unwrap();
    store.append("f", bytes("d")).await.unwrap();

    store.delete("src").await.unwrap();
    assert_eq!(store.head("src").await.unwrap_err(), LookupError::Gone);
    assert_eq!(
        store.read("src", ReadFrom::Start, ALL).await.unwrap_err(),
        LookupError::Gone
    );
    assert_eq!(store.watch("src").await.unwrap_err(), LookupError::Gone);
    assert_eq!(
        store.append("src", bytes("x")).await.unwrap_err(),
        AppendError::Gone
    );
    assert_eq!(store.delete("src").await.unwrap_err(), DeleteError::Gone);
    assert_eq!(
        store.create("src", bytes_stream()).await.unwrap_err(),
        CreateError::PathBlocked
    );
    assert_eq!(
        store
            .create("g", fork_of("src", None, 0))
            .await
            .unwrap_err(),
        CreateError::SourceGone
    );

    assert_eq!(read_bytes(&*store, "f").await, b"abcd");
    store.append("f", bytes("e")).await.unwrap();
    assert_eq!(read_bytes(&*store, "f").await, b"abcde");
}

pub(crate) async fn deleting_the_last_fork_cleans_up_a_soft_deleted_source(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    store.append("src", bytes("abc")).await.unwrap();
    store.create("f1", fork_of("src", None, 0)).await.unwrap();
    store
        .create("f2", fork_of("src", Some(1), 0))
        .await
        .unwrap();
    store.delete("src").await.unwrap();

    store.delete("f1").await.unwrap();
    assert_eq!(
        store.head("src").await.unwrap_err(),
        LookupError::Gone,
        "f2 still reads from it"
    );
    assert_eq!(read_bytes(&*store, "f2").await, b"a");

    store.delete("f2").await.unwrap();
    eventually_not_found(&*store, "src").await;
    let fresh = store.create("src", bytes_stream()).await.unwrap();
    assert!(fresh.created);
    assert!(read_bytes(&*store, "src").await.is_empty());
}

pub(crate) async fn cleanup_cascades_up_a_chain_of_deleted_forks(h: &impl Harness) {
    let store = h.open().await;
    store.create("a", bytes_stream()).await.unwrap();
    store.append("a", bytes("a")).await.unwrap();
    store.create("b", fork_of("a", None, 0)).await.unwrap();
    store.append("b", bytes("b")).await.unwrap();
    store.create("c", fork_of("b", None, 0)).await.unwrap();
    store.append("c", bytes("c")).await.unwrap();

    store.delete("a").await.unwrap();
    store.delete("b").await.unwrap();
    assert_eq!(store.head("a").await.unwrap_err(), LookupError::Gone);
    assert_eq!(store.head("b").await.unwrap_err(), LookupError::Gone);
    assert_eq!(read_bytes(&*store, "c").await, b"abc");

    store.delete("c").await.unwrap();
    assert_eq!(store.head("c").await.unwrap_err(), LookupError::NotFound);
    eventually_not_found(&*store, "b").await;
    eventually_not_found(&*store, "a").await;
}

pub(crate) async fn deleting_forks_leaves_a_live_source_alone(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    store.append("src", bytes("abc")).await.unwrap();
    store.create("f", fork_of("src", None, 0)).await.unwrap();
    store.delete("f").await.unwrap();
    assert_eq!(store.head("f").await.unwrap_err(), LookupError::NotFound);
    assert_eq!(read_bytes(&*store, "src").await, b"abc");
    store.append("src", bytes("d")).await.unwrap();

    // No fork holds it any more, so deleting it is final rather than soft.
    store.delete("src").await.unwrap();
    assert_eq!(store.head("src").await.unwrap_err(), LookupError::NotFound);
    assert!(store.create("src", bytes_stream()).await.unwrap().created);
}

pub(crate) async fn rejected_forks_do_not_pin_their_source(h: &impl Harness) {
    let store = h.open().await;
    store.create("src", bytes_stream()).await.unwrap();
    store.append("src", bytes("abc")).await.unwrap();
    let wrong_type = CreateStream {
        content_type: Some(JSON.into()),
        ..fork_of("src", None, 0)
    };
    assert!(store.create("f", wrong_type).await.is_err());
    assert!(store.create("f", fork_of("src", Some(9), 0)).await.is_err());
    assert!(store.create("f", fork_of("src", Some(0), 9)).await.is_err());

    store.delete("src").await.unwrap();
    assert_eq!(
        store.head("src").await.unwrap_err(),
        LookupError::NotFound,
        "no fork was created, so the delete is final rather than soft"
    );
}
