//! What the conformance suite needs around a store: a harness per backend, request builders,
//! and readers that follow `next` the way a protocol client does.
//!
//! A backend joins the suite by implementing [`Harness`] and instantiating
//! `conformance_suite!` with it in `conformance.rs`.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use tempfile::TempDir;
use tether_store::pg::scratch::ScratchDatabase;
use tether_store::tail::Wake;
use tether_store::{
    Append, CreateStream, ForkFrom, LookupError, PgOptions, PgStore, ProducerStamp, ReadChunk,
    SqliteStore, StreamStore, Tail,
};
use tether_types::{Offset, ReadFrom};

pub const BYTES: &str = "application/octet-stream";
pub const JSON: &str = "application/json";

/// Read budget for reads that want everything at once.
pub const ALL: usize = 64 << 20;

/// How long a wait that should succeed may take before the test fails. Generous: a loaded
/// CI machine must not turn a correct store into a red test.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How long to wait for something that must *not* happen. A correct store passes however
/// short this is; it only has to be long enough for a broken store to show itself.
pub const QUIET: Duration = Duration::from_millis(200);

/// One backend under test: a place where stores keep their data.
///
/// Every harness starts empty. A store opened after the previous one was shut down and dropped
/// must see everything the previous one acknowledged: that is how the suite checks durability.
pub trait Harness {
    /// Opens a store over this harness's storage.
    async fn open(&self) -> Arc<dyn StreamStore>;

    /// Shuts down every store this harness opened that is still alive.
    async fn finish(&self);
}

/// Shuts `store` down, drops it, and opens the same storage again.
pub async fn reopen(harness: &impl Harness, store: Arc<dyn StreamStore>) -> Arc<dyn StreamStore> {
    store.shutdown().await;
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "the test still holds another handle to the store it wants to reopen"
    );
    drop(store);
    harness.open().await
}

/// The embedded SQLite store over a temporary data dir.
pub struct SqliteHarness {
    dir: TempDir,
    opened: Mutex<Vec<Weak<dyn StreamStore>>>,
}

impl SqliteHarness {
    pub fn new() -> Self {
        SqliteHarness {
            dir: tempfile::tempdir().expect("create a temporary data dir"),
            opened: Mutex::new(Vec::new()),
        }
    }

    /// The harness for a suite case: always available.
    pub async fn create(_case: &str) -> Option<Self> {
        Some(Self::new())
    }
}

impl Harness for SqliteHarness {
    async fn open(&self) -> Arc<dyn StreamStore> {
        let store: Arc<dyn StreamStore> =
            Arc::new(SqliteStore::open(self.dir.path()).expect("open the SQLite store"));
        self.opened.lock().unwrap().push(Arc::downgrade(&store));
        store
    }

    async fn finish(&self) {
        finish_all(&self.opened).await;
    }
}

/// The PostgreSQL store over a scratch database of its own. Every `open` is a new node (a new
/// connection pool and listener) on the same database, so reopening checks what the database
/// holds, not what a node remembers.
pub struct PgHarness {
    db: ScratchDatabase,
    opened: Mutex<Vec<Weak<dyn StreamStore>>>,
}

impl PgHarness {
    /// `None` (after saying so) when `TETHER_TEST_DATABASE_URL` is not set.
    pub async fn create(case: &str) -> Option<Self> {
        let db = ScratchDatabase::create(case).await?;
        Some(PgHarness {
            db,
            opened: Mutex::new(Vec::new()),
        })
    }
}

impl Harness for PgHarness {
    async fn open(&self) -> Arc<dyn StreamStore> {
        let store: Arc<dyn StreamStore> = Arc::new(
            PgStore::connect(self.db.url(), PgOptions::default())
                .await
                .expect("open the PostgreSQL store"),
        );
        self.opened.lock().unwrap().push(Arc::downgrade(&store));
        store
    }

    async fn finish(&self) {
        finish_all(&self.opened).await;
    }
}

async fn finish_all(opened: &Mutex<Vec<Weak<dyn StreamStore>>>) {
    let alive: Vec<_> = opened
        .lock()
        .unwrap()
        .drain(..)
        .filter_map(|w| w.upgrade())
        .collect();
    for store in alive {
        store.shutdown().await;
    }
}

// ---- requests ------------------------------------------------------------------------------

pub fn stream(content_type: &str) -> CreateStream {
    CreateStream {
        content_type: Some(content_type.to_string()),
        ttl_secs: None,
        expires_at: None,
        closed: false,
        fork: None,
        body: Bytes::new(),
        ..CreateStream::default()
    }
}

pub fn bytes_stream() -> CreateStream {
    stream(BYTES)
}

pub fn json_stream() -> CreateStream {
    stream(JSON)
}

/// A fork of `source` at `offset` (its tail when `None`) plus `sub_offset` units.
pub fn fork_of(source: &str, offset: Option<u64>, sub_offset: u64) -> CreateStream {
    CreateStream {
        content_type: None,
        ttl_secs: None,
        expires_at: None,
        closed: false,
        fork: Some(ForkFrom {
            source: source.to_string(),
            offset: offset.map(Offset),
            sub_offset,
        }),
        body: Bytes::new(),
        ..CreateStream::default()
    }
}

pub fn append(content_type: &str, body: impl Into<Bytes>) -> Append {
    Append {
        content_type: Some(content_type.to_string()),
        body: body.into(),
        ..Append::default()
    }
}

pub fn bytes(body: impl Into<Bytes>) -> Append {
    append(BYTES, body)
}

pub fn json(body: &str) -> Append {
    append(JSON, Bytes::copy_from_slice(body.as_bytes()))
}

/// `Stream-Closed: true` with an empty body.
pub fn close_only() -> Append {
    Append {
        close: true,
        ..Append::default()
    }
}

pub fn with_ttl(secs: u64, request: CreateStream) -> CreateStream {
    CreateStream {
        ttl_secs: Some(secs),
        ..request
    }
}

pub fn expiring_at(at: DateTime<Utc>, request: CreateStream) -> CreateStream {
    CreateStream {
        expires_at: Some(at),
        ..request
    }
}

pub fn closed(request: CreateStream) -> CreateStream {
    CreateStream {
        closed: true,
        ..request
    }
}

pub fn with_body(body: &str, request: CreateStream) -> CreateStream {
    CreateStream {
        body: Bytes::copy_from_slice(body.as_bytes()),
        ..request
    }
}

/// A whole second an hour from now: survives any backend's timestamp precision.
pub fn in_an_hour() -> DateTime<Utc> {
    Utc.timestamp_opt(Utc::now().timestamp() + 3600, 0)
        .single()
        .expect("valid timestamp")
}

pub trait AppendExt {
    fn closing(self) -> Self;
    fn by_producer(self, id: &str, epoch: u64, seq: u64) -> Self;
    fn with_stream_seq(self, seq: &str) -> Self;
}

impl AppendExt for Append {
    fn closing(self) -> Self {
        Append {
            close: true,
            ..self
        }
    }

    fn by_producer(self, id: &str, epoch: u64, seq: u64) -> Self {
        Append {
            producer: Some(ProducerStamp {
                id: id.to_string(),
                epoch,
                seq,
            }),
            ..self
        }
    }

    fn with_stream_seq(self, seq: &str) -> Self {
        Append {
            stream_seq: Some(seq.to_string()),
            ..self
        }
    }
}

// ---- reading -------------------------------------------------------------------------------

/// Every record from `from` to the tail, read the way a client does: chunk by chunk of at
/// most about `max_bytes`, each read starting at the previous chunk's `next`. Checks on the
/// way that the chunks are contiguous and that `up_to_date` is set exactly on the last one.
pub async fn follow(
    store: &dyn StreamStore,
    path: &str,
    from: ReadFrom,
    max_bytes: usize,
) -> (Vec<Bytes>, Offset) {
    let tail = store.head(path).await.expect("head before reading").next;
    let mut records = Vec::new();
    let mut at = from;
    let mut expected_from = None;
    loop {
        let chunk = store.read(path, at, max_bytes).await.expect("read a chunk");
        if let Some(expected) = expected_from {
            assert_eq!(
                chunk.from, expected,
                "a chunk starts where the last one ended"
            );
        }
        assert!(chunk.next >= chunk.from, "next never goes backwards");
        assert_eq!(
            units(&chunk),
            chunk.next.0 - chunk.from.0,
            "a chunk holds exactly the positions from `from` to `next`: {chunk:?}"
        );
        assert_eq!(
            chunk.up_to_date,
            chunk.next == tail,
            "up_to_date exactly when the chunk reaches the tail ({tail:?}): {chunk:?}"
        );
        records.extend(chunk.records.iter().cloned());
        if chunk.up_to_date {
            return (records, chunk.next);
        }
        assert!(
            !chunk.records.is_empty() && chunk.next > chunk.from,
            "a chunk short of the tail makes progress: {chunk:?}"
        );
        expected_from = Some(chunk.next);
        at = ReadFrom::At(chunk.next);
    }
}

/// The whole content of a byte stream.
pub async fn read_bytes(store: &dyn StreamStore, path: &str) -> Vec<u8> {
    let (records, _) = follow(store, path, ReadFrom::Start, ALL).await;
    records.concat()
}

/// The whole content of a JSON stream, one parsed value per message.
pub async fn read_messages(store: &dyn StreamStore, path: &str) -> Vec<serde_json::Value> {
    let (records, _) = follow(store, path, ReadFrom::Start, ALL).await;
    messages(&records)
}

/// The messages in a JSON stream's records. A record holds one message, or several joined by
/// commas (the framing of a JSON read body without its brackets); either way the messages come
/// out one by one, so the suite checks message content and positions, not how a backend
/// groups them.
pub fn messages(records: &[Bytes]) -> Vec<serde_json::Value> {
    records
        .iter()
        .flat_map(|record| {
            let mut framed = Vec::with_capacity(record.len() + 2);
            framed.push(b'[');
            framed.extend_from_slice(record);
            framed.push(b']');
            serde_json::from_slice::<Vec<serde_json::Value>>(&framed).unwrap_or_else(|e| {
                panic!(
                    "a stored record is not a run of JSON messages ({e}): {:?}",
                    String::from_utf8_lossy(record)
                )
            })
        })
        .collect()
}

/// How many positions a chunk's records cover: messages for JSON streams, bytes otherwise.
pub fn units(chunk: &ReadChunk) -> u64 {
    if chunk.info.is_json() {
        messages(&chunk.records).len() as u64
    } else {
        chunk.records.iter().map(|r| r.len() as u64).sum()
    }
}

/// Parses a JSON literal written in a test.
pub fn value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("test literal is JSON")
}

pub fn values(texts: &[&str]) -> Vec<serde_json::Value> {
    texts.iter().map(|t| value(t)).collect()
}

/// One read of everything from `from`.
pub async fn read_at(store: &dyn StreamStore, path: &str, from: u64) -> ReadChunk {
    let chunk = store
        .read(path, ReadFrom::At(Offset(from)), ALL)
        .await
        .expect("read");
    assert_eq!(chunk.from, Offset(from));
    assert_eq!(
        units(&chunk),
        chunk.next.0 - from,
        "a chunk holds exactly the positions from `from` to `next`: {chunk:?}"
    );
    chunk
}

/// Waits (bounded) until `path` reports `NotFound`: stores may clean up asynchronously.
pub async fn eventually_not_found(store: &dyn StreamStore, path: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match store.head(path).await {
            Err(LookupError::NotFound) => return,
            other if Instant::now() >= deadline => {
                panic!("{path} should be gone (NotFound) by now, but head says {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

// ---- live tail -------------------------------------------------------------------------------

/// The tail a wake reports; fails the test if the wait timed out.
pub fn tail_of(wake: Wake) -> Tail {
    match wake {
        Wake::Changed(tail) => tail,
        Wake::TimedOut(tail) => {
            panic!("expected a wake within {PATIENCE:?}, timed out at {tail:?}")
        }
    }
}
