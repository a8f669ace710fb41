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
use std::sync::Arc;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::entry::{Entry, ForkLink};
use crate::model::*;
use crate::tail::Tail;
use tether_types::headers::media_type;
use tether_types::Offset;

/// Upper bound on commands per transaction; keeps one commit's latency bounded.
const MAX_BATCH: usize = 4096;
const MAX_BATCH_BYTES: usize = 32 << 20;

pub(crate) type Catalog = Arc<parking_lot::Mutex<HashMap<String, Arc<Entry>>>>;

/// An append after the parsing that can happen outside the writer.
pub(crate) struct PreparedAppend {
    pub request: Append,
    /// The body split into records (JSON messages or one byte run), or why it could not be.
    pub records: Result<Vec<Bytes>, AppendError>,
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
    Recent(Arc<Entry>, Vec<(u64, Bytes)>),
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
    pending: HashMap<String, Option<Arc<Entry>>>,
    effects: Vec<Effect>,
    expire_failed: bool,
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
    pub fn new(conn: Connection, catalog: Catalog) -> Self {
        Writer {
            conn,
            catalog,
            states: HashMap::new(),
            undo: HashMap::new(),
            pending: HashMap::new(),
            effects: Vec::new(),
            expire_failed: false,
        }
    }

    /// Runs until every sender is dropped, then returns (after the last batch committed).
    pub fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut batch = Vec::new();
        let mut stop = false;
        while let Some(first) = rx.blocking_recv() {
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
                self.run_batch(&mut batch);
            }
            if stop {
                break;
            }
        }
        tracing::debug!("stream store writer stopped");
    }

    fn run_batch(&mut self, batch: &mut Vec<Command>) {
        self.undo.clear();
        self.pending.clear();
        self.effects.clear();
        self.expire_failed = false;
        let replies: Vec<Reply> = match self.conn.execute_batch("BEGIN IMMEDIATE") {
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
                Effect::Recent(entry, records) => {
                    let mut recent = entry.recent.lock();
                    for (pos, data) in records {
                        let units = entry.units(&data);
                        recent.push(pos, data, units);
                    }
                }
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
        if let Some(pending) = self.pending.get(path) {
            return Ok(pending.clone());
        }
        if let Some(entry) = self.catalog.lock().get(path) {
            return Ok(Some(entry.clone()));
        }
        let entry = self.load(path)?;
        if let Some(e) = &entry {
            self.pending.insert(path.to_string(), Some(e.clone()));
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
                next: tail as u64,
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

    /// Writes the stream rows changed in this batch, once per stream.
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

    fn insert_records(
        &mut self,
        entry: &Arc<Entry>,
        first: u64,
        records: &[Bytes],
    ) -> rusqlite::Result<u64> {
        let units: u64 = records.iter().map(|r| entry.units(r)).sum();
        let batch_end = first + units;
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO records (stream_id, pos, bend, data) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut pos = first;
        let mut cached = Vec::with_capacity(records.len());
        for data in records {
            stmt.execute(params![entry.id, pos as i64, batch_end as i64, &data[..]])?;
            cached.push((pos, data.clone()));
            pos += entry.units(data);
        }
        self.effects.push(Effect::Recent(entry.clone(), cached));
        Ok(batch_end)
    }

    // ---- append --------------------------------------------------------------------------

    fn append(
        &mut self,
        entry: &Arc<Entry>,
        prepared: PreparedAppend,
    ) -> Result<Appended, AppendError> {
        let PreparedAppend { request, records } = prepared;
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
        let records = records?;

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
        let new_tail = if records.is_empty() {
            first
        } else {
            self.insert_records(entry, first, &records)
                .map_err(storage::<AppendError>)?
        };
        let state = self.states.get_mut(&entry.id).expect("state loaded above");
        state.tail = new_tail;
        state.dirty = true;
        if let Some(seq) = request.stream_seq {
            state.last_stream_seq = Some(seq);
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
        let records: Vec<Bytes> = if json {
            if request.body.is_empty() {
                Vec::new()
            } else {
                tether_types::json::split_messages(&request.body, true)
                    .map_err(|e| CreateError::InvalidBody(e.to_string()))?
                    .into_iter()
                    .map(Bytes::from)
                    .collect()
            }
        } else if request.body.is_empty() {
            Vec::new()
        } else {
            vec![request.body.clone()]
        };

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
        let tail = if records.is_empty() {
            start
        } else {
            self.insert_records(&entry, start, &records)
                .map_err(storage::<CreateError>)?
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
        self.pending.insert(path.to_string(), Some(entry.clone()));
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

    /// The end of the append batch that starts at `pos` in `entry`'s view (its own records or
    /// those it inherits), clipped to where that view stops; `None` if no batch starts there.
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
                let bend: Option<i64> = self
                    .conn
                    .prepare_cached("SELECT bend FROM records WHERE stream_id = ?1 AND pos = ?2")?
                    .query_row(params![current.id, pos as i64], |r| r.get(0))
                    .optional()?;
                return Ok(bend.map(|b| (b as u64).min(limit)));
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
                .prepare_cached("DELETE FROM records WHERE stream_id = ?1")?
                .execute([e.id])?;
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
            self.pending.insert(e.path.clone(), None);
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
