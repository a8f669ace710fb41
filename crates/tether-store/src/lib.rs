//! The stream store: durable, append-only logs addressed by path.
//!
//! [`StreamStore`] is the one interface the server uses. It speaks in the terms of the Durable
//! Streams protocol (create, append, read, delete, watch the tail) so that each backend can
//! enforce the protocol's rules inside its own transaction: the embedded SQLite store does it in
//! its single writer thread, the PostgreSQL store under the stream's row lock. Callers
//! never see which.

mod body;
mod chunk;
pub mod control;
pub mod coord;
mod create;
mod error;
mod execution;
mod lifecycle;
pub mod model;
pub mod pg;
mod rules;
pub mod sqlite;
pub mod tail;

use async_trait::async_trait;

pub use control::*;
pub use coord::{Coordinator, Held, Leadership};
pub use error::{Cause, StoreError};
pub use model::*;
pub use pg::{PgOptions, PgStore, LISTENER_APPLICATION_NAME};
pub use sqlite::{SqliteStore, SweepPolicy};
pub use tail::{Tail, TailWatch};

#[async_trait]
pub trait StreamStore: Send + Sync + 'static {
    /// Creates a stream, or confirms that an identical one exists (idempotent PUT).
    async fn create(&self, path: &str, request: CreateStream) -> Result<Created, CreateError>;

    /// Appends to (and optionally closes) a stream. Returns only after the data is durable.
    async fn append(&self, path: &str, request: Append) -> Result<Appended, AppendError>;

    /// Reads committed data from `from` onwards, at most about `max_bytes` (always at least one
    /// record when one exists). Counts as an access for the sliding TTL.
    async fn read(
        &self,
        path: &str,
        from: ReadFrom,
        max_bytes: usize,
    ) -> Result<ReadChunk, LookupError> {
        self.read_as(Access::All, path, from, max_bytes).await
    }

    /// [`Self::read`] of a stream `access` sees; any other is not found, and not touched.
    async fn read_as(
        &self,
        access: Access,
        path: &str,
        from: ReadFrom,
        max_bytes: usize,
    ) -> Result<ReadChunk, LookupError>;

    /// Metadata without touching the sliding TTL.
    async fn head(&self, path: &str) -> Result<StreamInfo, LookupError> {
        self.head_as(Access::All, path).await
    }

    /// [`Self::head`] of a stream `access` sees; any other is not found.
    async fn head_as(&self, access: Access, path: &str) -> Result<StreamInfo, LookupError>;

    /// A watch on the stream's committed tail, for live readers. Counts as an access.
    async fn watch(&self, path: &str) -> Result<(StreamInfo, TailWatch), LookupError> {
        self.watch_as(Access::All, path).await
    }

    /// [`Self::watch`] of a stream `access` sees; any other is not found, and not touched.
    async fn watch_as(
        &self,
        access: Access,
        path: &str,
    ) -> Result<(StreamInfo, TailWatch), LookupError>;

    /// Deletes a stream; soft-deletes it while forks still read from it.
    async fn delete(&self, path: &str) -> Result<(), DeleteError> {
        self.delete_as(Access::All, path).await
    }

    /// [`Self::delete`] of a stream `access` sees; any other is not found, and kept.
    async fn delete_as(&self, access: Access, path: &str) -> Result<(), DeleteError>;

    /// Finishes in-flight writes and stops the store's background threads.
    async fn shutdown(&self);
}

pub use tether_types::ReadFrom;
