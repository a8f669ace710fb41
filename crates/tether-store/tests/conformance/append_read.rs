//! Appending and reading: positions, byte-exact data, JSON flattening, rejected bodies, and
//! catch-up reads that follow `next` (protocol 5.2, 5.6, 9.1; G2).

use tether_store::{AppendError, AppendStatus, LookupError};
use tether_types::{Offset, ReadFrom};

use crate::common::*;

pub(crate) async fn append_offsets_strictly_increase_by_the_appended_size(h: &impl Harness) {
    let store = h.open().await;
    store.create("b", bytes_stream()).await.unwrap();
    let mut expected = 0u64;
    for len in 1..=20usize {
        let ack = store
            .append("b", bytes(vec![len as u8; len]))
            .await
            .unwrap();
        expected += len as u64;
        assert_eq!(ack.status, AppendStatus::Appended);
        assert_eq!(ack.next, Offset(expected), "byte positions");
        assert!(!ack.closed);
        assert_eq!(ack.producer, None);
    }
    assert_eq!(store.head("b").await.unwrap().next, Offset(expected));

    store.create("j", json_stream()).await.unwrap();
    let mut nexts = Vec::new();
    for body in ["[1,2,3]", "4", "[[5,6]]", r#"{"seven":7}"#] {
        nexts.push(store.append("j", json(body)).await.unwrap().next.0);
    }
    assert_eq!(nexts, [3, 4, 5, 6], "message positions");
}

pub(crate) async fn binary_data_comes_back_byte_for_byte(h: &impl Harness) {
    let store = h.open().await;
    store.create("b", bytes_stream()).await.unwrap();
    let pieces: Vec<Vec<u8>> = vec![
        (0..=255u8).collect(),
        vec![0xFF, 0x00, 0xFF, 0x00, b'\r', b'\n'],
        vec![0x00; 1000],
        vec![0xC3, 0x28, 0xE2, 0x82],
        (0..=255u8).rev().collect(),
    ];
    for piece in &pieces {
        store.append("b", bytes(piece.clone())).await.unwrap();
    }
    let all = pieces.concat();
    assert_eq!(read_bytes(&*store, "b").await, all);
    let rest = read_at(&*store, "b", 256).await;
    assert_eq!(rest.records.concat(), &all[256..]);
}

pub(crate) async fn json_arrays_are_flattened_exactly_one_level(h: &impl Harness) {
    let store = h.open().await;
    store.create("j", json_stream()).await.unwrap();
    let a = store
        .append("j", json(r#"[{"a":1}, [2,3], "x"]"#))
        .await
        .unwrap();
    assert_eq!(a.next, Offset(3));
    store.append("j", json(r#"{"b":[4]}"#)).await.unwrap();
    store.append("j", json("[[5]]")).await.unwrap();
    let last = store.append("j", json(" [ [[6]] ] ")).await.unwrap();
    assert_eq!(last.next, Offset(6));
    assert_eq!(
        read_messages(&*store, "j").await,
        values(&[
            r#"{"a":1}"#,
            "[2,3]",
            r#""x""#,
            r#"{"b":[4]}"#,
            "[5]",
            "[[6]]"
        ])
    );
}

pub(crate) async fn empty_json_array_append_is_rejected(h: &impl Harness) {
    let store = h.open().await;
    store.create("j", json_stream()).await.unwrap();
    store.append("j", json("[1]")).await.unwrap();
    for body in ["[]", "  [ ]  "] {
        let err = store.append("j", json(body)).await.unwrap_err();
        assert!(
            matches!(err, AppendError::InvalidBody(_)),
            "{body:?}: {err:?}"
        );
    }
    let err = store
        .append("j", json("[]").by_producer("p", 0, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::InvalidBody(_)), "{err:?}");
    assert_eq!(store.head("j").await.unwrap().next, Offset(1));
    assert_eq!(read_messages(&*store, "j").await, values(&["1"]));
}

pub(crate) async fn invalid_json_append_is_rejected_and_stores_nothing(h: &impl Harness) {
    let store = h.open().await;
    store.create("j", json_stream()).await.unwrap();
    for body in [r#"{"a":"#, "not json", "[1,2", "{} {}", "[1,]"] {
        let err = store.append("j", json(body)).await.unwrap_err();
        assert!(
            matches!(err, AppendError::InvalidBody(_)),
            "{body:?}: {err:?}"
        );
    }
    let err = store
        .append("j", append(JSON, vec![0xFF, 0xFE]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::InvalidBody(_)),
        "not UTF-8: {err:?}"
    );
    assert_eq!(store.head("j").await.unwrap().next, Offset::START);
    assert_eq!(store.append("j", json("1")).await.unwrap().next, Offset(1));
    assert_eq!(read_messages(&*store, "j").await, values(&["1"]));
}

pub(crate) async fn append_with_another_content_type_is_rejected(h: &impl Harness) {
    let store = h.open().await;
    store.create("b", bytes_stream()).await.unwrap();
    for wrong in [append("text/plain", "x"), append(JSON, "1")] {
        assert_eq!(
            store.append("b", wrong).await.unwrap_err(),
            AppendError::ContentTypeMismatch
        );
    }
    store.create("j", json_stream()).await.unwrap();
    assert_eq!(
        store.append("j", bytes("1")).await.unwrap_err(),
        AppendError::ContentTypeMismatch
    );
    assert_eq!(store.head("b").await.unwrap().next, Offset::START);
    assert_eq!(store.head("j").await.unwrap().next, Offset::START);
    let ok = store
        .append("b", append("Application/Octet-Stream; x=1", "y"))
        .await
        .unwrap();
    assert_eq!(ok.next, Offset(1), "compared without case or parameters");
}

pub(crate) async fn empty_body_without_close_is_rejected(h: &impl Harness) {
    let store = h.open().await;
    store.create("b", bytes_stream()).await.unwrap();
    store.create("j", json_stream()).await.unwrap();
    for (path, request) in [
        ("b", bytes("")),
        ("b", tether_store::Append::default()),
        ("j", json("")),
        ("j", json("").by_producer("p", 0, 0)),
    ] {
        assert_eq!(
            store.append(path, request).await.unwrap_err(),
            AppendError::EmptyBody,
            "{path}"
        );
        let info = store.head(path).await.unwrap();
        assert_eq!(info.next, Offset::START);
        assert!(!info.closed);
    }
}

pub(crate) async fn reads_from_a_middle_offset_return_only_what_follows(h: &impl Harness) {
    let store = h.open().await;
    store.create("b", bytes_stream()).await.unwrap();
    for piece in ["abc", "def", "ghi"] {
        store.append("b", bytes(piece)).await.unwrap();
    }
    let chunk = read_at(&*store, "b", 3).await;
    assert_eq!(chunk.records.concat(), b"defghi");
    assert_eq!((chunk.from, chunk.next), (Offset(3), Offset(9)));
    assert!(chunk.up_to_date);
    let inside = read_at(&*store, "b", 4).await;
    assert_eq!(
        inside.records.concat(),
        b"efghi",
        "byte positions inside an append"
    );

    store.create("j", json_stream()).await.unwrap();
    store.append("j", json(r#"["a","b","c"]"#)).await.unwrap();
    store.append("j", json(r#""d""#)).await.unwrap();
    let chunk = read_at(&*store, "j", 2).await;
    assert_eq!(messages(&chunk.records), values(&[r#""c""#, r#""d""#]));
    assert_eq!((chunk.from, chunk.next), (Offset(2), Offset(4)));
}

pub(crate) async fn reads_from_inside_the_latest_append_return_the_rest_of_it(h: &impl Harness) {
    let store = h.open().await;
    store.create("b", bytes_stream()).await.unwrap();
    store.append("b", bytes("0123456789")).await.unwrap();
    let chunk = read_at(&*store, "b", 5).await;
    assert_eq!(
        (chunk.records.concat(), chunk.next, chunk.up_to_date),
        (b"56789".to_vec(), Offset(10), true),
        "byte position 5 of a stream whose only append is 10 bytes long"
    );

    store.append("b", bytes("ab")).await.unwrap();
    let chunk = read_at(&*store, "b", 11).await;
    assert_eq!(
        (chunk.records.concat(), chunk.next, chunk.up_to_date),
        (b"b".to_vec(), Offset(12), true),
        "byte position 11, inside the latest append"
    );
}

pub(crate) async fn read_from_now_returns_nothing_at_the_tail(h: &impl Harness) {
    let store = h.open().await;
    store.create("b", bytes_stream()).await.unwrap();
    store.append("b", bytes("abc")).await.unwrap();
    let now = store.read("b", ReadFrom::Now, ALL).await.unwrap();
    assert!(now.is_empty());
    assert_eq!((now.from, now.next), (Offset(3), Offset(3)));
    assert!(now.up_to_date);

    store.append("b", bytes("de")).await.unwrap();
    let after = store.read("b", ReadFrom::At(now.next), ALL).await.unwrap();
    assert_eq!(after.records.concat(), b"de", "only what came after `now`");
}

pub(crate) async fn reads_past_the_tail_are_rejected(h: &impl Harness) {
    let store = h.open().await;
    store.create("b", bytes_stream()).await.unwrap();
    assert_eq!(
        store
            .read("b", ReadFrom::At(Offset(1)), ALL)
            .await
            .unwrap_err(),
        LookupError::OffsetBeyondTail
    );
    store.append("b", bytes("abc")).await.unwrap();
    assert_eq!(
        store
            .read("b", ReadFrom::At(Offset(4)), ALL)
            .await
            .unwrap_err(),
        LookupError::OffsetBeyondTail
    );
    let at_tail = read_at(&*store, "b", 3).await;
    assert!(at_tail.is_empty() && at_tail.up_to_date);

    store.create("j", json_stream()).await.unwrap();
    store.append("j", json("[1,2]")).await.unwrap();
    assert_eq!(
        store
            .read("j", ReadFrom::At(Offset(3)), ALL)
            .await
            .unwrap_err(),
        LookupError::OffsetBeyondTail
    );
}

pub(crate) async fn small_reads_following_next_return_the_whole_log_exactly_once(h: &impl Harness) {
    let store = h.open().await;
    store.create("b", bytes_stream()).await.unwrap();
    let mut written = Vec::new();
    for i in 0..120usize {
        // Varied sizes, one much larger than any read budget below.
        let len = if i == 60 { 3000 } else { 1 + (i * 7) % 37 };
        let piece: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
        store.append("b", bytes(piece.clone())).await.unwrap();
        written.extend(piece);
    }
    for max_bytes in [1, 7, 64, 1000] {
        let (records, next) = follow(&*store, "b", ReadFrom::Start, max_bytes).await;
        assert_eq!(records.concat(), written, "max_bytes {max_bytes}");
        assert_eq!(next, Offset(written.len() as u64));
        let (records, _) = follow(&*store, "b", ReadFrom::At(Offset(1234)), max_bytes).await;
        assert_eq!(
            records.concat(),
            &written[1234..],
            "from 1234, max_bytes {max_bytes}"
        );
    }

    store.create("j", json_stream()).await.unwrap();
    let mut expected = Vec::new();
    for batch in 0..40 {
        let items: Vec<String> = (0..7)
            .map(|k| format!(r#"{{"n":{}}}"#, batch * 7 + k))
            .collect();
        store
            .append("j", json(&format!("[{}]", items.join(","))))
            .await
            .unwrap();
        expected.extend(items.iter().map(|i| value(i)));
    }
    for max_bytes in [1, 50, 500] {
        let (records, next) = follow(&*store, "j", ReadFrom::Start, max_bytes).await;
        assert_eq!(messages(&records), expected, "max_bytes {max_bytes}");
        assert_eq!(next, Offset(280));
    }
}

pub(crate) async fn logs_larger_than_any_cache_read_back_completely(h: &impl Harness) {
    let store = h.open().await;
    store.create("b", bytes_stream()).await.unwrap();
    let mut written = Vec::new();
    for i in 0..40u32 {
        let piece: Vec<u8> = (0..64 * 1024u32)
            .map(|j| (i.wrapping_mul(7919) ^ j) as u8)
            .collect();
        store.append("b", bytes(piece.clone())).await.unwrap();
        written.extend(piece);
    }
    let (records, _) = follow(&*store, "b", ReadFrom::Start, 100_000).await;
    assert_eq!(records.concat(), written);

    store.create("j", json_stream()).await.unwrap();
    for batch in 0..25 {
        let items: Vec<String> = (0..250).map(|k| (batch * 250 + k).to_string()).collect();
        store
            .append("j", json(&format!("[{}]", items.join(","))))
            .await
            .unwrap();
    }
    let (records, next) = follow(&*store, "j", ReadFrom::Start, 10_000).await;
    assert_eq!(next, Offset(6250));
    let numbers: Vec<u64> = messages(&records)
        .iter()
        .map(|m| m.as_u64().expect("a number"))
        .collect();
    assert_eq!(numbers, (0..6250).collect::<Vec<u64>>());
}
