//! The stream store on PostgreSQL.
//!
//! Nodes share nothing but the database. Whatever decides an offset happens under the
//! stream's row lock in one transaction ([`tx::StreamWrites`], used by the group commit in
//! [`batch`]), and reads take the tail from the committed row, then read chunks only below
//! it, so every node reads exactly what was committed, whichever node wrote it. Live readers
//! wait on a per-node watch of the tail that the LISTEN/NOTIFY bridge in [`tails`] keeps
//! moving with every node's commits.
//!
//! What a node caches is only what never changes for a stream id: its configuration and
//! fork chain ([`row::Identity`]). Tails, closure and deletion always come from the database
//! or the bridged watch.

mod announce;
mod batch;
mod recent;
mod row;
mod tails;
pub(crate) mod tx;

use crate::StoreError;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use deadpool_postgres::{Object, Pool};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::error::column;
use super::{PgOptions, PgStore};
use crate::chunk::{self, Chunk};
use crate::model::*;
use crate::tail::TailWatch;
use crate::StreamStore;
use batch::Batcher;
use row::{position, stored, ForkLink, Identity, StreamRow, COLUMNS};
use tails::Tails;
use tether_types::{Offset, ReadFrom};
use tx::StreamWrites;

pub use tails::LISTENER_APPLICATION_NAME;

/// Attempts of a transaction that hit a deadlock or serialisation failure.
const MAX_ATTEMPTS: usize = 4;
/// Chunk rows fetched per query while reading.
const CHUNKS_PER_QUERY: i64 = 256;
/// Identities kept before the cache starts over (they are cheap to load again).
const MAX_IDENTITIES: usize = 16_384;

/// What the node's background tasks share with it.
pub(crate) struct Shared {
    pub tails: Tails,
    /// Tells other nodes about this node's commits.
    pub announcer: announce::Announcer,
    /// Woken for every `tether_work` notification, and after the listener reconnects.
    pub work: Notify,
    pub listener_connects: AtomicU64,
    /// Chunk reads that went to the database rather than the recent-chunks cache.
    pub log_reads: AtomicU64,
}

/// The stream store's part of a [`PgStore`].
pub(crate) struct Streams {
    shared: Arc<Shared>,
    identities: Mutex<HashMap<StreamId, Arc<Identity>>>,
    batcher: Batcher,
    listener: Mutex<Option<JoinHandle<()>>>,
    announcing: JoinHandle<()>,
}

impl Streams {
    /// Starts the append batcher and the tail listener. Needs a tokio runtime.
    pub(crate) fn start(pool: &Pool, config: &tokio_postgres::Config, options: &PgOptions) -> Self {
        let (announcer, announcing) = announce::Announcer::start(config);
        let shared = Arc::new(Shared {
            tails: Tails::default(),
            announcer,
            work: Notify::new(),
            listener_connects: AtomicU64::new(0),
            log_reads: AtomicU64::new(0),
        });
        let listener = tokio::spawn(tails::listen(config.clone(), shared.clone()));
        // At most half the pool for append lanes leaves the rest for reads and the control
        // plane. More lanes than cores make smaller batches that compete for the CPU: on 2
        // cores, 100 streams under 200 writers ran ~65k appends/s with 2 lanes, ~29k with 8.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let lanes = (options.pool_size / 2).min(cores);
        let batcher = Batcher::start(pool.clone(), shared.clone(), lanes);
        Streams {
            shared,
            identities: Mutex::new(HashMap::new()),
            batcher,
            listener: Mutex::new(Some(listener)),
            announcing,
        }
    }

    fn stop_listener(&self) {
        if let Some(listener) = self.listener.lock().take() {
            listener.abort();
        }
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.stop_listener();
        self.announcing.abort();
    }
}

/// The chunks of stream `id` from the one holding `pos` to below `hi`, in order. Reads ask
/// only below a tail they read from the committed row, so everything found is committed.
async fn fetch_chunks(
    client: &Object,
    id: StreamId,
    pos: u64,
    hi: u64,
) -> Result<Vec<Chunk>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT pos, end_pos, data FROM chunks
             WHERE stream_id = $1 AND end_pos > $2 AND pos < $3
             ORDER BY end_pos LIMIT $4",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[&id, &stored(pos)?, &stored(hi)?, &CHUNKS_PER_QUERY],
        )
        .await?;
    let mut chunks = Vec::with_capacity(rows.len());
    for row in rows {
        let (pos, end, data): (i64, i64, Vec<u8>) =
            (column(&row, 0)?, column(&row, 1)?, column(&row, 2)?);
        chunks.push(Chunk {
            pos: position(pos, "chunk position")?,
            end: position(end, "chunk end")?,
            data: Bytes::from(data),
        });
    }
    Ok(chunks)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Runs `attempt` until it succeeds, fails for good, or has been tried [`MAX_ATTEMPTS`] times:
/// a retryable conflict (deadlock, serialisation failure) is tried again from the start.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if e.is_retryable() && n < MAX_ATTEMPTS => {
                tracing::debug!(error = %e, attempt = n, "stream transaction will be retried");
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

impl PgStore {
    /// Woken whenever some node announces claimable work (`pg_notify('tether_work', '')`),
    /// and after the listener reconnects (announcements may have been missed meanwhile).
    /// Waiters should use `notified()` together with a periodic re-check.
    pub fn work_notify(&self) -> &Notify {
        &self.streams.shared.work
    }

    /// How many times this node's tail listener has connected, started listening and caught
    /// up with what it may have missed (for metrics and tests): once this counts up, every
    /// later commit reaches this node's watchers.
    pub fn listener_connects(&self) -> u64 {
        self.streams
            .shared
            .listener_connects
            .load(Ordering::Relaxed)
    }

    /// How many chunk reads went to the database instead of the recent-chunks cache (for
    /// metrics and tests).
    pub fn log_reads(&self) -> u64 {
        self.streams.shared.log_reads.load(Ordering::Relaxed)
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.streams.shared
    }

    pub(crate) fn tails(&self) -> &Tails {
        &self.streams.shared.tails
    }

    /// The live stream at `path`, if `access` sees it, and a connection to keep reading with.
    /// Expired streams are removed on the way (and not found). `touch`: counts for the
    /// sliding TTL.
    async fn live(
        &self,
        access: Access,
        path: &str,
        touch: bool,
    ) -> Result<(Object, StreamRow), LookupError> {
        let client = self.client().await?;
        let storage = |e: tokio_postgres::Error| LookupError::Storage(e.into());
        let sql = format!("SELECT {COLUMNS} FROM streams WHERE path = $1");
        let statement = client.prepare_cached(&sql).await.map_err(storage)?;
        let row = client
            .query_opt(&statement, &[&path])
            .await
            .map_err(storage)?;
        let Some(row) = row else {
            return Err(LookupError::NotFound);
        };
        let row = StreamRow::parse(&row)?;
        if !access.sees(row.owner) {
            return Err(LookupError::NotFound);
        }
        if row.soft_deleted {
            return Err(LookupError::Gone);
        }
        let now = now_ms();
        if row.expired(now) {
            // Not while holding a connection: the removal needs one of its own.
            drop(client);
            // Not found either way: expired here, or removed by someone else meanwhile.
            let _removed: Result<(), DeleteError> =
                retrying(|| self.remove_attempt(Access::All, path, true)).await?;
            return Err(LookupError::NotFound);
        }
        // Only streams with a sliding TTL pay for a write per access.
        if touch && row.config.ttl_secs.is_some() {
            let statement = client
                .prepare_cached(
                    "UPDATE streams SET last_access_ms = GREATEST(last_access_ms, $2)
                     WHERE id = $1",
                )
                .await
                .map_err(storage)?;
            client
                .execute(&statement, &[&row.id, &now])
                .await
                .map_err(storage)?;
        }
        Ok((client, row))
    }

    /// The identity of `row`'s stream, from the cache or loaded with its fork chain.
    async fn identity(
        &self,
        client: &Object,
        row: &StreamRow,
    ) -> Result<Arc<Identity>, StoreError> {
        let cached = |id: StreamId| self.streams.identities.lock().get(&id).cloned();
        if let Some(identity) = cached(row.id) {
            return Ok(identity);
        }
        // Up the fork chain until a known identity or the root.
        let mut chain = vec![row.clone()];
        let mut base = None;
        while let Some((source_id, _)) = chain.last().and_then(|r| r.fork.clone()) {
            if let Some(identity) = cached(source_id) {
                base = Some(identity);
                break;
            }
            if chain.len() > MAX_IDENTITIES {
                return Err(StoreError::corrupt("a fork chain does not end"));
            }
            let sql = format!("SELECT {COLUMNS} FROM streams WHERE id = $1");
            let source = client
                .query_opt(&sql, &[&source_id])
                .await?
                .ok_or_else(|| StoreError::corrupt("a fork's source row is missing"))?;
            chain.push(StreamRow::parse(&source)?);
        }
        let mut identities = self.streams.identities.lock();
        if identities.len() >= MAX_IDENTITIES {
            identities.clear();
        }
        let mut below = base;
        for r in chain.into_iter().rev() {
            let fork = match &r.fork {
                Some(_) => Some(ForkLink {
                    source: below
                        .take()
                        .ok_or_else(|| StoreError::corrupt("a fork's source is missing"))?,
                    point: r.start,
                }),
                None => None,
            };
            let identity = Arc::new(Identity {
                id: r.id,
                json: tether_types::headers::is_json(&r.config.content_type),
                start: r.start,
                fork,
            });
            identities.insert(r.id, identity.clone());
            below = Some(identity);
        }
        below.ok_or_else(|| StoreError::corrupt("no identity built"))
    }

    /// One try at a create, committed even when the request is refused (a refusal may have
    /// removed an expired stream on the way).
    async fn create_attempt(
        &self,
        path: &str,
        request: &CreateStream,
    ) -> Result<Result<Created, CreateError>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut writes = StreamWrites::new();
        let outcome = writes.create_stream(&tx, path, request.clone()).await;
        if let Err(CreateError::Storage(e)) = outcome {
            return Err(e);
        }
        self.commit(tx, writes).await?;
        Ok(outcome)
    }

    /// One try at deleting the stream at `path`; with `only_expired`, only if its time is up
    /// (an expiry found by a lookup, which another access may have prevented meanwhile).
    async fn remove_attempt(
        &self,
        access: Access,
        path: &str,
        only_expired: bool,
    ) -> Result<Result<(), DeleteError>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut writes = StreamWrites::new();
        let row = writes.lock_row(&tx, path).await?;
        let outcome = match row.filter(|r| access.sees(r.owner)) {
            None => Err(DeleteError::NotFound),
            Some(row) if row.soft_deleted => Err(DeleteError::Gone),
            Some(row) => {
                let expired = row.expired(writes.now_ms());
                if expired || !only_expired {
                    writes.remove(&tx, &row).await?;
                }
                if expired {
                    Err(DeleteError::NotFound)
                } else {
                    Ok(())
                }
            }
        };
        self.commit(tx, writes).await?;
        Ok(outcome)
    }

    /// Flushes `writes`, commits, and publishes the new tails.
    async fn commit(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        mut writes: StreamWrites,
    ) -> Result<(), StoreError> {
        writes.flush(&tx).await?;
        tx.commit().await?;
        writes.published(self);
        Ok(())
    }
}

#[async_trait]
impl StreamStore for PgStore {
    async fn create(&self, path: &str, request: CreateStream) -> Result<Created, CreateError> {
        retrying(|| self.create_attempt(path, &request))
            .await
            .unwrap_or_else(|e| Err(CreateError::Storage(e)))
    }

    async fn append(&self, path: &str, request: Append) -> Result<Appended, AppendError> {
        self.streams.batcher.append(path, request).await
    }

    async fn read_as(
        &self,
        access: Access,
        path: &str,
        from: ReadFrom,
        max_bytes: usize,
    ) -> Result<ReadChunk, LookupError> {
        let (client, row) = self.live(access, path, true).await?;
        let end = row.tail;
        let start = chunk::read_start(from, end)?;
        let identity = self.identity(&client, &row).await?;
        let fetch = |stream: Arc<Identity>, pos, hi, _budget| {
            let client = &client;
            async move {
                let recent = self.tails().recent(stream.id);
                if let Some(chunks) = recent.as_ref().and_then(|r| r.lock().read(pos, hi)) {
                    return Ok(chunks);
                }
                self.streams
                    .shared
                    .log_reads
                    .fetch_add(1, Ordering::Relaxed);
                let chunks = fetch_chunks(client, stream.id, pos, hi).await?;
                if let Some(recent) = recent {
                    let mut run = recent.lock();
                    chunks.iter().for_each(|c| run.record(c.clone()));
                }
                Ok::<_, StoreError>(chunks)
            }
        };
        let read = chunk::read_view(&identity, start, end, max_bytes, fetch).await?;
        Ok(chunk::read_chunk(row.info(), start, end, read))
    }

    async fn head_as(&self, access: Access, path: &str) -> Result<StreamInfo, LookupError> {
        let (_, row) = self.live(access, path, false).await?;
        Ok(row.info())
    }

    async fn watch_as(
        &self,
        access: Access,
        path: &str,
    ) -> Result<(StreamInfo, TailWatch), LookupError> {
        let (client, row) = self.live(access, path, true).await?;
        let known = crate::tail::Tail {
            next: row.tail,
            closed: row.closed,
            deleted: false,
        };
        let watch = self.tails().subscribe(row.id, known);
        // Registered: every later commit reaches this watch. One more read of the tail
        // covers any commit between the lookup and the registration.
        let sql = format!("SELECT {} FROM streams WHERE id = $1", tails::TAIL_COLUMNS);
        let again = match client.prepare_cached(&sql).await {
            Ok(statement) => client.query_opt(&statement, &[&row.id]).await,
            Err(e) => Err(e),
        };
        let tail = match again.map_err(StoreError::from)? {
            Some(r) => tails::parse_tail(&r)?.1,
            None => tails::gone(),
        };
        self.tails().merge(row.id, tail);
        let current = watch.current();
        Ok((
            StreamInfo {
                next: Offset(current.next),
                closed: current.closed,
                ..row.info()
            },
            watch,
        ))
    }

    async fn delete_as(&self, access: Access, path: &str) -> Result<(), DeleteError> {
        retrying(|| self.remove_attempt(access, path, false))
            .await
            .unwrap_or_else(|e| Err(DeleteError::Storage(e)))
    }

    async fn shutdown(&self) {
        // Queued appends still run and commit; then the listener stops.
        self.streams.batcher.stop().await;
        self.streams.stop_listener();
    }
}
