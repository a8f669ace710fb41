//! Reads from the log through a small pool of read-only connections.
//!
//! WAL mode lets these run beside the writer without blocking it. Each call runs on tokio's
//! blocking pool. A connection left unused for [`CLOSE_IDLE_AFTER`] is closed: it holds the
//! pages it read, mapped and cached, and an idle server should not.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use rusqlite::{Connection, OpenFlags};

use super::entry::Chunk;
use super::{scan, schema};
use crate::model::StreamId;

const POOL_KEEP: usize = 8;
/// How long a pooled connection may sit unused before it is closed. Reopening one costs a
/// file open and a schema read, well under a millisecond, far less than what a reader that
/// just finished a long catch-up keeps resident: every page of the database it read through
/// its memory map, and its page cache.
const CLOSE_IDLE_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(crate) struct ReaderPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    path: PathBuf,
    idle: Arc<Idle>,
    /// Reads that went to the database rather than a cache.
    queries: AtomicU64,
}

/// The pooled connections, shared with the thread that closes the idle ones.
struct Idle {
    conns: Mutex<IdleConns>,
    /// Signalled when the pool goes from empty to not, and when the pool is dropped.
    changed: Condvar,
}

struct IdleConns {
    /// Each with the time it was given back, the most recently used last.
    list: Vec<(Connection, Instant)>,
    /// Set when the pool is dropped: the closing thread ends.
    dropped: bool,
}

impl Drop for PoolInner {
    /// Closes the pooled connections now, as the store closes, and ends the closing thread.
    fn drop(&mut self) {
        let pooled = {
            let mut conns = self.idle.conns.lock();
            conns.dropped = true;
            std::mem::take(&mut conns.list)
        };
        self.idle.changed.notify_one();
        drop(pooled);
    }
}

impl ReaderPool {
    pub fn new(path: PathBuf) -> std::io::Result<Self> {
        Self::closing_idle_after(path, CLOSE_IDLE_AFTER)
    }

    fn closing_idle_after(path: PathBuf, after: Duration) -> std::io::Result<Self> {
        let idle = Arc::new(Idle {
            conns: Mutex::new(IdleConns {
                list: Vec::new(),
                dropped: false,
            }),
            changed: Condvar::new(),
        });
        let reaped = Arc::clone(&idle);
        std::thread::Builder::new()
            .name("tether-reader-reaper".into())
            .spawn(move || close_idle(&reaped, after))?;
        Ok(ReaderPool {
            inner: Arc::new(PoolInner {
                path,
                idle,
                queries: AtomicU64::new(0),
            }),
        })
    }

    pub fn queries(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }

    fn take(&self) -> rusqlite::Result<Connection> {
        if let Some((conn, _)) = self.inner.idle.conns.lock().list.pop() {
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
        let mut idle = self.inner.idle.conns.lock();
        if idle.list.len() < POOL_KEEP {
            idle.list.push((conn, Instant::now()));
            // The closing thread waits without a deadline only while the pool is empty.
            if idle.list.len() == 1 {
                self.inner.idle.changed.notify_one();
            }
        }
    }

    /// Pooled connections, idle or not yet closed.
    #[cfg(test)]
    fn pooled(&self) -> usize {
        self.inner.idle.conns.lock().list.len()
    }

    /// Reads the indexed chunks of one stream's own storage that overlap `[from, end)` (see
    /// [`scan::query_chunks`]). Runs on the blocking pool; dropping the handle lets the read
    /// finish unobserved.
    pub fn spawn_chunks(
        &self,
        stream: StreamId,
        json: bool,
        from: u64,
        end: u64,
        max_bytes: usize,
    ) -> tokio::task::JoinHandle<rusqlite::Result<Vec<Chunk>>> {
        self.inner.queries.fetch_add(1, Ordering::Relaxed);
        self.spawn(move |conn| scan::query_chunks(conn, stream, json, from, end, max_bytes))
    }

    /// Runs `f` on a pooled read-only connection, on the blocking pool.
    pub async fn query<T, F>(&self, f: F) -> rusqlite::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        join(self.spawn(f).await)
    }

    fn spawn<T, F>(&self, f: F) -> tokio::task::JoinHandle<rusqlite::Result<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let result = f(&conn);
            pool.give_back(conn);
            result
        })
    }
}

/// Closes the pooled connections that were not used for `after`, until the pool is dropped.
/// Sleeps until the oldest one is due, or while none is pooled until one is given back, so
/// an idle server's reaper does not wake at all. Connections are closed outside the lock, so
/// a reader taking one never waits for a close.
fn close_idle(idle: &Idle, after: Duration) {
    let mut conns = idle.conns.lock();
    while !conns.dropped {
        // The least recently used come first; they are the ones to close.
        let keep_from = conns.list.partition_point(|(_, at)| at.elapsed() >= after);
        if keep_from > 0 {
            let stale: Vec<(Connection, Instant)> = conns.list.drain(..keep_from).collect();
            MutexGuard::unlocked(&mut conns, || drop(stale));
            continue;
        }
        match conns.list.first() {
            Some(&(_, at)) => {
                idle.changed.wait_until(&mut conns, at + after);
            }
            None => idle.changed.wait(&mut conns),
        }
    }
}

/// The result of a blocking read, with a panicked read as an error.
pub(crate) fn join<T>(
    joined: Result<rusqlite::Result<T>, tokio::task::JoinError>,
) -> rusqlite::Result<T> {
    match joined {
        Ok(result) => result,
        Err(join) => Err(rusqlite::Error::ToSqlConversionFailure(Box::new(join))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool over a database in WAL mode, as the store makes it, and the writer connection,
    /// which a read-only connection to a WAL database needs open beside it.
    fn pool_in(dir: &tempfile::TempDir, after: Duration) -> (ReaderPool, Connection) {
        let path = dir.path().join("db.sqlite");
        let writer = Connection::open(&path).unwrap();
        schema::configure(&writer, true).unwrap();
        writer
            .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7);")
            .unwrap();
        (ReaderPool::closing_idle_after(path, after).unwrap(), writer)
    }

    async fn read_one(pool: &ReaderPool) -> i64 {
        pool.query(|c| c.query_row("SELECT x FROM t", [], |r| r.get(0)))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_connection_in_use_recently_stays_pooled() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, _writer) = pool_in(&dir, Duration::from_secs(3600));
        assert_eq!(read_one(&pool).await, 7);
        assert_eq!(pool.pooled(), 1);
        assert_eq!(read_one(&pool).await, 7);
        assert_eq!(pool.pooled(), 1, "the pooled connection was reused");
    }

    /// Waits, polling, until the pool has closed every connection.
    async fn all_closed(pool: &ReaderPool) {
        // Polled, not slept on: the reaper wakes when a connection is due; a minute is slack
        // for a slow machine, not a guess at how long it takes.
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.pooled() > 0 {
            assert!(
                Instant::now() < deadline,
                "the idle connection was never closed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_and_reads_still_work() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, _writer) = pool_in(&dir, Duration::from_millis(50));
        assert_eq!(read_one(&pool).await, 7);
        all_closed(&pool).await;
        assert_eq!(
            read_one(&pool).await,
            7,
            "a closed pool opens a new connection"
        );
        // The reaper slept without a deadline while the pool was empty; giving a connection
        // back must wake it.
        all_closed(&pool).await;
    }
}
