//! The WAL checkpointer: a named background job that copies committed pages from the WAL
//! into the database file.
//!
//! SQLite would otherwise checkpoint inside a commit of the writer thread, stalling every
//! append queued behind it. Here a separate connection checkpoints passively (never blocking
//! the writer or readers) on a short interval, and once more when the store shuts down.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

use super::schema;

const INTERVAL: Duration = Duration::from_millis(250);

/// Runs until `stop` is dropped or signalled.
pub(crate) fn run(path: PathBuf, stop: Receiver<()>) {
    let conn = match Connection::open(&path).and_then(|c| schema::configure(&c, false).map(|_| c)) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = %e, "wal checkpointer could not open the database; SQLite will checkpoint on commit");
            return;
        }
    };
    loop {
        let last = match stop.recv_timeout(INTERVAL) {
            Err(RecvTimeoutError::Timeout) => false,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        };
        let mode = if last { "TRUNCATE" } else { "PASSIVE" };
        match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        }) {
            Ok((_, log, done)) if log > 0 => {
                tracing::trace!(
                    job = "wal-checkpointer",
                    wal_pages = log,
                    checkpointed = done,
                    "checkpoint"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(job = "wal-checkpointer", error = %e, "checkpoint failed"),
        }
        if last {
            tracing::debug!(job = "wal-checkpointer", "stopped");
            return;
        }
    }
}
