//! Creating streams and forks: the SQLite writer's steps of [`crate::create`].

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::params;

use super::state::StreamState;
use super::{now_ms, Effect, Writer};
use crate::create::{run_ready, CreateTx, NewStream};
use crate::model::*;
use crate::sqlite::entry::{Entry, ForkLink};
use crate::sqlite::segments;
use crate::tail::Tail;
use crate::StoreError;
use tether_types::Offset;

impl Writer {
    // ---- create --------------------------------------------------------------------------

    pub(super) fn create(
        &mut self,
        path: &str,
        request: CreateStream,
    ) -> Result<Created, CreateError> {
        run_ready(crate::create::create(self, path, &request))
    }

    /// The end of the append that starts at `pos` in `entry`'s view (its own chunks or
    /// those it inherits), clipped to where that view stops; `None` if no append starts there.
    pub(super) fn batch_end_at(
        &self,
        entry: &Arc<Entry>,
        pos: u64,
        limit: u64,
    ) -> rusqlite::Result<Option<u64>> {
        let mut current = entry.clone();
        let mut limit = limit;
        loop {
            if pos >= current.start {
                let end = match self
                    .unindexed
                    .iter()
                    .rev()
                    .find(|c| c.stream == current.id && c.pos == pos)
                {
                    Some(c) => Some(c.end),
                    None => match segments::seq_at(&self.conn, current.id, pos)? {
                        Some(seq) => self.chunk_end(seq)?,
                        None => None,
                    },
                };
                return Ok(end.map(|e| e.min(limit)));
            }
            let Some(fork) = &current.fork else {
                return Ok(None);
            };
            limit = limit.min(fork.point);
            let next = fork.source.clone();
            current = next;
        }
    }
}

/// Every step runs at once on the writer thread, inside the writer's batch transaction; the
/// catalog and the writer's in-memory stream states are what it reads and changes.
impl CreateTx for Writer {
    type Stream = Arc<Entry>;

    async fn find(&mut self, path: &str) -> Result<Option<Arc<Entry>>, StoreError> {
        Ok(Writer::find(self, path)?)
    }

    fn owner(&self, stream: &Arc<Entry>) -> Option<i64> {
        stream.owner
    }

    fn shape<'s>(&self, stream: &'s Arc<Entry>) -> (&'s StreamConfig, Option<&'s ForkFrom>) {
        (&stream.config, stream.fork.as_ref().map(|f| &f.spec))
    }

    fn info(&self, stream: &Arc<Entry>) -> StreamInfo {
        stream.info()
    }

    fn expired(&self, stream: &Arc<Entry>) -> bool {
        stream.expired(now_ms())
    }

    async fn is_deleted(&mut self, stream: &Arc<Entry>) -> Result<bool, StoreError> {
        Ok(Writer::is_deleted(self, stream)?)
    }

    async fn remove_expired(&mut self, stream: &Arc<Entry>) -> Result<bool, StoreError> {
        self.remove(stream)?;
        Ok(Writer::is_deleted(self, stream)? && Writer::find(self, &stream.path)?.is_some())
    }

    async fn current(&mut self, stream: &Arc<Entry>) -> Result<Option<(u64, bool)>, StoreError> {
        Ok(self.state(stream.id)?.map(|s| (s.tail, s.closed)))
    }

    async fn boundary(
        &mut self,
        stream: &Arc<Entry>,
        pos: u64,
        limit: u64,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self.batch_end_at(stream, pos, limit)?)
    }

    async fn insert(
        &mut self,
        path: &str,
        new: NewStream<Arc<Entry>>,
    ) -> Result<Option<StreamInfo>, StoreError> {
        let NewStream {
            config,
            fork,
            start,
            body,
            closed,
            owner,
        } = new;
        let fork = fork.map(|(source, point, spec)| ForkLink {
            source,
            point,
            spec,
        });
        let now = now_ms();
        let (fork_id, fork_path, fork_anchor, fork_sub) = match &fork {
            Some(f) => (
                Some(f.source.id),
                Some(f.spec.source.clone()),
                f.spec.offset.map(|o| o.0 as i64),
                Some(f.spec.sub_offset as i64),
            ),
            None => (None, None, None, None),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO streams (path, content_type, ttl_secs, expires_at_ms, created_at_ms,
                    last_access_ms, start_pos, tail, closed, fork_source_id, fork_source_path,
                    fork_anchor, fork_sub, owner_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                path,
                config.content_type,
                config.ttl_secs.map(|t| t as i64),
                config.expires_at.map(|t| t.timestamp_millis()),
                now,
                start as i64,
                closed,
                fork_id,
                fork_path,
                fork_anchor,
                fork_sub,
                owner
            ])?;
        let id = self.conn.last_insert_rowid();
        if let Some(f) = &fork {
            let source = self
                .state(f.source.id)?
                .ok_or_else(|| StoreError::corrupt("a fork's source vanished"))?;
            source.refcount += 1;
            source.dirty = true;
        }
        let entry = Arc::new(
            Entry::new(
                id,
                path.to_string(),
                config,
                start,
                fork,
                Tail {
                    next: start,
                    closed: false,
                    deleted: false,
                },
                false,
                now,
            )
            .owned_by(owner),
        );
        let tail = match &body {
            Some(body) => self.insert_chunk(&entry, start, body)?,
            None => start,
        };
        self.states.insert(
            id,
            StreamState {
                tail,
                closed,
                closed_by: None,
                last_stream_seq: None,
                producers: HashMap::new(),
                refcount: 0,
                soft_deleted: false,
                dirty: true,
            },
        );
        self.undo.entry(id).or_insert(None);
        self.paths.insert(path.to_string(), Some(entry.clone()));
        self.effects.push(Effect::Insert(entry.clone()));
        self.effects.push(Effect::Publish(entry.clone()));
        Ok(Some(StreamInfo {
            next: Offset(tail),
            closed,
            ..entry.info()
        }))
    }
}
