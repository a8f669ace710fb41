//! Many writers at once: group commit must store every acknowledged append exactly once, in each
//! writer's order (G1, G2).

use tether_store::{AppendError, AppendStatus};
use tokio::task::JoinSet;

use crate::common::*;

pub(crate) async fn concurrent_appends_are_each_stored_once_in_each_writers_order(
    h: &impl Harness,
) {
    const TASKS: usize = 16;
    const STREAMS: usize = 4;
    const APPENDS: usize = 200;
    let is_json = |s: usize| s.is_multiple_of(2);
    let store = h.open().await;
    for s in 0..STREAMS {
        let request = if is_json(s) {
            json_stream()
        } else {
            bytes_stream()
        };
        store.create(&format!("c{s}"), request).await.unwrap();
    }

    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            let s = t % STREAMS;
            let path = format!("c{s}");
            let mut acks = Vec::with_capacity(APPENDS);
            let mut last = 0;
            for k in 0..APPENDS {
                let (body, request) = if is_json(s) {
                    let body = format!(r#"{{"t":{t},"k":{k}}}"#);
                    let request = json(&body);
                    (body, request)
                } else {
                    let body = format!("t{t:02}k{k:03};");
                    (body.clone(), bytes(body))
                };
                let ack = store
                    .append(&path, request)
                    .await
                    .unwrap_or_else(|e| panic!("task {t}, append {k}: {e}"));
                assert_eq!(ack.status, AppendStatus::Appended);
                assert!(
                    ack.next.0 > last,
                    "task {t}: offsets strictly increase ({last} then {})",
                    ack.next.0
                );
                last = ack.next.0;
                acks.push((body, ack.next.0));
            }
            (s, acks)
        });
    }
    let mut per_stream: Vec<Vec<(String, u64)>> = vec![Vec::new(); STREAMS];
    while let Some(joined) = tasks.join_next().await {
        let (s, acks) = joined.expect("an append task panicked");
        per_stream[s].extend(acks);
    }

    for (s, mut acks) in per_stream.into_iter().enumerate() {
        let path = format!("c{s}");
        assert_eq!(acks.len(), TASKS / STREAMS * APPENDS);
        acks.sort_by_key(|(_, next)| *next);
        if is_json(s) {
            let messages = read_messages(&*store, &path).await;
            assert_eq!(
                messages.len(),
                acks.len(),
                "{path}: every acknowledged append once, nothing else"
            );
            for (i, (body, next)) in acks.iter().enumerate() {
                assert_eq!(
                    *next,
                    i as u64 + 1,
                    "{path}: acknowledged offsets are distinct"
                );
                assert_eq!(
                    messages[i],
                    value(body),
                    "{path}: the data is where its ack said"
                );
            }
        } else {
            let data = read_bytes(&*store, &path).await;
            let mut pos = 0usize;
            for (body, next) in &acks {
                let end = pos + body.len();
                assert_eq!(
                    *next, end as u64,
                    "{path}: acknowledged ranges tile the stream"
                );
                assert_eq!(
                    &data[pos..end],
                    body.as_bytes(),
                    "{path}: the data is where its ack said"
                );
                pos = end;
            }
            assert_eq!(pos, data.len(), "{path}: nothing but acknowledged data");
        }
    }
}

pub(crate) async fn concurrent_retries_of_producer_batches_are_stored_once(h: &impl Harness) {
    const PRODUCERS: u64 = 4;
    const BATCHES: u64 = 50;
    let store = h.open().await;
    store.create("s", json_stream()).await.unwrap();
    let mut tasks = JoinSet::new();
    for p in 0..PRODUCERS {
        let store = store.clone();
        tasks.spawn(async move {
            let id = format!("producer-{p}");
            for seq in 0..BATCHES {
                let body = format!(r#"[{{"p":{p},"s":{seq},"m":0}},{{"p":{p},"s":{seq},"m":1}}]"#);
                let request = json(&body).by_producer(&id, 0, seq);
                let (a, b) = tokio::join!(
                    store.append("s", request.clone()),
                    store.append("s", request)
                );
                let statuses = [a.unwrap().status, b.unwrap().status];
                let appended = statuses
                    .iter()
                    .filter(|s| **s == AppendStatus::Appended)
                    .count();
                let duplicate = statuses
                    .iter()
                    .filter(|s| **s == AppendStatus::Duplicate)
                    .count();
                assert_eq!(
                    (appended, duplicate),
                    (1, 1),
                    "{id} seq {seq}: one copy applied, the retry deduplicated: {statuses:?}"
                );
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a producer task panicked");
    }

    let messages = read_messages(&*store, "s").await;
    assert_eq!(messages.len() as u64, PRODUCERS * BATCHES * 2);
    for p in 0..PRODUCERS {
        let mine: Vec<(u64, u64)> = messages
            .iter()
            .filter(|m| m["p"] == p)
            .map(|m| (m["s"].as_u64().unwrap(), m["m"].as_u64().unwrap()))
            .collect();
        let expected: Vec<(u64, u64)> = (0..BATCHES).flat_map(|s| [(s, 0), (s, 1)]).collect();
        assert_eq!(mine, expected, "producer {p}: each batch once, in order");
    }
}

pub(crate) async fn rejected_appends_in_a_busy_batch_leave_the_others_intact(h: &impl Harness) {
    const TASKS: usize = 8;
    const APPENDS: usize = 100;
    let store = h.open().await;
    store.create("s", bytes_stream()).await.unwrap();
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            let mut accepted = Vec::new();
            for k in 0..APPENDS {
                let body = format!("<{t}:{k}>");
                if t % 2 == 0 {
                    let ack = store.append("s", bytes(body.clone())).await.unwrap();
                    accepted.push((body, ack.next.0));
                    continue;
                }
                let (request, expected) = match k % 3 {
                    0 => (append("text/plain", body), AppendError::ContentTypeMismatch),
                    1 => (bytes(""), AppendError::EmptyBody),
                    _ => (
                        bytes(body).by_producer(&format!("gappy-{t}"), 0, 5),
                        AppendError::SeqGap {
                            expected: 0,
                            received: 5,
                        },
                    ),
                };
                assert_eq!(store.append("s", request).await.unwrap_err(), expected);
            }
            accepted
        });
    }
    let mut accepted = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        accepted.extend(joined.expect("an append task panicked"));
    }
    accepted.sort_by_key(|(_, next)| *next);
    let data = read_bytes(&*store, "s").await;
    let mut pos = 0;
    for (body, next) in &accepted {
        let end = pos + body.len();
        assert_eq!(*next, end as u64, "accepted appends tile the stream");
        assert_eq!(&data[pos..end], body.as_bytes());
        pos = end;
    }
    assert_eq!(pos, data.len(), "rejected appends left nothing behind");
    assert_eq!(accepted.len(), TASKS / 2 * APPENDS);
}

pub(crate) async fn concurrent_identical_creates_make_one_stream(h: &impl Harness) {
    let store = h.open().await;
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.spawn(async move { store.create("s", json_stream()).await });
    }
    let mut created = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        created.push(joined.unwrap().expect("identical creates all succeed"));
    }
    assert_eq!(
        created.iter().filter(|c| c.created).count(),
        1,
        "exactly one request created the stream"
    );
    let id = store.head("s").await.unwrap().id;
    assert!(
        created.iter().all(|c| c.info.id == id),
        "all name the same stream"
    );
}
