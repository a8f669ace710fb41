//! The single writer: group commit and every rule that must be checked where the data is
//! written.
//!
//! One OS thread owns the only read-write connection. It takes the first waiting command,
//! drains whatever else is queued behind it, applies them all in one transaction, commits
//! (one fsync for the whole batch, G1), and only then publishes the new tails and answers the
//! callers. A batch that fails to commit is rolled back whole and every caller in it gets the
//! error: nothing is acknowledged that is not on disk.
//!
//! Protocol state that appends are checked against (closed flag, producer epochs and
//! sequences, `Stream-Seq`) lives here, in [`StreamState`], loaded from the database the
//! first time a stream is touched and changed in step with the transaction.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::entry::{Chunk, Entry, ForkLink};
use crate::model::*;
use crate::tail::Tail;
use tether_types::headers::media_type;
use tether_types::Offset;

/// Upper bound on commands per transaction; keeps one commit's latency bounded.
const MAX_BATCH: usize = 4096;
const MAX_BATCH_BYTES: usize = 32 << 20;

pub(crate) type Catalog = Arc<parking_lot::Mutex<HashMap<String, Arc<Entry>>>>;

/// The chunk index is flushed when this many chunks wait for it...
const INDEX_FLUSH_CHUNKS: usize = 16_384;
/// ...or this many bytes of them are pinned in memory...
const INDEX_FLUSH_BYTES: usize = 32 << 20;
/// ...or the oldest has waited this long, or the writer has been idle this long.
const INDEX_FLUSH_AGE: Duration = Duration::from_secs(1);
const IDLE_FLUSH: Duration = Duration::from_millis(200);

/// An append body in its stored form: the bytes, or JSON messages joined by commas.
pub(crate) struct StoredBody {
    pub data: Bytes,
    /// Positions it covers: bytes, or messages.
    pub units: u64,
}

/// An append after the parsing that can happen outside the writer.
pub(crate) struct PreparedAppend {
    pub request: Append,
    /// The stored form of a non-empty body, or why the body is invalid.
    pub body: Result<Option<StoredBody>, AppendError>,
}

/// Turns a request body into its stored form. JSON bodies are validated and flattened one
/// level; `[]` is an error on append and no content on create. `None` for no content.
pub(crate) fn stored_body(
    json: bool,
    body: &Bytes,
    allow_empty_array: bool,
) -> Result<Option<StoredBody>, tether_types::json::JsonBodyError> {
    if body.is_empty() {
        return Ok(None);
    }
    if !json {
        // A copy, not a slice: request bodies are often views into a connection's much
        // larger read buffer, which the recent-chunks cache would otherwise keep alive.
        return Ok(Some(StoredBody {
            data: Bytes::copy_from_slice(body),
            units: body.len() as u64,
        }));
    }
    let messages = tether_types::json::split_messages(body, allow_empty_array)?;
    if messages.is_empty() {
        return Ok(None);
    }
    Ok(Some(StoredBody {
        units: messages.len() as u64,
        data: Bytes::from(tether_types::json::join_messages(&messages)),
    }))
}

/// A committed chunk that the on-disk index does not list yet.
struct Unindexed {
    stream: StreamId,
    pos: u64,
    end: u64,
    seq: i64,
    bytes: usize,
}

pub(crate) enum Command {
    Load {
        path: String,
        reply: oneshot::Sender<Result<Option<Arc<Entry>>, String>>,
    },
    Create {
        path: String,
        request: CreateStream,
        reply: oneshot::Sender<Result<Created, CreateError>>,
    },
    Append {
        entry: Arc<Entry>,
        append: PreparedAppend,
        reply: oneshot::Sender<Result<Appended, AppendError>>,
    },
    Delete {
        path: String,
        reply: oneshot::Sender<Result<(), DeleteError>>,
    },
    /// Remove a stream whose TTL or expiry time has passed.
    Expire { entry: Arc<Entry> },
    /// Commit what came before, then stop.
    Shutdown,
}

impl Command {
    fn weight(&self) -> usize {
        match self {
            Command::Append { append, .. } => append.request.body.len(),
            Command::Create { request, .. } => request.body.len(),
            _ => 64,
        }
    }
}

/// Writer-side protocol state of one stream.
#[derive(Clone, Debug)]
struct StreamState {
    tail: u64,
    closed: bool,
    closed_by: Option<ProducerStamp>,
    last_stream_seq: Option<String>,
    producers: HashMap<String, (u64, u64)>,
    refcount: i64,
    soft_deleted: bool,
    dirty: bool,
}

/// What to do once the batch has committed.
enum Effect {
    Publish(Arc<Entry>),
    Recent(Arc<Entry>, Chunk),
    /// The on-disk index now lists the stream's chunks before this position.
    Unpin(Arc<Entry>, u64),
    Insert(Arc<Entry>),
    Remove(Arc<Entry>),
    SoftDelete(Arc<Entry>),
}

/// A caller's answer, held until the batch's fate is known.
enum Reply {
    Load(
        oneshot::Sender<Result<Option<Arc<Entry>>, String>>,
        Result<Option<Arc<Entry>>, String>,
    ),
    Create(
        oneshot::Sender<Result<Created, CreateError>>,
        Result<Created, CreateError>,
    ),
    Append(
        oneshot::Sender<Result<Appended, AppendError>>,
        Result<Appended, AppendError>,
    ),
    Delete(
        oneshot::Sender<Result<(), DeleteError>>,
        Result<(), DeleteError>,
    ),
    Nothing,
}

impl Reply {
    fn send(self) {
        // A caller that went away no longer needs its answer.
        match self {
            Reply::Load(tx, r) => drop(tx.send(r)),
            Reply::Create(tx, r) => drop(tx.send(r)),
            Reply::Append(tx, r) => drop(tx.send(r)),
            Reply::Delete(tx, r) => drop(tx.send(r)),
            Reply::Nothing => {}
        }
    }

    /// Replaces the answer with a storage failure: the batch did not commit.
    fn fail(self, msg: &str) {
        match self {
            Reply::Load(tx, _) => drop(tx.send(Err(msg.to_string()))),
            Reply::Create(tx, _) => drop(tx.send(Err(CreateError::Storage(msg.to_string())))),
            Reply::Append(tx, _) => drop(tx.send(Err(AppendError::Storage(msg.to_string())))),
            Reply::Delete(tx, _) => drop(tx.send(Err(DeleteError::Storage(msg.to_string())))),
            Reply::Nothing => {}
        }
    }

    /// Whether the command hit a storage error, which dooms the whole batch: its partial
    /// writes are inside the same transaction.
    fn storage_failed(&self) -> bool {
        match self {
            Reply::Load(_, r) => r.is_err(),
            Reply::Create(_, r) => matches!(r, Err(CreateError::Storage(_))),
            Reply::Append(_, r) => matches!(r, Err(AppendError::Storage(_))),
            Reply::Delete(_, r) => matches!(r, Err(DeleteError::Storage(_))),
            Reply::Nothing => false,
        }
    }
}

pub(crate) struct Writer {
    conn: Connection,
    catalog: Catalog,
    states: HashMap<StreamId, StreamState>,
    // Per-batch bookkeeping, reset at every batch.
    undo: HashMap<StreamId, Option<StreamState>>,
    paths: HashMap<String, Option<Arc<Entry>>>,
    effects: Vec<Effect>,
    expire_failed: bool,
    deleted_in_batch: Vec<StreamId>,
    /// How many of `unindexed` this batch's index flush covers.
    flushing: usize,
    unindexed_at_start: usize,
    // The chunk index, maintained in bulk.
    next_seq: i64,
    unindexed: Vec<Unindexed>,
    unindexed_bytes: usize,
    unindexed_since: Option<Instant>,
    /// Entries with unindexed chunks, to unpin after a flush.
    unindexed_entries: HashMap<StreamId, Arc<Entry>>,
    /// Streams deleted while they had unindexed chunks; their chunks are skipped at flush.
    deleted: HashSet<StreamId>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn storage<E: From<String>>(e: rusqlite::Error) -> E {
    E::from(e.to_string())
}

impl From<String> for AppendError {
    fn from(s: String) -> Self {
        AppendError::Storage(s)
    }
}
impl From<String> for CreateError {
    fn from(s: String) -> Self {
        CreateError::Storage(s)
    }
}
impl From<String> for DeleteError {
    fn from(s: String) -> Self {
        DeleteError::Storage(s)
    }
}

impl Writer {
    /// Takes over the read-write connection, first indexing any chunks a crash left
    /// unindexed.
    pub fn new(conn: Connection, catalog: Catalog) -> rusqlite::Result<Self> {
        let indexed: i64 = conn.query_row(
            "SELECT value FROM store_meta WHERE key = 'indexed_seq'",
            [],
            |r| r.get(0),
        )?;
        let last: i64 =
            conn.query_row("SELECT coalesce(max(seq), 0) FROM chunks", [], |r| r.get(0))?;
        if last > indexed {
            let tx = conn.unchecked_transaction()?;
            let n = tx.execute(
                "INSERT OR IGNORE INTO chunk_index (stream_id, pos, seq)
                 SELECT stream_id, pos, seq FROM chunks WHERE seq > ?1 ORDER BY stream_id, pos",
                [indexed],
            )?;
            tx.execute(
                "UPDATE store_meta SET value = ?1 WHERE key = 'indexed_seq'",
                [last],
            )?;
            tx.commit()?;
            tracing::info!(chunks = n, "indexed chunks left from the last run");
        }
        Ok(Writer {
            conn,
            catalog,
            states: HashMap::new(),
            undo: HashMap::new(),
            paths: HashMap::new(),
            effects: Vec::new(),
            expire_failed: false,
            deleted_in_batch: Vec::new(),
            flushing: 0,
            unindexed_at_start: 0,
            next_seq: last.max(indexed) + 1,
            unindexed: Vec::new(),
            unindexed_bytes: 0,
            unindexed_since: None,
            unindexed_entries: HashMap::new(),
            deleted: HashSet::new(),
        })
    }

    /// Runs until `Shutdown` or every sender is dropped, then returns after the last batch
    /// committed and the index is flushed.
    pub fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::new();
        let mut stop = false;
        loop {
            let first = if self.unindexed.is_empty() {
                rx.recv().ok()
            } else {
                match rx.recv_timeout(IDLE_FLUSH) {
                    Ok(cmd) => Some(cmd),
                    Err(RecvTimeoutError::Timeout) => {
                        // Idle: a good moment to index what is waiting.
                        self.run_batch(&mut batch, true);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            };
            let Some(first) = first else {
                break;
            };
            let mut weight = 0;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                if matches!(cmd, Command::Shutdown) {
                    stop = true;
                    break;
                }
                weight += cmd.weight();
                batch.push(cmd);
                if batch.len() < MAX_BATCH && weight < MAX_BATCH_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.run_batch(&mut batch, false);
            }
            if stop {
                break;
            }
        }
        if !self.unindexed.is_empty() {
            self.run_batch(&mut batch, true);
        }
        tracing::debug!("stream store writer stopped");
    }

    fn index_flush_due(&self) -> bool {
        self.unindexed.len() >= INDEX_FLUSH_CHUNKS
            || self.unindexed_bytes >= INDEX_FLUSH_BYTES
            || self
                .unindexed_since
                .is_some_and(|t| t.elapsed() >= INDEX_FLUSH_AGE)
    }

    fn run_batch(&mut self, batch: &mut Vec<Command>, force_index: bool) {
        self.undo.clear();
        self.paths.clear();
        self.effects.clear();
        self.expire_failed = false;
        self.deleted_in_batch.clear();
        self.flushing = 0;
        self.unindexed_at_start = self.unindexed.len();
        let began = self.conn.execute_batch("BEGIN IMMEDIATE").and_then(|_| {
            if (force_index || self.index_flush_due()) && !self.unindexed.is_empty() {
                self.flush_index()
            } else {
                Ok(())
            }
        });
        let replies: Vec<Reply> = match began {
            Ok(()) => batch.drain(..).map(|cmd| self.apply(cmd)).collect(),
            Err(e) => {
                tracing::error!(error = %e, "stream store could not begin a transaction");
                let msg = e.to_string();
                for cmd in batch.drain(..) {
                    self.apply_nothing(cmd).fail(&msg);
                }
                return;
            }
        };
        let doomed = self.expire_failed || replies.iter().any(Reply::storage_failed);
        let committed = if doomed {
            Err("a write in the batch failed".to_string())
        } else {
            self.flush_dirty()
                .and_then(|_| self.conn.execute_batch("COMMIT"))
                .map_err(|e| e.to_string())
        };
        match committed {
            Ok(()) => {
                self.index_flushed();
                self.publish();
                replies.into_iter().for_each(Reply::send);
            }
            Err(msg) => {
                tracing::error!(error = %msg, "stream store batch rolled back");
                let _ = self.conn.execute_batch("ROLLBACK");
                self.rollback_states();
                self.effects.clear();
                for reply in replies {
                    reply.fail(&msg);
                }
            }
        }
    }

    /// A command turned into its reply channel without running it.
    fn apply_nothing(&mut self, cmd: Command) -> Reply {
        let msg = "not run".to_string();
        match cmd {
            Command::Load { reply, .. } => Reply::Load(reply, Err(msg)),
            Command::Create { reply, .. } => Reply::Create(reply, Err(CreateError::Storage(msg))),
            Command::Append { reply, .. } => Reply::Append(reply, Err(AppendError::Storage(msg))),
            Command::Delete { reply, .. } => Reply::Delete(reply, Err(DeleteError::Storage(msg))),
            Command::Expire { .. } | Command::Shutdown => Reply::Nothing,
        }
    }

    fn rollback_states(&mut self) {
        // Chunks of this batch were never committed; the flush did not happen.
        for chunk in self.unindexed.drain(self.unindexed_at_start..) {
            self.unindexed_bytes -= chunk.bytes;
        }
        for id in self.deleted_in_batch.drain(..) {
            self.deleted.remove(&id);
        }
        self.flushing = 0;
        for (id, before) in self.undo.drain() {
            match before {
                Some(state) => {
                    self.states.insert(id, state);
                }
                None => {
                    self.states.remove(&id);
                }
            }
        }
    }

    fn publish(&mut self) {
        let effects = std::mem::take(&mut self.effects);
        let mut catalog = self.catalog.lock();
        for effect in effects {
            match effect {
                Effect::Insert(entry) => {
                    catalog.insert(entry.path.clone(), entry);
                }
                Effect::Remove(entry) => {
                    if catalog
                        .get(&entry.path)
                        .is_some_and(|e| Arc::ptr_eq(e, &entry))
                    {
                        catalog.remove(&entry.path);
                    }
                    entry.tail.send_modify(|t| t.deleted = true);
                }
                Effect::SoftDelete(entry) => {
                    entry
                        .soft_deleted
                        .store(true, std::sync::atomic::Ordering::Release);
                    entry.tail.send_modify(|t| t.deleted = true);
                }
                Effect::Recent(entry, chunk) => entry.recent.lock().push(chunk, false),
                Effect::Unpin(entry, position) => entry.recent.lock().unpin_to(position),
                Effect::Publish(entry) => {
                    if let Some(state) = self.states.get(&entry.id) {
                        let tail = Tail {
                            next: state.tail,
                            closed: state.closed,
                            deleted: state.soft_deleted,
                        };
                        entry.tail.send_if_modified(|t| {
                            let changed = *t != tail;
                            *t = tail;
                            changed
                        });
                    }
                }
            }
        }
    }

    fn apply(&mut self, cmd: Command) -> Reply {
        match cmd {
            Command::Load { path, reply } => {
                let result = self.find(&path).map_err(|e| e.to_string());
                Reply::Load(reply, result)
            }
            Command::Create {
                path,
                request,
                reply,
            } => {
                let result = self.create(&path, request);
                Reply::Create(reply, result)
            }
            Command::Append {
                entry,
                append,
                reply,
            } => {
                let result = self.append(&entry, append);
                Reply::Append(reply, result)
            }
            Command::Delete { path, reply } => {
                let result = self.delete_path(&path);
                Reply::Delete(reply, result)
            }
            Command::Expire { entry } => {
                if let Err(e) = self.expire(&entry) {
                    tracing::warn!(path = %entry.path, error = %e, "could not expire stream");
                    self.expire_failed = true;
                }
                Reply::Nothing
            }
            Command::Shutdown => Reply::Nothing,
        }
    }

    // ---- lookups -------------------------------------------------------------------------

    /// The live entry at `path`, as of this point in the batch.
    fn find(&mut self, path: &str) -> rusqlite::Result<Option<Arc<Entry>>> {
        if let Some(known) = self.paths.get(path) {
            return Ok(known.clone());
        }
        if let Some(entry) = self.catalog.lock().get(path) {
            return Ok(Some(entry.clone()));
        }
        let entry = self.load(path)?;
        if let Some(e) = &entry {
            self.paths.insert(path.to_string(), Some(e.clone()));
            self.effects.push(Effect::Insert(e.clone()));
        }
        Ok(entry)
    }

    fn load(&mut self, path: &str) -> rusqlite::Result<Option<Arc<Entry>>> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, content_type, ttl_secs, expires_at_ms, last_access_ms, start_pos, tail,
                        closed, fork_source_id, fork_source_path, fork_anchor, fork_sub, soft_deleted
                 FROM streams WHERE path = ?1",
            )?
            .query_row([path], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, bool>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, Option<i64>>(10)?,
                    r.get::<_, Option<i64>>(11)?,
                    r.get::<_, bool>(12)?,
                ))
            })
            .optional()?;
        let Some((
            id,
            content_type,
            ttl,
            expires_ms,
            last_access,
            start,
            tail,
            closed,
            fork_id,
            fork_path,
            anchor,
            sub,
            soft_deleted,
        )) = row
        else {
            return Ok(None);
        };
        let fork = match fork_id {
            Some(source_id) => {
                let source_path: String = self
                    .conn
                    .prepare_cached("SELECT path FROM streams WHERE id = ?1")?
                    .query_row([source_id], |r| r.get(0))?;
                let Some(source) = self.find(&source_path)? else {
                    return Err(rusqlite::Error::QueryReturnedNoRows);
                };
                Some(ForkLink {
                    source,
                    point: start as u64,
                    spec: ForkFrom {
                        source: fork_path.unwrap_or(source_path),
                        offset: anchor.map(|a| Offset(a as u64)),
                        sub_offset: sub.unwrap_or(0) as u64,
                    },
                })
            }
            None => None,
        };
        let tail = self.records_end(id)?.unwrap_or(0).max(tail as u64);
        let config = StreamConfig {
            content_type,
            ttl_secs: ttl.map(|t| t as u64),
            expires_at: expires_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        };
        // A restart does not count against a sliding TTL: idleness is measured from the later
        // of the last persisted access and now.
        let last_access = last_access.max(now_ms());
        Ok(Some(Arc::new(Entry::new(
            id,
            path.to_string(),
            config,
            start as u64,
            fork,
            Tail {
                next: tail,
                closed,
                deleted: soft_deleted,
            },
            soft_deleted,
            last_access,
        ))))
    }

    /// Whether the stream is (soft-)deleted as of this point in the batch.
    fn is_deleted(&mut self, entry: &Arc<Entry>) -> rusqlite::Result<bool> {
        Ok(self.state(entry.id)?.is_none_or(|s| s.soft_deleted))
    }

    /// The writer-side state of a stream, loaded on first use; `None` if the row is gone.
    fn state(&mut self, id: StreamId) -> rusqlite::Result<Option<&mut StreamState>> {
        if !self.states.contains_key(&id) {
            let Some(state) = self.load_state(id)? else {
                return Ok(None);
            };
            self.states.insert(id, state);
        }
        if !self.undo.contains_key(&id) {
            let before = self.states.get(&id).cloned();
            self.undo.insert(id, before);
        }
        Ok(self.states.get_mut(&id))
    }

    fn load_state(&self, id: StreamId) -> rusqlite::Result<Option<StreamState>> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT tail, closed, closed_by_producer, closed_by_epoch, closed_by_seq,
                        last_stream_seq, refcount, soft_deleted
                 FROM streams WHERE id = ?1",
            )?
            .query_row([id], |r| {
                let closed_by = match r.get::<_, Option<String>>(2)? {
                    Some(pid) => Some(ProducerStamp {
                        id: pid,
                        epoch: r.get::<_, i64>(3)? as u64,
                        seq: r.get::<_, i64>(4)? as u64,
                    }),
                    None => None,
                };
                Ok(StreamState {
                    tail: r.get::<_, i64>(0)? as u64,
                    closed: r.get(1)?,
                    closed_by,
                    last_stream_seq: r.get(5)?,
                    producers: HashMap::new(),
                    refcount: r.get(6)?,
                    soft_deleted: r.get(7)?,
                    dirty: false,
                })
            })
            .optional()?;
        let Some(mut state) = row else {
            return Ok(None);
        };
        if let Some(end) = self.records_end(id)? {
            state.tail = state.tail.max(end);
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT producer_id, epoch, last_seq FROM producers WHERE stream_id = ?1",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (pid, epoch, seq) = row?;
            state.producers.insert(pid, (epoch as u64, seq as u64));
        }
        Ok(Some(state))
    }

    /// The end of a stream's last indexed chunk, if it has any. (A stream with unindexed
    /// chunks is always in memory, so this is only asked about streams without.)
    fn records_end(&self, id: StreamId) -> rusqlite::Result<Option<u64>> {
        self.conn
            .prepare_cached(
                "SELECT c.end_pos FROM chunk_index i JOIN chunks c ON c.seq = i.seq
                 WHERE i.stream_id = ?1 ORDER BY i.pos DESC LIMIT 1",
            )?
            .query_row([id], |r| r.get::<_, i64>(0))
            .optional()
            .map(|end| end.map(|e| e as u64))
    }

    /// Writes the stream rows whose metadata changed in this batch, once per stream.
    fn flush_dirty(&mut self) -> rusqlite::Result<()> {
        let now = now_ms();
        let ids: Vec<StreamId> = self.undo.keys().copied().collect();
        for id in ids {
            let Some(state) = self.states.get_mut(&id) else {
                continue;
            };
            if !state.dirty {
                continue;
            }
            state.dirty = false;
            let (cb_id, cb_epoch, cb_seq) = match &state.closed_by {
                Some(p) => (
                    Some(p.id.as_str()),
                    Some(p.epoch as i64),
                    Some(p.seq as i64),
                ),
                None => (None, None, None),
            };
            self.conn
                .prepare_cached(
                    "UPDATE streams SET tail = ?2, closed = ?3, closed_by_producer = ?4,
                        closed_by_epoch = ?5, closed_by_seq = ?6, last_stream_seq = ?7,
                        refcount = ?8, soft_deleted = ?9, last_access_ms = ?10
                     WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    state.tail as i64,
                    state.closed,
                    cb_id,
                    cb_epoch,
                    cb_seq,
                    state.last_stream_seq,
                    state.refcount,
                    state.soft_deleted,
                    now
                ])?;
        }
        Ok(())
    }

    /// Stores one append's chunk at `pos`; returns where it ends.
    fn insert_chunk(
        &mut self,
        entry: &Arc<Entry>,
        pos: u64,
        body: &StoredBody,
    ) -> rusqlite::Result<u64> {
        let end = pos + body.units;
        let seq = self.next_seq;
        self.conn
            .prepare_cached(
                "INSERT INTO chunks (seq, stream_id, pos, end_pos, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![seq, entry.id, pos as i64, end as i64, &body.data[..]])?;
        self.next_seq += 1;
        self.unindexed.push(Unindexed {
            stream: entry.id,
            pos,
            end,
            seq,
            bytes: body.data.len(),
        });
        self.unindexed_bytes += body.data.len();
        self.unindexed_since.get_or_insert_with(Instant::now);
        self.unindexed_entries
            .entry(entry.id)
            .or_insert_with(|| entry.clone());
        self.effects.push(Effect::Recent(
            entry.clone(),
            Chunk {
                pos,
                end,
                data: body.data.clone(),
            },
        ));
        Ok(end)
    }

    /// Writes index rows for every chunk committed so far but not yet indexed, sorted so that
    /// each stream's rows land together: one flush dirties about one index page per stream,
    /// instead of every append dirtying one.
    fn flush_index(&mut self) -> rusqlite::Result<()> {
        let mut rows: Vec<(StreamId, u64, i64)> = self
            .unindexed
            .iter()
            .filter(|c| !self.deleted.contains(&c.stream))
            .map(|c| (c.stream, c.pos, c.seq))
            .collect();
        rows.sort_unstable();
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO chunk_index (stream_id, pos, seq) VALUES (?1, ?2, ?3)")?;
        for (stream, pos, seq) in &rows {
            insert.execute(params![stream, *pos as i64, seq])?;
        }
        let last_seq = self.unindexed.last().map_or(0, |c| c.seq);
        self.conn
            .prepare_cached("UPDATE store_meta SET value = ?1 WHERE key = 'indexed_seq'")?
            .execute([last_seq])?;
        let mut ends: HashMap<StreamId, u64> = HashMap::new();
        for c in &self.unindexed {
            let e = ends.entry(c.stream).or_default();
            *e = (*e).max(c.end);
        }
        for (stream, end) in ends {
            if let Some(entry) = self.unindexed_entries.get(&stream) {
                self.effects.push(Effect::Unpin(entry.clone(), end));
            }
        }
        self.flushing = self.unindexed.len();
        tracing::debug!(chunks = rows.len(), "chunk index flushed");
        Ok(())
    }

    /// After commit: forget what the flush indexed.
    fn index_flushed(&mut self) {
        if self.flushing == 0 {
            return;
        }
        for chunk in self.unindexed.drain(..self.flushing) {
            self.unindexed_bytes -= chunk.bytes;
        }
        self.flushing = 0;
        self.deleted.clear();
        let still: HashSet<StreamId> = self.unindexed.iter().map(|c| c.stream).collect();
        self.unindexed_entries.retain(|id, _| still.contains(id));
        self.unindexed_since = if self.unindexed.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
    }

    // ---- append --------------------------------------------------------------------------

    fn append(
        &mut self,
        entry: &Arc<Entry>,
        prepared: PreparedAppend,
    ) -> Result<Appended, AppendError> {
        let PreparedAppend { request, body } = prepared;
        let Some(state) = self.state(entry.id).map_err(storage::<AppendError>)? else {
            return Err(AppendError::NotFound);
        };
        if state.soft_deleted {
            return Err(AppendError::Gone);
        }
        let body_empty = request.body.is_empty();

        if state.closed {
            let same_closer =
                matches!((&request.producer, &state.closed_by), (Some(p), Some(c)) if p == c);
            if same_closer || (body_empty && request.close && request.producer.is_none()) {
                let producer = request.producer.as_ref().map(|p| (p.epoch, p.seq));
                return Ok(Appended {
                    status: if same_closer {
                        AppendStatus::Duplicate
                    } else {
                        AppendStatus::AlreadyClosed
                    },
                    next: Offset(state.tail),
                    closed: true,
                    producer,
                });
            }
            return Err(AppendError::Closed {
                next: Offset(state.tail),
            });
        }
        if !body_empty {
            let matches = request
                .content_type
                .as_deref()
                .is_some_and(|ct| media_type(ct) == media_type(&entry.config.content_type));
            if !matches {
                return Err(AppendError::ContentTypeMismatch);
            }
        }
        if body_empty && !request.close {
            return Err(AppendError::EmptyBody);
        }
        let body = body?;

        // Idempotent producer: fencing, de-duplication, gap detection (protocol 5.2.1).
        if let Some(p) = &request.producer {
            match state.producers.get(&p.id).copied() {
                Some((epoch, _)) if p.epoch < epoch => {
                    return Err(AppendError::StaleEpoch { current: epoch });
                }
                Some((epoch, last)) if p.epoch == epoch => {
                    if p.seq <= last {
                        return Ok(Appended {
                            status: AppendStatus::Duplicate,
                            next: Offset(state.tail),
                            closed: state.closed,
                            producer: Some((epoch, last)),
                        });
                    }
                    if p.seq > last + 1 {
                        return Err(AppendError::SeqGap {
                            expected: last + 1,
                            received: p.seq,
                        });
                    }
                }
                // A new epoch, or a producer this stream has not seen: must start at 0.
                Some(_) if p.seq != 0 => return Err(AppendError::EpochNeedsSeqZero),
                None if p.seq != 0 => {
                    return Err(AppendError::SeqGap {
                        expected: 0,
                        received: p.seq,
                    })
                }
                _ => {}
            }
        }
        if let Some(seq) = &request.stream_seq {
            if state
                .last_stream_seq
                .as_ref()
                .is_some_and(|last| seq.as_bytes() <= last.as_bytes())
            {
                return Err(AppendError::SeqConflict);
            }
        }

        // Accepted: write.
        let first = state.tail;
        let new_tail = match &body {
            Some(body) => self
                .insert_chunk(entry, first, body)
                .map_err(storage::<AppendError>)?,
            None => first,
        };
        let state = self.states.get_mut(&entry.id).expect("state loaded above");
        // The tail itself is not written back: it is the end of the last record, recovered
        // from the records at load. Only rarer state changes rewrite the stream's row.
        state.tail = new_tail;
        if let Some(seq) = request.stream_seq {
            state.last_stream_seq = Some(seq);
            state.dirty = true;
        }
        let producer = request.producer.as_ref().map(|p| (p.epoch, p.seq));
        if let Some(p) = &request.producer {
            state.producers.insert(p.id.clone(), (p.epoch, p.seq));
            if request.close {
                state.closed_by = Some(p.clone());
            }
            self.conn
                .prepare_cached(
                    "INSERT INTO producers (stream_id, producer_id, epoch, last_seq) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (stream_id, producer_id) DO UPDATE SET epoch = ?3, last_seq = ?4",
                )
                .and_then(|mut s| s.execute(params![entry.id, p.id, p.epoch as i64, p.seq as i64]))
                .map_err(storage::<AppendError>)?;
        }
        let state = self.states.get_mut(&entry.id).expect("state loaded above");
        if request.close {
            state.closed = true;
            state.dirty = true;
        }
        let closed = state.closed;
        self.effects.push(Effect::Publish(entry.clone()));
        Ok(Appended {
            status: AppendStatus::Appended,
            next: Offset(new_tail),
            closed,
            producer,
        })
    }

    // ---- create --------------------------------------------------------------------------

    fn create(&mut self, path: &str, request: CreateStream) -> Result<Created, CreateError> {
        let mut existing = self.find(path).map_err(storage::<CreateError>)?;
        if let Some(e) = existing.clone() {
            if self.is_deleted(&e).map_err(storage::<CreateError>)? {
                return Err(CreateError::PathBlocked);
            }
            if e.expired(now_ms()) {
                self.remove(&e).map_err(storage::<CreateError>)?;
                if self.is_deleted(&e).map_err(storage::<CreateError>)?
                    && self.find(path).map_err(storage::<CreateError>)?.is_some()
                {
                    return Err(CreateError::PathBlocked);
                }
                existing = None;
            }
        }

        // Resolve the fork source first: its content type is the default for the fork.
        let source = match &request.fork {
            Some(fork) => {
                let Some(src) = self.find(&fork.source).map_err(storage::<CreateError>)? else {
                    return Err(CreateError::SourceNotFound);
                };
                if self.is_deleted(&src).map_err(storage::<CreateError>)? {
                    return Err(CreateError::SourceGone);
                }
                if src.expired(now_ms()) {
                    self.expire(&src).map_err(storage::<CreateError>)?;
                    return Err(CreateError::SourceNotFound);
                }
                Some(src)
            }
            None => None,
        };
        let content_type = match (&request.content_type, &source) {
            (Some(ct), Some(src)) => {
                if media_type(ct) != media_type(&src.config.content_type) {
                    return Err(CreateError::ForkContentTypeMismatch);
                }
                ct.clone()
            }
            (Some(ct), None) => ct.clone(),
            (None, Some(src)) => src.config.content_type.clone(),
            (None, None) => "application/octet-stream".to_string(),
        };
        // Forks inherit the source's expiry when they ask for none (protocol 4.2).
        let (ttl_secs, expires_at) = match (&source, request.ttl_secs, request.expires_at) {
            (Some(src), None, None) => (src.config.ttl_secs, src.config.expires_at),
            (_, ttl, at) => (ttl, at),
        };
        let config = StreamConfig {
            content_type,
            ttl_secs,
            expires_at,
        };

        let fork = match (&request.fork, source) {
            (Some(spec), Some(src)) => Some(self.resolve_fork(spec, src)?),
            _ => None,
        };

        if let Some(existing) = existing {
            let state = self
                .state(existing.id)
                .map_err(storage::<CreateError>)?
                .ok_or(CreateError::Storage("stream row vanished".into()))?;
            let same = media_type(&existing.config.content_type)
                == media_type(&config.content_type)
                && existing.config.ttl_secs == config.ttl_secs
                && existing.config.expires_at == config.expires_at
                && state.closed == request.closed
                && existing.fork.as_ref().map(|f| &f.spec) == fork.as_ref().map(|f| &f.spec);
            if !same {
                return Err(CreateError::ConfigMismatch);
            }
            return Ok(Created {
                created: false,
                info: StreamInfo {
                    closed: state.closed,
                    next: Offset(state.tail),
                    ..existing.info()
                },
            });
        }

        let json = tether_types::headers::is_json(&config.content_type);
        let body = stored_body(json, &request.body, true)
            .map_err(|e| CreateError::InvalidBody(e.to_string()))?;

        let start = fork.as_ref().map_or(0, |f| f.point);
        let now = now_ms();
        let (fork_id, fork_path, fork_anchor, fork_sub) = match &fork {
            Some(f) => (
                Some(f.source.id),
                Some(f.spec.source.clone()),
                f.spec.offset.map(|o| o.0 as i64),
                Some(f.spec.sub_offset as i64),
            ),
            None => (None, None, None, None),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO streams (path, content_type, ttl_secs, expires_at_ms, created_at_ms,
                    last_access_ms, start_pos, tail, closed, fork_source_id, fork_source_path,
                    fork_anchor, fork_sub)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    path,
                    config.content_type,
                    config.ttl_secs.map(|t| t as i64),
                    config.expires_at.map(|t| t.timestamp_millis()),
                    now,
                    start as i64,
                    request.closed,
                    fork_id,
                    fork_path,
                    fork_anchor,
                    fork_sub
                ])
            })
            .map_err(storage::<CreateError>)?;
        let id = self.conn.last_insert_rowid();
        if let Some(f) = &fork {
            let src_state = self
                .state(f.source.id)
                .map_err(storage::<CreateError>)?
                .ok_or(CreateError::SourceNotFound)?;
            src_state.refcount += 1;
            src_state.dirty = true;
        }
        let entry = Arc::new(Entry::new(
            id,
            path.to_string(),
            config,
            start,
            fork,
            Tail {
                next: start,
                closed: false,
                deleted: false,
            },
            false,
            now,
        ));
        let tail = match &body {
            Some(body) => self
                .insert_chunk(&entry, start, body)
                .map_err(storage::<CreateError>)?,
            None => start,
        };
        self.states.insert(
            id,
            StreamState {
                tail,
                closed: request.closed,
                closed_by: None,
                last_stream_seq: None,
                producers: HashMap::new(),
                refcount: 0,
                soft_deleted: false,
                dirty: true,
            },
        );
        self.undo.entry(id).or_insert(None);
        self.paths.insert(path.to_string(), Some(entry.clone()));
        self.effects.push(Effect::Insert(entry.clone()));
        self.effects.push(Effect::Publish(entry.clone()));
        Ok(Created {
            created: true,
            info: StreamInfo {
                next: Offset(tail),
                closed: request.closed,
                ..entry.info()
            },
        })
    }

    /// Checks a fork request against the source and finds the fork point.
    fn resolve_fork(
        &mut self,
        spec: &ForkFrom,
        source: Arc<Entry>,
    ) -> Result<ForkLink, CreateError> {
        let src_tail = self
            .state(source.id)
            .map_err(storage::<CreateError>)?
            .ok_or(CreateError::SourceNotFound)?
            .tail;
        let anchor = spec.offset.map_or(src_tail, |o| o.0);
        if anchor > src_tail {
            return Err(CreateError::ForkOffsetBeyondTail);
        }
        let point = if spec.sub_offset == 0 {
            anchor
        } else {
            let boundary = self
                .batch_end_at(&source, anchor, src_tail)
                .map_err(storage::<CreateError>)?
                .ok_or(CreateError::SubOffsetOutOfRange)?;
            let point = anchor.saturating_add(spec.sub_offset);
            if point > boundary {
                return Err(CreateError::SubOffsetOutOfRange);
            }
            point
        };
        Ok(ForkLink {
            source,
            point,
            spec: ForkFrom {
                source: spec.source.clone(),
                offset: Some(Offset(anchor)),
                sub_offset: spec.sub_offset,
            },
        })
    }

    /// The end of the append that starts at `pos` in `entry`'s view (its own chunks or
    /// those it inherits), clipped to where that view stops; `None` if no append starts there.
    fn batch_end_at(
        &self,
        entry: &Arc<Entry>,
        pos: u64,
        limit: u64,
    ) -> rusqlite::Result<Option<u64>> {
        let mut current = entry.clone();
        let mut limit = limit;
        loop {
            if pos >= current.start {
                let end = match self
                    .unindexed
                    .iter()
                    .rev()
                    .find(|c| c.stream == current.id && c.pos == pos)
                {
                    Some(c) => Some(c.end),
                    None => self
                        .conn
                        .prepare_cached(
                            "SELECT c.end_pos FROM chunk_index i JOIN chunks c ON c.seq = i.seq
                             WHERE i.stream_id = ?1 AND i.pos = ?2",
                        )?
                        .query_row(params![current.id, pos as i64], |r| r.get::<_, i64>(0))
                        .optional()?
                        .map(|e| e as u64),
                };
                return Ok(end.map(|e| e.min(limit)));
            }
            let Some(fork) = &current.fork else {
                return Ok(None);
            };
            limit = limit.min(fork.point);
            let next = fork.source.clone();
            current = next;
        }
    }

    // ---- delete --------------------------------------------------------------------------

    fn delete_path(&mut self, path: &str) -> Result<(), DeleteError> {
        let Some(entry) = self.find(path).map_err(storage::<DeleteError>)? else {
            return Err(DeleteError::NotFound);
        };
        if self.is_deleted(&entry).map_err(storage::<DeleteError>)? {
            return Err(DeleteError::Gone);
        }
        if entry.expired(now_ms()) {
            self.expire(&entry).map_err(storage::<DeleteError>)?;
            return Err(DeleteError::NotFound);
        }
        self.remove(&entry).map_err(storage::<DeleteError>)
    }

    fn expire(&mut self, entry: &Arc<Entry>) -> rusqlite::Result<()> {
        match self.state(entry.id)? {
            Some(state) if !state.soft_deleted => self.remove(entry),
            _ => Ok(()),
        }
    }

    /// Deletes a stream: softly while forks read from it, else for good, cascading to
    /// soft-deleted sources that no fork needs any more.
    fn remove(&mut self, entry: &Arc<Entry>) -> rusqlite::Result<()> {
        let Some(state) = self.state(entry.id)? else {
            return Ok(());
        };
        if state.refcount > 0 {
            state.soft_deleted = true;
            state.dirty = true;
            self.effects.push(Effect::SoftDelete(entry.clone()));
            return Ok(());
        }
        let mut current = Some(entry.clone());
        let mut seen = HashSet::new();
        while let Some(e) = current.take() {
            if !seen.insert(e.id) {
                break;
            }
            self.conn
                .prepare_cached(
                    "DELETE FROM chunks WHERE seq IN
                        (SELECT seq FROM chunk_index WHERE stream_id = ?1)",
                )?
                .execute([e.id])?;
            self.conn
                .prepare_cached("DELETE FROM chunk_index WHERE stream_id = ?1")?
                .execute([e.id])?;
            // Chunks not indexed yet: only ever the newest rows, so this scan is short.
            let oldest_unindexed = self.unindexed.first().map_or(self.next_seq, |c| c.seq);
            self.conn
                .prepare_cached("DELETE FROM chunks WHERE seq >= ?1 AND stream_id = ?2")?
                .execute(params![oldest_unindexed, e.id])?;
            if self.deleted.insert(e.id) {
                self.deleted_in_batch.push(e.id);
            }
            self.conn
                .prepare_cached("DELETE FROM producers WHERE stream_id = ?1")?
                .execute([e.id])?;
            self.conn
                .prepare_cached("DELETE FROM streams WHERE id = ?1")?
                .execute([e.id])?;
            if let Some(s) = self.state(e.id)? {
                s.dirty = false;
            }
            self.states.remove(&e.id);
            self.paths.insert(e.path.clone(), None);
            self.effects.push(Effect::Remove(e.clone()));
            if let Some(fork) = &e.fork {
                let src = fork.source.clone();
                if let Some(src_state) = self.state(src.id)? {
                    src_state.refcount -= 1;
                    src_state.dirty = true;
                    if src_state.refcount <= 0 && src_state.soft_deleted {
                        current = Some(src);
                    }
                }
            }
        }
        Ok(())
    }
}
