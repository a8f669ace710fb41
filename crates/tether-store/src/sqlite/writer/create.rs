//! Creating streams and forks.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::params;

use crate::StoreError;

use super::state::StreamState;
use super::{now_ms, storage, stored_body, Effect, Writer};
use crate::lifecycle::{self, Shape};
use crate::model::*;
use crate::sqlite::entry::{Entry, ForkLink};
use crate::sqlite::segments;
use crate::tail::Tail;
use tether_types::Offset;

impl Writer {
    // ---- create --------------------------------------------------------------------------

    pub(super) fn create(
        &mut self,
        path: &str,
        request: CreateStream,
    ) -> Result<Created, CreateError> {
        let mut existing = self.find(path).map_err(storage::<CreateError>)?;
        if let Some(e) = existing.clone() {
            // A stream the request may not see holds the path, whatever its state.
            let blocked = if request.access.sees(e.owner) {
                CreateError::PathBlocked
            } else {
                CreateError::PathTaken
            };
            if self.is_deleted(&e).map_err(storage::<CreateError>)? {
                return Err(blocked);
            }
            if e.expired(now_ms()) {
                self.remove(&e).map_err(storage::<CreateError>)?;
                if self.is_deleted(&e).map_err(storage::<CreateError>)?
                    && self.find(path).map_err(storage::<CreateError>)?.is_some()
                {
                    return Err(blocked);
                }
                existing = None;
            } else if !request.access.sees(e.owner) {
                return Err(CreateError::PathTaken);
            }
        }

        // Resolve the fork source first: its content type is the default for the fork.
        let source = match &request.fork {
            Some(fork) => {
                let src = self.find(&fork.source).map_err(storage::<CreateError>)?;
                let Some(src) = src.filter(|s| request.source_access.sees(s.owner)) else {
                    return Err(CreateError::SourceNotFound);
                };
                if self.is_deleted(&src).map_err(storage::<CreateError>)? {
                    return Err(CreateError::SourceGone);
                }
                if src.expired(now_ms()) {
                    self.expire(&src).map_err(storage::<CreateError>)?;
                    return Err(CreateError::SourceNotFound);
                }
                Some(src)
            }
            None => None,
        };
        let config = lifecycle::stream_config(&request, source.as_ref().map(|src| &src.config))?;

        let fork = match (&request.fork, source) {
            (Some(spec), Some(src)) => Some(self.resolve_fork(spec, src)?),
            _ => None,
        };

        if let Some(existing) = existing {
            let state = self
                .state(existing.id)
                .map_err(storage::<CreateError>)?
                .ok_or_else(|| StoreError::corrupt("stream row vanished"))?;
            let same = lifecycle::same_stream(
                &Shape {
                    config: &existing.config,
                    closed: state.closed,
                    fork: existing.fork.as_ref().map(|f| &f.spec),
                },
                &Shape {
                    config: &config,
                    closed: request.closed,
                    fork: fork.as_ref().map(|f| &f.spec),
                },
            );
            if !same {
                return Err(CreateError::ConfigMismatch);
            }
            return Ok(Created {
                created: false,
                info: StreamInfo {
                    closed: state.closed,
                    next: Offset(state.tail),
                    ..existing.info()
                },
            });
        }

        let json = tether_types::headers::is_json(&config.content_type);
        let body = stored_body(json, &request.body, true)
            .map_err(|e| CreateError::InvalidBody(e.to_string()))?;

        let start = fork.as_ref().map_or(0, |f| f.point);
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
            )
            .and_then(|mut s| {
                s.execute(params![
                    path,
                    config.content_type,
                    config.ttl_secs.map(|t| t as i64),
                    config.expires_at.map(|t| t.timestamp_millis()),
                    now,
                    start as i64,
                    request.closed,
                    fork_id,
                    fork_path,
                    fork_anchor,
                    fork_sub,
                    request.owner
                ])
            })
            .map_err(storage::<CreateError>)?;
        let id = self.conn.last_insert_rowid();
        if let Some(f) = &fork {
            let src_state = self
                .state(f.source.id)
                .map_err(storage::<CreateError>)?
                .ok_or(CreateError::SourceNotFound)?;
            src_state.refcount += 1;
            src_state.dirty = true;
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
            .owned_by(request.owner),
        );
        let tail = match &body {
            Some(body) => self
                .insert_chunk(&entry, start, body)
                .map_err(storage::<CreateError>)?,
            None => start,
        };
        self.states.insert(
            id,
            StreamState {
                tail,
                closed: request.closed,
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
        Ok(Created {
            created: true,
            info: StreamInfo {
                next: Offset(tail),
                closed: request.closed,
                ..entry.info()
            },
        })
    }

    /// Checks a fork request against the source and finds the fork point.
    pub(super) fn resolve_fork(
        &mut self,
        spec: &ForkFrom,
        source: Arc<Entry>,
    ) -> Result<ForkLink, CreateError> {
        let src_tail = self
            .state(source.id)
            .map_err(storage::<CreateError>)?
            .ok_or(CreateError::SourceNotFound)?
            .tail;
        let anchor = lifecycle::fork_anchor(spec, src_tail)?;
        let boundary = if lifecycle::needs_boundary(spec) {
            self.batch_end_at(&source, anchor, src_tail)
                .map_err(storage::<CreateError>)?
        } else {
            None
        };
        let (point, spec) = lifecycle::fork_point(spec, anchor, boundary)?;
        Ok(ForkLink {
            source,
            point,
            spec,
        })
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
