//! Reads from the log through a small pool of read-only connections.
//!
//! WAL mode lets these run beside the writer without blocking it. Each call runs on tokio's
//! blocking pool.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::entry::Chunk;
use super::schema;
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

pub(crate) fn query_chunks(
    conn: &Connection,
    stream: StreamId,
    from: u64,
    end: u64,
    max_bytes: usize,
) -> rusqlite::Result<Vec<Chunk>> {
    // The chunk that contains `from` may start before it (a fork point inside an append).
    let first: Option<i64> = conn
        .prepare_cached(
            "SELECT pos FROM chunk_index WHERE stream_id = ?1 AND pos <= ?2
             ORDER BY pos DESC LIMIT 1",
        )?
        .query_row(params![stream, from as i64], |r| r.get(0))
        .optional()?;
    let start = first.unwrap_or(from as i64);
    let mut stmt = conn.prepare_cached(
        "SELECT c.pos, c.end_pos, c.data FROM chunk_index i JOIN chunks c ON c.seq = i.seq
         WHERE i.stream_id = ?1 AND i.pos >= ?2 AND i.pos < ?3 ORDER BY i.pos",
    )?;
    let mut rows = stmt.query(params![stream, start, end as i64])?;
    let mut out = Vec::new();
    let mut size = 0usize;
    while let Some(row) = rows.next()? {
        if size >= max_bytes && !out.is_empty() {
            break;
        }
        let pos: i64 = row.get(0)?;
        let chunk_end: i64 = row.get(1)?;
        let data: Vec<u8> = row.get(2)?;
        size += data.len();
        out.push(Chunk {
            pos: pos as u64,
            end: chunk_end as u64,
            data: Bytes::from(data),
        });
    }
    Ok(out)
}
