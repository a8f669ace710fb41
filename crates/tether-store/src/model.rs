//! Requests, outcomes and errors of the stream store, in protocol terms.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tether_types::Offset;

use crate::error::{storage_failure, StorageFailure, StoreError};

/// A stream's internal identity. A stream re-created at the same path gets a new id, so
/// nothing cached for the old stream (ETags, live readers) can be confused with the new one.
pub type StreamId = i64;

/// The part of a stream's configuration that an idempotent PUT must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    pub content_type: String,
    pub ttl_secs: Option<u64>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Which streams a request may see: a stream is visible to its owner and to requests that
/// see everything (admins, and Tether's own calls). A stream without an owner (created
/// before streams had owners, or by Tether itself, such as a task's stream) is visible only
/// to those. Operations with an `Access` answer "not found" for a stream it does not see,
/// before any other check and without any effect, so that a hidden stream and a missing
/// one cannot be told apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Access {
    #[default]
    All,
    /// Only the streams this user owns.
    Owner(i64),
}

impl Access {
    pub fn sees(self, owner: Option<i64>) -> bool {
        match self {
            Access::All => true,
            Access::Owner(user) => owner == Some(user),
        }
    }
}

/// Creating a stream as a fork of another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkFrom {
    /// The source stream's path (without the `/v1/stream/` prefix).
    pub source: String,
    /// Divergence point; `None` means the source's tail.
    pub offset: Option<Offset>,
    /// Messages (JSON) or bytes (others) past `offset` that the fork also inherits.
    pub sub_offset: u64,
}

#[derive(Clone, Debug, Default)]
pub struct CreateStream {
    /// `None` only for forks, which then inherit the source's content type.
    pub content_type: Option<String>,
    pub ttl_secs: Option<u64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub closed: bool,
    pub fork: Option<ForkFrom>,
    /// Initial content; empty for none.
    pub body: Bytes,
    /// Who owns the new stream (a user id); `None` for none.
    pub owner: Option<i64>,
    /// What the request may see of a stream already at the path: one it may not see holds
    /// the path without being revealed ([`CreateError::PathTaken`]).
    pub access: Access,
    /// What the request may see of the fork source: a hidden source is not found.
    pub source_access: Access,
}

#[derive(Clone, Debug)]
pub struct Created {
    /// False when an identical stream already existed.
    pub created: bool,
    pub info: StreamInfo,
}

/// The `(Producer-Id, Producer-Epoch, Producer-Seq)` of an idempotent producer's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerStamp {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Append {
    /// The request's `Content-Type`, checked against the stream's when the body is not empty.
    pub content_type: Option<String>,
    pub body: Bytes,
    /// `Stream-Closed: true`: close after appending (or close only, with an empty body).
    pub close: bool,
    pub producer: Option<ProducerStamp>,
    /// `Stream-Seq`, compared byte-wise per stream.
    pub stream_seq: Option<String>,
    /// A stream this access does not see is not found.
    pub access: Access,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendStatus {
    /// New data (or a close) was committed.
    Appended,
    /// An idempotent producer repeated a request that was already applied; nothing changed.
    Duplicate,
    /// A close-only request on a stream that was already closed.
    AlreadyClosed,
}

#[derive(Clone, Debug)]
pub struct Appended {
    pub status: AppendStatus,
    pub next: Offset,
    pub closed: bool,
    /// Producer epoch and highest accepted sequence, when the request came from a producer.
    pub producer: Option<(u64, u64)>,
}

/// What HEAD shows.
#[derive(Clone, Debug)]
pub struct StreamInfo {
    pub id: StreamId,
    pub config: StreamConfig,
    /// The first position a read from the start returns.
    pub start: Offset,
    pub next: Offset,
    pub closed: bool,
}

impl StreamInfo {
    pub fn is_json(&self) -> bool {
        tether_types::headers::is_json(&self.config.content_type)
    }
}

/// One read's worth of committed data.
#[derive(Clone, Debug)]
pub struct ReadChunk {
    pub info: StreamInfo,
    /// Where this chunk starts.
    pub from: Offset,
    /// Byte streams: runs of bytes to concatenate. JSON streams: runs of one or more
    /// messages joined by commas (the stored form of an append), to join with commas and
    /// wrap in brackets.
    pub records: Vec<Bytes>,
    /// Where the next read should start.
    pub next: Offset,
    /// The chunk reaches the tail that was committed when the read began.
    pub up_to_date: bool,
}

impl ReadChunk {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The stream is closed and this chunk reaches its final offset: EOF.
    pub fn at_closed_end(&self) -> bool {
        self.up_to_date && self.info.closed
    }
}

/// Why a stream could not be found or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("stream not found")]
    NotFound,
    #[error("stream was deleted")]
    Gone,
    #[error("offset is past the end of the stream")]
    OffsetBeyondTail,
    #[error(transparent)]
    Storage(StoreError),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("a stream with a different configuration exists at this path")]
    ConfigMismatch,
    /// The path is held by a stream the request may not see; nothing else about it is said.
    #[error("another stream holds this path")]
    PathTaken,
    #[error("the path belongs to a deleted stream that forks still read from")]
    PathBlocked,
    #[error("fork source not found")]
    SourceNotFound,
    #[error("fork source was deleted")]
    SourceGone,
    #[error("fork content type differs from the source's")]
    ForkContentTypeMismatch,
    #[error("fork offset is beyond the source's tail")]
    ForkOffsetBeyondTail,
    #[error("fork sub-offset names a position past the next data boundary")]
    SubOffsetOutOfRange,
    #[error("invalid initial body: {0}")]
    InvalidBody(String),
    #[error(transparent)]
    Storage(StoreError),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("stream not found")]
    NotFound,
    #[error("stream was deleted")]
    Gone,
    #[error("stream is closed")]
    Closed { next: Offset },
    #[error("content type does not match the stream's")]
    ContentTypeMismatch,
    #[error("an append needs a body (or Stream-Closed: true)")]
    EmptyBody,
    #[error("invalid body: {0}")]
    InvalidBody(String),
    #[error("Stream-Seq must increase")]
    SeqConflict,
    #[error("stale producer epoch")]
    StaleEpoch { current: u64 },
    #[error("a new producer epoch must start at sequence 0")]
    EpochNeedsSeqZero,
    #[error("producer sequence gap")]
    SeqGap { expected: u64, received: u64 },
    #[error(transparent)]
    Storage(StoreError),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeleteError {
    #[error("stream not found")]
    NotFound,
    #[error("stream was deleted")]
    Gone,
    #[error(transparent)]
    Storage(StoreError),
}

impl From<LookupError> for AppendError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NotFound | LookupError::OffsetBeyondTail => AppendError::NotFound,
            LookupError::Gone => AppendError::Gone,
            LookupError::Storage(s) => AppendError::Storage(s),
        }
    }
}

impl From<LookupError> for DeleteError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NotFound | LookupError::OffsetBeyondTail => DeleteError::NotFound,
            LookupError::Gone => DeleteError::Gone,
            LookupError::Storage(s) => DeleteError::Storage(s),
        }
    }
}

storage_failure!(LookupError, CreateError, AppendError, DeleteError);
