//! Finding streams and their writer-side state, loaded on first use.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use rusqlite::{params, OptionalExtension};

use super::{now_ms, Effect, Writer};
use crate::model::*;
use crate::sqlite::entry::{Entry, ForkLink};
use crate::sqlite::segments;
use crate::tail::Tail;
use tether_types::Offset;

/// Writer-side protocol state of one stream.
#[derive(Clone, Debug)]
pub(super) struct StreamState {
    pub tail: u64,
    pub closed: bool,
    pub closed_by: Option<ProducerStamp>,
    pub last_stream_seq: Option<String>,
    pub producers: HashMap<String, (u64, u64)>,
    pub refcount: i64,
    pub soft_deleted: bool,
    pub dirty: bool,
}

impl Writer {
    // ---- lookups -------------------------------------------------------------------------

    /// The live entry at `path`, as of this point in the batch.
    pub(super) fn find(&mut self, path: &str) -> rusqlite::Result<Option<Arc<Entry>>> {
        if let Some(known) = self.paths.get(path) {
            return Ok(known.clone());
        }
        if let Some(entry) = self.catalog.lock().get(path) {
            return Ok(Some(entry.clone()));
        }
        let entry = self.load(path)?;
        if let Some(e) = &entry {
            self.paths.insert(path.to_string(), Some(e.clone()));
            self.effects.push(Effect::Insert(e.clone()));
        }
        Ok(entry)
    }

    pub(super) fn load(&mut self, path: &str) -> rusqlite::Result<Option<Arc<Entry>>> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, content_type, ttl_secs, expires_at_ms, last_access_ms, start_pos, tail,
                        closed, fork_source_id, fork_source_path, fork_anchor, fork_sub, soft_deleted,
                        owner_id
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
                    r.get::<_, Option<i64>>(13)?,
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
            owner,
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
        let tail = self.records_end(id)?.unwrap_or(0).max(tail as u64);
        let config = StreamConfig {
            content_type,
            ttl_secs: ttl.map(|t| t as u64),
            expires_at: expires_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        };
        // A restart does not count against a sliding TTL: idleness is measured from the later
        // of the last persisted access and now.
        let last_access = last_access.max(now_ms());
        Ok(Some(Arc::new(
            Entry::new(
                id,
                path.to_string(),
                config,
                start as u64,
                fork,
                Tail {
                    next: tail,
                    closed,
                    deleted: soft_deleted,
                },
                soft_deleted,
                last_access,
            )
            .owned_by(owner),
        )))
    }

    /// Whether the stream is (soft-)deleted as of this point in the batch.
    pub(super) fn is_deleted(&mut self, entry: &Arc<Entry>) -> rusqlite::Result<bool> {
        Ok(self.state(entry.id)?.is_none_or(|s| s.soft_deleted))
    }

    /// The writer-side state of a stream, loaded on first use; `None` if the row is gone.
    pub(super) fn state(&mut self, id: StreamId) -> rusqlite::Result<Option<&mut StreamState>> {
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

    pub(super) fn load_state(&self, id: StreamId) -> rusqlite::Result<Option<StreamState>> {
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
        if let Some(end) = self.records_end(id)? {
            state.tail = state.tail.max(end);
        }
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

    /// The end of a stream's last indexed chunk, if it has any. (A stream with unindexed
    /// chunks is always in memory, so this is only asked about streams without.)
    pub(super) fn records_end(&self, id: StreamId) -> rusqlite::Result<Option<u64>> {
        match segments::last_seq(&self.conn, id)? {
            Some(seq) => self.chunk_end(seq),
            None => Ok(None),
        }
    }

    /// Where the chunk stored as `seq` ends.
    pub(super) fn chunk_end(&self, seq: i64) -> rusqlite::Result<Option<u64>> {
        self.conn
            .prepare_cached("SELECT end_pos FROM chunks WHERE seq = ?1")?
            .query_row([seq], |r| r.get::<_, i64>(0))
            .optional()
            .map(|end| end.map(|e| e as u64))
    }

    /// Writes the stream rows whose metadata changed in this batch, once per stream.
    pub(super) fn flush_dirty(&mut self) -> rusqlite::Result<()> {
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
}
