//! A stream's row, and the parts of it that never change once the stream exists.

use crate::StoreError;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use tokio_postgres::Row;

use crate::model::*;
use tether_types::Offset;

/// The columns [`StreamRow::parse`] reads, in its order.
pub(super) const COLUMNS: &str =
    "id, path, content_type, ttl_secs, expires_at_ms, last_access_ms, \
     start_pos, tail, closed, closed_by_producer, closed_by_epoch, closed_by_seq, last_stream_seq, \
     fork_source_id, fork_source_path, fork_anchor, fork_sub, refcount, soft_deleted, owner_id";

/// One row of `streams`, checked: a negative position or a half-written closer in the
/// database is a storage error, never a panic.
#[derive(Clone, Debug)]
pub(super) struct StreamRow {
    pub id: StreamId,
    pub path: String,
    pub config: StreamConfig,
    pub last_access_ms: i64,
    /// Where the stream's own records start: the fork point for forks, else 0.
    pub start: u64,
    pub tail: u64,
    pub closed: bool,
    pub closed_by: Option<ProducerStamp>,
    pub last_stream_seq: Option<String>,
    /// The fork source's id and the resolved fork request.
    pub fork: Option<(StreamId, ForkFrom)>,
    pub refcount: i64,
    pub soft_deleted: bool,
    /// The user who owns the stream (see [`crate::Access`]).
    pub owner: Option<i64>,
}

pub(super) fn position(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::corrupt(format!("stored {what} is negative: {value}")))
}

/// A position as PostgreSQL stores it (BIGINT).
pub(super) fn stored(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::corrupt(format!("position {value} is too large to store")))
}

impl StreamRow {
    pub fn parse(row: &Row) -> Result<Self, StoreError> {
        let get = |e| StoreError::corrupt_by("a stream row", e);
        let ttl: Option<i64> = row.try_get(3).map_err(get)?;
        let expires_ms: Option<i64> = row.try_get(4).map_err(get)?;
        let expires_at = match expires_ms {
            Some(ms) => Some(Utc.timestamp_millis_opt(ms).single().ok_or_else(|| {
                StoreError::corrupt(format!("stored expiry time is invalid: {ms}"))
            })?),
            None => None,
        };
        let closed_by = match row.try_get::<_, Option<String>>(9).map_err(get)? {
            Some(id) => {
                let epoch: Option<i64> = row.try_get(10).map_err(get)?;
                let seq: Option<i64> = row.try_get(11).map_err(get)?;
                let (Some(epoch), Some(seq)) = (epoch, seq) else {
                    return Err(StoreError::corrupt(
                        "stored closer lacks its epoch or sequence",
                    ));
                };
                Some(ProducerStamp {
                    id,
                    epoch: position(epoch, "closer epoch")?,
                    seq: position(seq, "closer sequence")?,
                })
            }
            None => None,
        };
        let fork = match row.try_get::<_, Option<i64>>(13).map_err(get)? {
            Some(source_id) => {
                let source: Option<String> = row.try_get(14).map_err(get)?;
                let anchor: Option<i64> = row.try_get(15).map_err(get)?;
                let sub: Option<i64> = row.try_get(16).map_err(get)?;
                let source = source
                    .ok_or_else(|| StoreError::corrupt("stored fork lacks its source path"))?;
                Some((
                    source_id,
                    ForkFrom {
                        source,
                        offset: match anchor {
                            Some(a) => Some(Offset(position(a, "fork anchor")?)),
                            None => None,
                        },
                        sub_offset: position(sub.unwrap_or(0), "fork sub-offset")?,
                    },
                ))
            }
            None => None,
        };
        Ok(StreamRow {
            id: row.try_get(0).map_err(get)?,
            path: row.try_get(1).map_err(get)?,
            config: StreamConfig {
                content_type: row.try_get(2).map_err(get)?,
                ttl_secs: match ttl {
                    Some(t) => Some(position(t, "TTL")?),
                    None => None,
                },
                expires_at,
            },
            last_access_ms: row.try_get(5).map_err(get)?,
            start: position(row.try_get(6).map_err(get)?, "start")?,
            tail: position(row.try_get(7).map_err(get)?, "tail")?,
            closed: row.try_get(8).map_err(get)?,
            closed_by,
            last_stream_seq: row.try_get(12).map_err(get)?,
            fork,
            refcount: row.try_get(17).map_err(get)?,
            soft_deleted: row.try_get(18).map_err(get)?,
            owner: row.try_get(19).map_err(get)?,
        })
    }

    pub fn expired(&self, now_ms: i64) -> bool {
        crate::lifecycle::expired(&self.config, self.last_access_ms, now_ms)
    }

    /// What HEAD shows, given the stream's identity.
    pub fn info(&self) -> StreamInfo {
        StreamInfo {
            id: self.id,
            config: self.config.clone(),
            start: Offset::START,
            next: Offset(self.tail),
            closed: self.closed,
        }
    }
}

/// What never changes about a stream once it exists, so every node may cache it by id: its
/// configuration and where its view reads from. (Which stream a *path* names does change.)
#[derive(Debug)]
pub(crate) struct Identity {
    pub id: StreamId,
    pub json: bool,
    pub start: u64,
    pub fork: Option<ForkLink>,
}

#[derive(Debug)]
pub(crate) struct ForkLink {
    pub source: Arc<Identity>,
    /// Where the fork diverges: positions below come from `source`.
    pub point: u64,
}

crate::chunk::view_link!(Identity);
