//! The chunk index, maintained in bulk.
//!
//! Appends only add rows at the end of `chunks`; which stream a chunk belongs to is written
//! to `chunk_index` later, sorted, for many chunks at once. Until then the chunk is pinned in
//! its stream's recent cache, where readers find it. At start, chunks a crash left unindexed
//! are indexed before anything else runs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use crate::sqlite::segments;

use super::{Effect, StoredBody, Writer};
use crate::model::StreamId;
use crate::sqlite::entry::{Chunk, Entry};

/// The chunk index is flushed when this many chunks wait for it...
const INDEX_FLUSH_CHUNKS: usize = 32_768;
/// ...or this many bytes of them are pinned in memory...
const INDEX_FLUSH_BYTES: usize = 32 << 20;
/// ...or the oldest has waited this long, or the writer has been idle this long.
const INDEX_FLUSH_AGE: Duration = Duration::from_secs(2);
pub(super) const IDLE_FLUSH: Duration = Duration::from_millis(200);

/// A committed chunk that the on-disk index does not list yet.
pub(super) struct Unindexed {
    pub stream: StreamId,
    pub pos: u64,
    pub end: u64,
    pub seq: i64,
    pub bytes: usize,
}

/// Indexes chunks left unindexed by an unclean stop; returns the next chunk sequence number.
pub(super) fn recover(conn: &Connection) -> rusqlite::Result<i64> {
    let indexed: i64 = conn.query_row(
        "SELECT value FROM store_meta WHERE key = 'indexed_seq'",
        [],
        |r| r.get(0),
    )?;
    let last: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM chunks", [], |r| r.get(0))?;
    if last > indexed {
        let tx = conn.unchecked_transaction()?;
        let mut rows: Vec<(StreamId, u64, i64)> = Vec::new();
        {
            let mut stmt = tx.prepare(
                "SELECT stream_id, pos, seq FROM chunks WHERE seq > ?1 ORDER BY stream_id, pos",
            )?;
            let mut found = stmt.query([indexed])?;
            while let Some(row) = found.next()? {
                rows.push((row.get(0)?, row.get::<_, i64>(1)? as u64, row.get(2)?));
            }
        }
        segments::write(&tx, &segments::group(rows.iter().copied()))?;
        tx.execute(
            "UPDATE store_meta SET value = ?1 WHERE key = 'indexed_seq'",
            [last],
        )?;
        tx.commit()?;
        tracing::info!(chunks = rows.len(), "indexed chunks left from the last run");
    }
    Ok(last.max(indexed) + 1)
}

impl Writer {
    pub(super) fn index_flush_due(&self) -> bool {
        self.unindexed.len() >= INDEX_FLUSH_CHUNKS
            || self.unindexed_bytes >= INDEX_FLUSH_BYTES
            || self
                .unindexed_since
                .is_some_and(|t| t.elapsed() >= INDEX_FLUSH_AGE)
    }

    /// Stores one append's chunk at `pos`; returns where it ends.
    pub(super) fn insert_chunk(
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
    pub(super) fn flush_index(&mut self) -> rusqlite::Result<()> {
        let started = Instant::now();
        let grouped = segments::group(
            self.unindexed
                .iter()
                .filter(|c| !self.deleted.contains(&c.stream))
                .map(|c| (c.stream, c.pos, c.seq)),
        );
        segments::write(&self.conn, &grouped)?;
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
        tracing::debug!(
            chunks = self.flushing,
            segments = grouped.len(),
            elapsed = ?started.elapsed(),
            "chunk index flushed"
        );
        Ok(())
    }

    /// After commit: forget what the flush indexed.
    pub(super) fn index_flushed(&mut self) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::schema;

    #[test]
    fn a_failed_index_flush_ends_its_transaction_and_a_later_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        schema::configure(&conn, true).unwrap();
        schema::migrate(&mut conn).unwrap();
        let mut writer = Writer::new(conn, Default::default(), Default::default()).unwrap();
        writer.unindexed.push(Unindexed {
            stream: 1,
            pos: 0,
            end: 5,
            seq: 1,
            bytes: 5,
        });
        writer.unindexed_bytes = 5;

        // The index table goes missing for a while, as a failing disk would make it.
        let other = Connection::open(&path).unwrap();
        let rename = |from: &str, to: &str| {
            other
                .execute_batch(&format!("ALTER TABLE {from} RENAME TO {to}"))
                .unwrap()
        };
        rename("chunk_index", "chunk_index_away");
        writer.run_batch(&mut Vec::new(), true);
        assert!(
            writer.conn.is_autocommit(),
            "the failed flush left its transaction open"
        );
        assert_eq!(writer.unindexed.len(), 1, "nothing was indexed");

        rename("chunk_index_away", "chunk_index");
        writer.run_batch(&mut Vec::new(), true);
        assert!(
            writer.unindexed.is_empty(),
            "the retried flush indexed the chunk"
        );
        let rows: i64 = other
            .query_row(
                "SELECT count(*) FROM chunk_index WHERE stream_id = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 1);
    }
}
