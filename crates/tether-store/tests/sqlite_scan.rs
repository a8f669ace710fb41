//! Cold reads from the log give back exactly what was appended, from any offset and in
//! windows of any size, however the streams' small appends interleaved in the log: runs of
//! one stream's chunks, others' chunks between them near and far, large chunks among small
//! ones, JSON and text, and a fork whose point falls inside an append.

use bytes::Bytes;
use tether_store::{Append, CreateStream, ForkFrom, ReadFrom, SqliteStore, StreamStore};
use tether_types::Offset;

/// What a stream should hold: bytes, or JSON messages; positions index into either.
#[derive(Clone, Default)]
struct Expected {
    json: bool,
    bytes: Vec<u8>,
    messages: Vec<String>,
}

impl Expected {
    fn len(&self) -> u64 {
        if self.json {
            self.messages.len() as u64
        } else {
            self.bytes.len() as u64
        }
    }

    /// The read body of everything from `from`, as a client would see it.
    fn from(&self, from: u64) -> Vec<u8> {
        if self.json {
            format!("[{}]", self.messages[from as usize..].join(",")).into_bytes()
        } else {
            self.bytes[from as usize..].to_vec()
        }
    }
}

fn create(content_type: &str) -> CreateStream {
    CreateStream {
        content_type: Some(content_type.into()),
        ttl_secs: None,
        expires_at: None,
        closed: false,
        fork: None,
        body: Bytes::new(),
        ..CreateStream::default()
    }
}

/// A small xorshift, so the interleaving is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Reads all of `path` from `from` in windows of `max_bytes`, as a catching-up client does.
async fn read_all(
    store: &SqliteStore,
    path: &str,
    json: bool,
    from: u64,
    max_bytes: usize,
) -> Vec<u8> {
    let mut pos = from;
    let mut records: Vec<Bytes> = Vec::new();
    for _ in 0..100_000 {
        let chunk = store
            .read(path, ReadFrom::At(Offset(pos)), max_bytes)
            .await
            .unwrap();
        assert!(
            chunk.next.0 > pos || chunk.up_to_date,
            "{path}: a read from {pos} made no progress"
        );
        records.extend(chunk.records.iter().cloned());
        pos = chunk.next.0;
        if chunk.up_to_date {
            break;
        }
    }
    if json {
        let joined: Vec<&[u8]> = records.iter().map(|r| &r[..]).collect();
        [b"[".as_slice(), &joined.join(&b","[..]), b"]"].concat()
    } else {
        records.concat()
    }
}

#[tokio::test]
async fn cold_reads_of_interleaved_small_appends_give_back_every_byte_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let paths = ["t0", "t1", "t2", "j0", "j1"];
    let mut expected: Vec<Expected> = Vec::new();
    for path in paths {
        let json = path.starts_with('j');
        let content_type = if json {
            "application/json"
        } else {
            "text/plain"
        };
        store.create(path, create(content_type)).await.unwrap();
        expected.push(Expected {
            json,
            ..Expected::default()
        });
    }

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut n = 0u64;
    while n < 3000 {
        // A run of appends to one stream: consecutive rows in the log, or, for the first
        // stream, spread among the others' rows.
        let which = rng.next(paths.len() as u64) as usize;
        for _ in 0..=rng.next(40) {
            n += 1;
            let e = &mut expected[which];
            let body = if e.json {
                let messages: Vec<String> = (0..=rng.next(3))
                    .map(|k| format!("{{\"n\":{n},\"k\":{k}}}"))
                    .collect();
                e.messages.extend(messages.iter().cloned());
                format!("[{}]", messages.join(","))
            } else if rng.next(50) == 0 {
                // Now and then one large enough for the blob path.
                let big = vec![b'a' + (n % 26) as u8; 70_000 + rng.next(1000) as usize];
                e.bytes.extend_from_slice(&big);
                String::from_utf8(big).unwrap()
            } else {
                let small = format!("<{n}:{}>", "x".repeat(rng.next(30) as usize));
                e.bytes.extend_from_slice(small.as_bytes());
                small
            };
            let append = Append {
                content_type: Some(
                    if e.json {
                        "application/json"
                    } else {
                        "text/plain"
                    }
                    .into(),
                ),
                body: Bytes::from(body),
                ..Append::default()
            };
            store.append(paths[which], append).await.unwrap();
            if which == 0 && rng.next(2) == 0 {
                // Another stream's append right after, so t0's rows have neighbours.
                let append = Append {
                    content_type: Some("text/plain".into()),
                    body: Bytes::from(format!("({n})")),
                    ..Append::default()
                };
                store.append("t1", append).await.unwrap();
                expected[1]
                    .bytes
                    .extend_from_slice(format!("({n})").as_bytes());
            }
        }
    }

    // A fork of t0 from inside one of its appends (the 5th byte of the append at the
    // middle of the stream is as good as any).
    let point = expected[0].len() / 2 + 5;
    let fork = CreateStream {
        content_type: None,
        fork: Some(ForkFrom {
            source: "t0".into(),
            offset: Some(Offset(point)),
            sub_offset: 0,
        }),
        ..create("text/plain")
    };
    store.create("t0-fork", fork).await.unwrap();
    let fork_tail = b"<after the fork>";
    store
        .append(
            "t0-fork",
            Append {
                content_type: Some("text/plain".into()),
                body: Bytes::from_static(fork_tail),
                ..Append::default()
            },
        )
        .await
        .unwrap();
    let mut forked = Expected {
        bytes: expected[0].bytes[..point as usize].to_vec(),
        ..Expected::default()
    };
    forked.bytes.extend_from_slice(fork_tail);

    // A restart empties the recent-chunks cache: every read below goes to the log.
    store.shutdown().await;
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    let before = store.log_reads();

    let mut all: Vec<(&str, &Expected)> = paths.iter().copied().zip(&expected).collect();
    all.push(("t0-fork", &forked));
    for (path, e) in all {
        let len = e.len();
        let mut offsets = vec![0, 1, len / 3, len / 2 + 1, len.saturating_sub(2), len];
        offsets.retain(|&o| o <= len);
        for from in offsets {
            for max_bytes in [1, 700, 100_000, 4 << 20] {
                let got = read_all(&store, path, e.json, from, max_bytes).await;
                assert!(
                    got == e.from(from),
                    "{path} from {from} in windows of {max_bytes}: got {} bytes, expected {}",
                    got.len(),
                    e.from(from).len()
                );
            }
        }
    }
    assert!(store.log_reads() > before, "the reads went to the log");
}
