//! The WAL checkpointer: a named background job that copies committed pages from the WAL
//! into the database file.
//!
//! SQLite would otherwise checkpoint inside a commit of the writer thread, stalling every
//! append queued behind it. Here a separate connection checkpoints passively (never blocking
//! the writer or readers) on a short interval, and once more when the store shuts down.
//!
//! It also keeps the WAL from staying at its high-water size. SQLite truncates the WAL to
//! `journal_size_limit` ([`super::WAL_LIMIT_BYTES`]) when the writer restarts it; and when
//! the store has been quiet for [`QUIET_LOOKS`] looks (nothing written, everything copied
//! back) and the WAL holds more than [`QUIET_WAL_BYTES`], this job empties it with a TRUNCATE
//! checkpoint; after one quiet look when the disk is nearly full. Not sooner: a commit that
//! grows the WAL file syncs more than one that reuses it, so emptying the WAL between two
//! bursts made lone appends after it about 0.1 ms slower (p50) until it had grown back.
//! That checkpoint waits for no one (busy timeout 0): a reader still on the WAL makes it give
//! up until the next quiet tick, so it never holds up the writer for long.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::disk::{self, Space};
use super::schema;

const INTERVAL: Duration = Duration::from_millis(250);
use super::QUIET_WAL_BYTES;
/// Looks in a row with nothing written before a large WAL is emptied: 5 s.
const QUIET_LOOKS: u32 = 20;
/// How long the last checkpoint, at shutdown, waits for the writer and readers.
const LAST_WAIT: Duration = Duration::from_secs(10);

/// `PRAGMA wal_checkpoint(mode)`: (busy, frames in the WAL, frames checkpointed).
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

/// Measures the disk into `space`.
fn measure(path: &std::path::Path, wal: &std::path::Path, space: &Space) {
    let Some(dir) = path.parent() else { return };
    let wal = std::fs::metadata(wal).map_or(0, |m| m.len());
    match disk::free_bytes(dir) {
        Ok(free) => space.measured(free, wal),
        Err(e) => tracing::warn!(job = "wal-checkpointer", error = %e, "cannot read free space"),
    }
}

/// Runs until `stop` is dropped or signalled.
pub(crate) fn run(path: PathBuf, space: Arc<Space>, stop: Receiver<()>) {
    let wal = path.with_file_name(format!("{}-wal", super::DATABASE_FILE));
    let conn = match Connection::open(&path)
        .and_then(|c| schema::configure(&c, false).map(|_| c))
        .and_then(|c| c.busy_timeout(Duration::ZERO).map(|_| c))
    {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = %e, "wal checkpointer could not open the database; SQLite will checkpoint on commit");
            return;
        }
    };
    // Frames in the WAL at the last look, to tell a quiet store from a busy one.
    let mut seen = -1;
    // Looks in a row that found nothing new written.
    let mut quiet_looks = 0u32;
    // Whether the last checkpoint failed: a full disk fails every one, and a warning four
    // times a second would bury the rest of the log.
    let mut failing = false;
    loop {
        let last = match stop.recv_timeout(INTERVAL) {
            Err(RecvTimeoutError::Timeout) => false,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        };
        if last {
            let _ = conn.busy_timeout(LAST_WAIT);
        } else {
            measure(&path, &wal, &space);
        }
        let mode = if last { "TRUNCATE" } else { "PASSIVE" };
        match checkpoint(&conn, mode) {
            Ok((_, log, done)) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(job = "wal-checkpointer", "checkpoints work again");
                }
                if log > 0 {
                    tracing::trace!(
                        job = "wal-checkpointer",
                        wal_pages = log,
                        checkpointed = done,
                        "checkpoint"
                    );
                }
                quiet_looks = if log == done && log == seen {
                    quiet_looks.saturating_add(1)
                } else {
                    0
                };
                seen = log;
                let wanted = if space.is_low() { 1 } else { QUIET_LOOKS };
                let large = std::fs::metadata(&wal).is_ok_and(|m| m.len() > QUIET_WAL_BYTES);
                if !last && quiet_looks >= wanted && large {
                    // Busy (a reader is still on the WAL) or failed: next time.
                    if let Ok((0, _, _)) = checkpoint(&conn, "TRUNCATE") {
                        tracing::debug!(job = "wal-checkpointer", "emptied the WAL");
                        seen = 0;
                    }
                }
            }
            Err(e) => {
                if std::mem::replace(&mut failing, true) {
                    tracing::debug!(job = "wal-checkpointer", error = %e, "checkpoint failed");
                } else {
                    tracing::warn!(job = "wal-checkpointer", error = %e, "checkpoint failed; retrying");
                }
                if let Some(dir) = path.parent() {
                    disk::release_if_short(dir);
                }
            }
        }
        if last {
            tracing::debug!(job = "wal-checkpointer", "stopped");
            return;
        }
    }
}
