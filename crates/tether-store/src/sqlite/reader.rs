//! Reads from the log through a small pool of read-only connections.
//!
//! WAL mode lets these run beside the writer without blocking it. Each call runs on tokio's
//! blocking pool.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::entry::Chunk;
use super::{schema, segments};
use crate::model::StreamId;

const POOL_KEEP: usize = 8;

#[derive(Clone)]
pub(crate) struct ReaderPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Reads that went to the database rather than a cache.
    queries: AtomicU64,
}

impl ReaderPool {
    pub fn new(path: PathBuf) -> Self {
        ReaderPool {
            inner: Arc::new(PoolInner {
                path,
                idle: Mutex::new(Vec::new()),
                queries: AtomicU64::new(0),
            }),
        }
    }

    pub fn queries(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }

    fn take(&self) -> rusqlite::Result<Connection> {
        if let Some(conn) = self.inner.idle.lock().pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.inner.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        schema::configure(&conn, false)?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.inner.idle.lock();
        if idle.len() < POOL_KEEP {
            idle.push(conn);
        }
    }

    /// Indexed chunks of one stream's own storage that overlap `[from, end)`, in order,
    /// stopping once `max_bytes` are gathered (always at least one chunk if any overlaps). The
    /// first may start before `from` when `from` falls inside it; the caller slices.
    pub async fn chunks(
        &self,
        stream: StreamId,
        from: u64,
        end: u64,
        max_bytes: usize,
    ) -> rusqlite::Result<Vec<Chunk>> {
        self.inner.queries.fetch_add(1, Ordering::Relaxed);
        let pool = self.clone();
        let run = move || {
            let conn = pool.take()?;
            let result = query_chunks(&conn, stream, from, end, max_bytes);
            pool.give_back(conn);
            result
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(result) => result,
            Err(join) => Err(rusqlite::Error::ToSqlConversionFailure(Box::new(join))),
        }
    }
}

impl ReaderPool {
    /// Runs `f` on a pooled read-only connection, on the blocking pool.
    pub async fn query<T, F>(&self, f: F) -> rusqlite::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let pool = self.clone();
        let run = move || {
            let conn = pool.take()?;
            let result = f(&conn);
            pool.give_back(conn);
            result
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(result) => result,
            Err(join) => Err(rusqlite::Error::ToSqlConversionFailure(Box::new(join))),
        }
    }
}

pub(crate) fn query_chunks(
    conn: &Connection,
    stream: StreamId,
    from: u64,
    end: u64,
    max_bytes: usize,
) -> rusqlite::Result<Vec<Chunk>> {
    let pairs = segments::covering(conn, stream, from, end)?;
    // The chunk that contains `from` may start before it (a fork point inside an append).
    let first = pairs
        .partition_point(|(pos, _)| *pos <= from)
        .saturating_sub(1);
    let mut fetch = conn.prepare_cached("SELECT pos, end_pos, data FROM chunks WHERE seq = ?1")?;
    let mut out = Vec::new();
    let mut size = 0usize;
    for (pos, seq) in &pairs[first.min(pairs.len())..] {
        if *pos >= end || (size >= max_bytes && !out.is_empty()) {
            break;
        }
        let chunk = fetch
            .query_row([seq], |r| {
                Ok(Chunk {
                    pos: r.get::<_, i64>(0)? as u64,
                    end: r.get::<_, i64>(1)? as u64,
                    data: Bytes::copy_from_slice(r.get_ref(2)?.as_blob()?),
                })
            })
            .optional()?;
        // An index entry without its chunk would be a gap; stop rather than skip past it.
        let Some(chunk) = chunk else {
            break;
        };
        if chunk.end <= from {
            continue;
        }
        size += chunk.data.len();
        out.push(chunk);
    }
    Ok(out)
}
