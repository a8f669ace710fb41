//! Deleting and expiring streams, softly while forks still read them.

use std::collections::HashSet;
use std::sync::Arc;

use rusqlite::params;

use super::{now_ms, storage, Effect, Writer};
use crate::model::*;
use crate::sqlite::entry::Entry;
use crate::sqlite::segments;

impl Writer {
    // ---- delete --------------------------------------------------------------------------

    pub(super) fn delete_path(&mut self, path: &str, access: Access) -> Result<(), DeleteError> {
        let entry = self.find(path).map_err(storage::<DeleteError>)?;
        let Some(entry) = entry.filter(|e| access.sees(e.owner)) else {
            return Err(DeleteError::NotFound);
        };
        if self.is_deleted(&entry).map_err(storage::<DeleteError>)? {
            return Err(DeleteError::Gone);
        }
        if entry.expired(now_ms()) {
            self.expire(&entry).map_err(storage::<DeleteError>)?;
            return Err(DeleteError::NotFound);
        }
        self.remove(&entry).map_err(storage::<DeleteError>)
    }

    pub(super) fn expire(&mut self, entry: &Arc<Entry>) -> rusqlite::Result<()> {
        match self.state(entry.id)? {
            Some(state) if !state.soft_deleted => self.remove(entry),
            _ => Ok(()),
        }
    }

    /// Deletes a stream: softly while forks read from it, else for good, cascading to
    /// soft-deleted sources that no fork needs any more.
    pub(super) fn remove(&mut self, entry: &Arc<Entry>) -> rusqlite::Result<()> {
        let Some(state) = self.state(entry.id)? else {
            return Ok(());
        };
        if state.refcount > 0 {
            state.soft_deleted = true;
            state.dirty = true;
            self.effects.push(Effect::SoftDelete(entry.clone()));
            return Ok(());
        }
        let mut current = Some(entry.clone());
        let mut seen = HashSet::new();
        while let Some(e) = current.take() {
            if !seen.insert(e.id) {
                break;
            }
            let mut delete_chunk = self
                .conn
                .prepare_cached("DELETE FROM chunks WHERE seq = ?1")?;
            for seq in segments::all_seqs(&self.conn, e.id)? {
                delete_chunk.execute([seq])?;
            }
            drop(delete_chunk);
            self.conn
                .prepare_cached("DELETE FROM chunk_index WHERE stream_id = ?1")?
                .execute([e.id])?;
            // Chunks not indexed yet: only ever the newest rows, so this scan is short.
            let oldest_unindexed = self.unindexed.first().map_or(self.next_seq, |c| c.seq);
            self.conn
                .prepare_cached("DELETE FROM chunks WHERE seq >= ?1 AND stream_id = ?2")?
                .execute(params![oldest_unindexed, e.id])?;
            if self.deleted.insert(e.id) {
                self.deleted_in_batch.push(e.id);
            }
            self.conn
                .prepare_cached("DELETE FROM producers WHERE stream_id = ?1")?
                .execute([e.id])?;
            self.conn
                .prepare_cached("DELETE FROM streams WHERE id = ?1")?
                .execute([e.id])?;
            if let Some(s) = self.state(e.id)? {
                s.dirty = false;
            }
            self.states.remove(&e.id);
            self.paths.insert(e.path.clone(), None);
            self.effects.push(Effect::Remove(e.clone()));
            if let Some(fork) = &e.fork {
                let src = fork.source.clone();
                if let Some(src_state) = self.state(src.id)? {
                    src_state.refcount -= 1;
                    src_state.dirty = true;
                    if src_state.refcount <= 0 && src_state.soft_deleted {
                        current = Some(src);
                    }
                }
            }
        }
        Ok(())
    }
}
