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

mod append;
mod create;
mod delete;
mod index;
mod job;
mod state;
mod sweep;

pub(crate) use job::{job, Job, JobError};
pub use sweep::SweepPolicy;

use crate::StoreError;
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::entry::{Chunk, Entry};
use crate::model::*;
use crate::tail::Tail;

pub(crate) use crate::body::{stored_body, PreparedAppend, StoredBody};
use index::{Unindexed, IDLE_FLUSH};
use state::StreamState;

/// Upper bound on commands per transaction; keeps one commit's latency bounded.
const MAX_BATCH: usize = 4096;
const MAX_BATCH_BYTES: usize = 32 << 20;
/// Batches slower than this are logged (at debug level) with where the time went.
const SLOW_BATCH: std::time::Duration = std::time::Duration::from_millis(4);
/// How often an idle writer wakes to run its jobs.
const IDLE_SWEEP: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) type Catalog = Arc<parking_lot::Mutex<HashMap<String, Arc<Entry>>>>;

/// Maps keyed by stream id, looked up several times per append on the writer thread. The ids
/// are the database's own row ids, not chosen by clients, so a fast hash with no defence
/// against chosen keys will do; paths keep the standard library's.
type IdMap<V> = HashMap<StreamId, V, foldhash::fast::RandomState>;
type IdSet = HashSet<StreamId, foldhash::fast::RandomState>;

pub(crate) enum Command {
    Load {
        path: String,
        reply: oneshot::Sender<Result<Option<Arc<Entry>>, StoreError>>,
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
        access: Access,
        reply: oneshot::Sender<Result<(), DeleteError>>,
    },
    /// Remove a stream whose TTL or expiry time has passed.
    Expire { entry: Arc<Entry> },
    /// Control-plane work that must commit with stream writes.
    Job(Job),
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
        oneshot::Sender<Result<Option<Arc<Entry>>, StoreError>>,
        Result<Option<Arc<Entry>>, StoreError>,
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
    Job(Box<dyn job::Answer>),
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
            Reply::Job(answer) => answer.send(),
            Reply::Nothing => {}
        }
    }

    /// Replaces the answer with a storage failure: the batch did not commit.
    fn fail(self, e: &StoreError) {
        match self {
            Reply::Load(tx, _) => drop(tx.send(Err(e.clone()))),
            Reply::Create(tx, _) => drop(tx.send(Err(CreateError::Storage(e.clone())))),
            Reply::Append(tx, _) => drop(tx.send(Err(AppendError::Storage(e.clone())))),
            Reply::Delete(tx, _) => drop(tx.send(Err(DeleteError::Storage(e.clone())))),
            Reply::Job(answer) => answer.fail(e),
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
            Reply::Job(answer) => answer.storage_failed(),
            Reply::Nothing => false,
        }
    }
}

pub(crate) struct Writer {
    conn: Connection,
    catalog: Catalog,
    states: IdMap<StreamState>,
    // Per-batch bookkeeping, reset at every batch.
    undo: IdMap<Option<StreamState>>,
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
    unindexed_entries: IdMap<Arc<Entry>>,
    /// Streams deleted while they had unindexed chunks; their chunks are skipped at flush.
    deleted: IdSet,
    last_sweep: Instant,
    sweep: SweepPolicy,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn storage<E: From<StoreError>>(e: rusqlite::Error) -> E {
    E::from(e.into())
}

impl Writer {
    /// Takes over the read-write connection, first indexing any chunks a crash left
    /// unindexed.
    pub fn new(conn: Connection, catalog: Catalog, sweep: SweepPolicy) -> rusqlite::Result<Self> {
        let next_seq = index::recover(&conn)?;
        Ok(Writer {
            conn,
            catalog,
            states: IdMap::default(),
            undo: IdMap::default(),
            paths: HashMap::new(),
            effects: Vec::new(),
            expire_failed: false,
            deleted_in_batch: Vec::new(),
            flushing: 0,
            unindexed_at_start: 0,
            next_seq,
            unindexed: Vec::new(),
            unindexed_bytes: 0,
            unindexed_since: None,
            unindexed_entries: IdMap::default(),
            deleted: IdSet::default(),
            last_sweep: Instant::now(),
            sweep,
        })
    }

    /// Runs until `Shutdown` or every sender is dropped, then returns after the last batch
    /// committed and the index is flushed.
    pub fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::new();
        let mut stop = false;
        loop {
            self.sweep_if_due();
            let wait = if self.unindexed.is_empty() {
                IDLE_SWEEP
            } else {
                IDLE_FLUSH
            };
            let first = match rx.recv_timeout(wait) {
                Ok(cmd) => Some(cmd),
                Err(RecvTimeoutError::Timeout) => {
                    // Idle: a good moment to index what is waiting.
                    if !self.unindexed.is_empty() {
                        self.run_batch(&mut batch, true);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => None,
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

    fn run_batch(&mut self, batch: &mut Vec<Command>, force_index: bool) {
        self.undo.clear();
        self.paths.clear();
        self.effects.clear();
        self.expire_failed = false;
        self.deleted_in_batch.clear();
        self.flushing = 0;
        self.unindexed_at_start = self.unindexed.len();
        let started = Instant::now();
        let began = self.run_cached("BEGIN IMMEDIATE").and_then(|_| {
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
                // If BEGIN went through and what followed failed, end the transaction, or
                // every later BEGIN fails too.
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                let e = StoreError::from(e);
                for cmd in batch.drain(..) {
                    self.apply_nothing(cmd).fail(&e);
                }
                return;
            }
        };
        let doomed = self.expire_failed || replies.iter().any(Reply::storage_failed);
        let applied = started.elapsed();
        let committed = if doomed {
            Err(StoreError::unavailable("a write in the same batch failed"))
        } else {
            self.flush_dirty()
                .and_then(|_| self.run_cached("COMMIT"))
                .map_err(StoreError::from)
        };
        let took = started.elapsed();
        if took > SLOW_BATCH {
            tracing::debug!(
                commands = replies.len(),
                indexed = self.flushing,
                applied = ?applied,
                committed = ?took - applied,
                "slow batch"
            );
        }
        match committed {
            Ok(()) => {
                self.index_flushed();
                self.publish();
                replies.into_iter().for_each(Reply::send);
            }
            Err(e) => {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "stream store batch rolled back"
                );
                let _ = self.conn.execute_batch("ROLLBACK");
                self.rollback_states();
                self.effects.clear();
                for reply in replies {
                    // A command that failed keeps its own error; the others were undone
                    // with it.
                    if reply.storage_failed() {
                        reply.send();
                    } else {
                        reply.fail(&e);
                    }
                }
            }
        }
    }

    /// Runs a statement without results, parsed once: `execute_batch` parses `BEGIN` and
    /// `COMMIT` anew for every batch.
    fn run_cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    /// A command turned into its reply channel without running it.
    fn apply_nothing(&mut self, cmd: Command) -> Reply {
        let e = StoreError::unavailable("not run");
        match cmd {
            Command::Load { reply, .. } => Reply::Load(reply, Err(e)),
            Command::Create { reply, .. } => Reply::Create(reply, Err(CreateError::Storage(e))),
            Command::Append { reply, .. } => Reply::Append(reply, Err(AppendError::Storage(e))),
            Command::Delete { reply, .. } => Reply::Delete(reply, Err(DeleteError::Storage(e))),
            Command::Job(job) => {
                job.abandon(&e);
                Reply::Nothing
            }
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
                Effect::Recent(entry, chunk) => entry.recent.lock().push(chunk),
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
                let result = self.find(&path).map_err(StoreError::from);
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
            Command::Delete {
                path,
                access,
                reply,
            } => {
                let result = self.delete_path(&path, access);
                Reply::Delete(reply, result)
            }
            Command::Expire { entry } => {
                if let Err(e) = self.expire(&entry) {
                    tracing::warn!(path = %entry.path, error = %e, "could not expire stream");
                    self.expire_failed = true;
                }
                Reply::Nothing
            }
            Command::Job(job) => Reply::Job(job.run(self)),
            Command::Shutdown => Reply::Nothing,
        }
    }
}
