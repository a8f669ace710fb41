//! The embedded SQLite stream store: one file under the data dir, one writer thread, a pool
//! of readers, and an in-memory catalog of the streams in use.

mod checkpoint;
mod control;
mod coord;
pub mod disk;
mod entry;
mod error;
mod readahead;
mod reader;
mod scan;
mod schema;
mod segments;
mod writer;

use crate::StoreError;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use parking_lot::Mutex;
use rusqlite::Connection;
use std::sync::mpsc;
use tokio::sync::oneshot;

use crate::chunk;
use crate::model::*;
use crate::tail::TailWatch;
use crate::StreamStore;
use entry::Entry;
use readahead::ReadAhead;
use reader::ReaderPool;
use tether_types::ReadFrom;
use writer::{stored_body, Catalog, Command, PreparedAppend, Writer};

pub use writer::SweepPolicy;

/// The database file's name inside the data dir.
pub const DATABASE_FILE: &str = "tether.db";
const LOCK_FILE: &str = "tether.lock";
/// The WAL is truncated back to this size when SQLite restarts it after a checkpoint, and
/// the checkpointer empties it once the store has been quiet for a while: a burst that grew it leaves no
/// high-water file behind to fill a nearly full disk. Above the writer's auto-checkpoint
/// threshold (8000 pages), so steady writing reuses the file instead of regrowing it.
pub const WAL_LIMIT_BYTES: u64 = 64 << 20;
/// A quiet store's WAL larger than this is emptied (see `checkpoint.rs`).
pub const QUIET_WAL_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot use data dir {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("data dir {0} is in use by another tether process")]
    Locked(PathBuf),
    #[error("cannot open the database: {0}")]
    Database(#[from] rusqlite::Error),
}

pub struct SqliteStore {
    catalog: Catalog,
    sender: mpsc::Sender<Command>,
    readers: ReaderPool,
    read_ahead: ReadAhead,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    /// Whether the disk has room for writes that add data ([`disk`]).
    space: Arc<disk::Space>,
    /// Held for the store's lifetime: one process per data dir.
    _lock: File,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir` and applies migrations.
    pub fn open(data_dir: &Path) -> Result<Self, OpenError> {
        Self::open_with(data_dir, SweepPolicy::default())
    }

    /// [`SqliteStore::open`] with a chosen policy for forgetting idle streams.
    pub fn open_with(data_dir: &Path, sweep: SweepPolicy) -> Result<Self, OpenError> {
        Self::open_in(data_dir, sweep, disk::DEFAULT_RESERVE_BYTES)
    }

    /// [`SqliteStore::open_with`] keeping `reserve_bytes` of disk aside ([`disk`]; 0: none).
    pub fn open_in(
        data_dir: &Path,
        sweep: SweepPolicy,
        reserve_bytes: u64,
    ) -> Result<Self, OpenError> {
        let dir_err = |source| OpenError::DataDir {
            dir: data_dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(dir_err)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join(LOCK_FILE))
            .map_err(dir_err)?;
        if lock.try_lock().is_err() {
            return Err(OpenError::Locked(data_dir.to_path_buf()));
        }
        // After the lock, so two processes never race over the reserve.
        disk::keep_reserve(data_dir, reserve_bytes).map_err(dir_err)?;
        let db_path = data_dir.join(DATABASE_FILE);
        let mut conn = Connection::open(&db_path)?;
        schema::configure(&conn, true)?;
        schema::migrate(&mut conn)?;

        let catalog: Catalog = Arc::new(Mutex::new(HashMap::new()));
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(conn, catalog.clone(), sweep)?;
        let handle = std::thread::Builder::new()
            .name("tether-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(dir_err)?;
        let space = Arc::new(disk::Space::default());
        let free = disk::free_bytes(data_dir).map_err(dir_err)?;
        space.measured(free, disk::wal_bytes(data_dir));
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        let checkpoint_path = db_path.clone();
        let checkpoint_space = space.clone();
        let checkpointer = std::thread::Builder::new()
            .name("tether-checkpointer".into())
            .spawn(move || checkpoint::run(checkpoint_path, checkpoint_space, stop_rx))
            .map_err(dir_err)?;
        Ok(SqliteStore {
            checkpointer: Mutex::new(Some((stop_tx, checkpointer))),
            space,
            catalog,
            sender: tx,
            readers: ReaderPool::new(db_path).map_err(dir_err)?,
            read_ahead: ReadAhead::default(),
            writer: Mutex::new(Some(handle)),
            _lock: lock,
        })
    }

    /// Whether the disk has room for writes that add data.
    pub(crate) fn space(&self) -> &disk::Space {
        &self.space
    }

    /// How many reads went to the database instead of the recent-chunks cache.
    pub fn log_reads(&self) -> u64 {
        self.readers.queries()
    }

    /// How many streams are held in memory (for tests and metrics).
    pub fn streams_in_memory(&self) -> usize {
        self.catalog.lock().len()
    }

    fn send(&self, cmd: Command) -> bool {
        self.sender.send(cmd).is_ok()
    }

    /// The entry at `path`, from memory or (first use) loaded by the writer, if `access`
    /// sees it.
    async fn entry(&self, access: Access, path: &str) -> Result<Arc<Entry>, LookupError> {
        let cached = self.catalog.lock().get(path).cloned();
        let entry = match cached {
            Some(e) => e,
            None => {
                let (tx, rx) = oneshot::channel();
                if !self.send(Command::Load {
                    path: path.to_string(),
                    reply: tx,
                }) {
                    return Err(LookupError::Storage(StoreError::ShutDown));
                }
                match rx.await {
                    Ok(Ok(Some(e))) => e,
                    Ok(Ok(None)) => return Err(LookupError::NotFound),
                    Ok(Err(msg)) => return Err(LookupError::Storage(msg)),
                    Err(_) => return Err(LookupError::Storage(StoreError::ShutDown)),
                }
            }
        };
        if !access.sees(entry.owner) {
            return Err(LookupError::NotFound);
        }
        if entry.is_soft_deleted() {
            return Err(LookupError::Gone);
        }
        if entry.expired(now_ms()) {
            self.send(Command::Expire { entry });
            return Err(LookupError::NotFound);
        }
        Ok(entry)
    }

    /// Reads `[from, end)` of `entry`'s view (see [`chunk::read_view`]), from each stream's
    /// recent-chunks cache where it covers the range, else from the log (or a window of it
    /// read ahead, see [`readahead`]). Chunks not yet in the on-disk index are always in the
    /// cache.
    async fn read_view(
        &self,
        entry: &Arc<Entry>,
        from: u64,
        end: u64,
        max_bytes: usize,
    ) -> Result<(Vec<Bytes>, u64), LookupError> {
        let fetch = |stream: Arc<Entry>, pos, hi, budget| async move {
            let cached = stream.recent.lock().read(pos, hi, budget);
            if let Some(chunks) = cached {
                return Ok(chunks);
            }
            let read = |budget| {
                self.readers
                    .spawn_chunks(stream.id, stream.json, pos, hi, budget)
            };
            let chunks = match self.read_ahead.take(&stream, pos, hi) {
                // A window read ahead that failed is read again, as if it never was.
                Some(window) => match reader::join(window.await) {
                    Ok(chunks) => Ok(chunks),
                    Err(_) => reader::join(read(budget).await),
                },
                None => reader::join(read(budget).await),
            }
            .map_err(|e| LookupError::Storage(e.into()))?;
            if let Some(last) = chunks.last().filter(|c| c.end < hi) {
                let next = last.end;
                self.read_ahead.start(&stream, next, hi, || {
                    self.readers
                        .spawn_chunks(stream.id, stream.json, next, hi, max_bytes)
                });
            }
            Ok(chunks)
        };
        chunk::read_view(entry, from, end, max_bytes, fetch).await
    }
}

chunk::view_link!(Entry);

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn shut_down<T>() -> Result<T, StoreError> {
    Err(StoreError::ShutDown)
}

#[async_trait]
impl StreamStore for SqliteStore {
    async fn create(&self, path: &str, request: CreateStream) -> Result<Created, CreateError> {
        let adds = request.body.len() as u64;
        self.space.take(adds).map_err(CreateError::Storage)?;
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::Create {
            path: path.to_string(),
            request,
            reply: tx,
        }) {
            return shut_down().map_err(CreateError::Storage);
        }
        rx.await
            .unwrap_or_else(|_| shut_down().map_err(CreateError::Storage))
    }

    async fn append(&self, path: &str, request: Append) -> Result<Appended, AppendError> {
        // A close-only append adds no data and stays allowed.
        if !request.body.is_empty() {
            let adds = request.body.len() as u64;
            self.space.take(adds).map_err(AppendError::Storage)?;
        }
        let entry = self.entry(request.access, path).await?;
        entry.touch(now_ms());
        // Parsing happens here, on the caller's task, not on the writer thread.
        let body = stored_body(entry.json, &request.body, false)
            .map_err(|e| AppendError::InvalidBody(e.to_string()));
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::Append {
            entry,
            append: PreparedAppend { request, body },
            reply: tx,
        }) {
            return shut_down().map_err(AppendError::Storage);
        }
        rx.await
            .unwrap_or_else(|_| shut_down().map_err(AppendError::Storage))
    }

    async fn read_as(
        &self,
        access: Access,
        path: &str,
        from: ReadFrom,
        max_bytes: usize,
    ) -> Result<ReadChunk, LookupError> {
        let entry = self.entry(access, path).await?;
        entry.touch(now_ms());
        let info = entry.info();
        let end = info.next.0;
        let start = chunk::read_start(from, end)?;
        let read = self.read_view(&entry, start, end, max_bytes).await?;
        Ok(chunk::read_chunk(info, start, end, read))
    }

    async fn head_as(&self, access: Access, path: &str) -> Result<StreamInfo, LookupError> {
        Ok(self.entry(access, path).await?.info())
    }

    async fn watch_as(
        &self,
        access: Access,
        path: &str,
    ) -> Result<(StreamInfo, TailWatch), LookupError> {
        let entry = self.entry(access, path).await?;
        entry.touch(now_ms());
        let watch = entry.watch();
        Ok((entry.info(), watch))
    }

    async fn delete_as(&self, access: Access, path: &str) -> Result<(), DeleteError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::Delete {
            path: path.to_string(),
            access,
            reply: tx,
        }) {
            return shut_down().map_err(DeleteError::Storage);
        }
        rx.await
            .unwrap_or_else(|_| shut_down().map_err(DeleteError::Storage))
    }

    async fn shutdown(&self) {
        // Queued commands ahead of this one still run and commit.
        self.send(Command::Shutdown);
        let writer = self.writer.lock().take();
        let checkpointer = self.checkpointer.lock().take();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(handle) = writer {
                let _ = handle.join();
            }
            // After the last commit: one final checkpoint, then stop.
            if let Some((stop, handle)) = checkpointer {
                let _ = stop.send(());
                let _ = handle.join();
            }
        })
        .await;
    }
}
