//! Reads from the log through a small pool of read-only connections.
//!
//! WAL mode lets these run beside the writer without blocking it. Each call runs on tokio's
//! blocking pool.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags};

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
}

/// One stored record as read back: its position and bytes.
pub(crate) type Record = (u64, Bytes);

impl ReaderPool {
    pub fn new(path: PathBuf) -> Self {
        ReaderPool {
            inner: Arc::new(PoolInner {
                path,
                idle: Mutex::new(Vec::new()),
            }),
        }
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

    /// Records of one stream's own storage that overlap `[from, end)`, in order, stopping
    /// once `max_bytes` are gathered (always at least one record if any overlaps). The first
    /// record may start before `from` when `from` falls inside it; the caller slices.
    pub async fn records(
        &self,
        stream: StreamId,
        from: u64,
        end: u64,
        max_bytes: usize,
    ) -> rusqlite::Result<Vec<Record>> {
        let pool = self.clone();
        let run = move || {
            let conn = pool.take()?;
            let result = query_records(&conn, stream, from, end, max_bytes);
            pool.give_back(conn);
            result
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(result) => result,
            Err(join) => Err(rusqlite::Error::ToSqlConversionFailure(Box::new(join))),
        }
    }
}

pub(crate) fn query_records(
    conn: &Connection,
    stream: StreamId,
    from: u64,
    end: u64,
    max_bytes: usize,
) -> rusqlite::Result<Vec<Record>> {
    // The record that contains `from` may start before it (a fork point inside an append).
    let first: Option<i64> = conn
        .prepare_cached(
            "SELECT pos FROM records WHERE stream_id = ?1 AND pos <= ?2 ORDER BY pos DESC LIMIT 1",
        )?
        .query_row(params![stream, from as i64], |r| r.get(0))
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })?;
    let start = first.unwrap_or(from as i64);
    let mut stmt = conn.prepare_cached(
        "SELECT pos, data FROM records WHERE stream_id = ?1 AND pos >= ?2 AND pos < ?3 ORDER BY pos",
    )?;
    let mut rows = stmt.query(params![stream, start, end as i64])?;
    let mut out = Vec::new();
    let mut size = 0usize;
    while let Some(row) = rows.next()? {
        if size >= max_bytes && !out.is_empty() {
            break;
        }
        let pos: i64 = row.get(0)?;
        let data: Vec<u8> = row.get(1)?;
        size += data.len();
        out.push((pos as u64, Bytes::from(data)));
    }
    Ok(out)
}
