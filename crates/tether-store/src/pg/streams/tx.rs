//! Stream writes inside one PostgreSQL transaction.
//!
//! [`StreamWrites`] is what both the append path's group commit and the control plane's task
//! transitions use to write streams: it locks a stream's row (`SELECT ... FOR UPDATE`), which
//! is what serialises appends to one stream across nodes, so offsets follow commit order (G2);
//! it checks each append with the protocol's rules against the state it loaded under that
//! lock; and it buffers what to write, so that one transaction makes one multi-row insert of
//! chunks, one of producer rows and one update of stream rows, however many appends it holds.
//!
//! The statements of the append path are sent with their parameter types
//! (`query_typed`), which saves the round trip that preparing them would cost: the caller's
//! transaction comes with no statement cache.

use crate::StoreError;
use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use chrono::Utc;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use super::row::{position, stored, StreamRow, COLUMNS};
use super::tails::gone;
use super::Shared;
use crate::body::PreparedAppend;
use crate::chunk::Chunk;
use crate::create::{CreateTx, NewStream};
use crate::model::*;
use crate::pg::error::column;
use crate::pg::PgStore;
use crate::rules::{check_append, AppendCheck, Verdict};
use crate::tail::Tail;
use tether_types::Offset;

/// A locked stream's protocol state, changed in step with the transaction.
struct Locked {
    content_type: String,
    tail: u64,
    closed: bool,
    closed_by: Option<ProducerStamp>,
    last_stream_seq: Option<String>,
    /// Producers loaded so far: `None` for one this stream has not seen.
    producers: HashMap<String, Option<(u64, u64)>>,
    /// Producers whose state this transaction changed.
    changed_producers: HashSet<String>,
    /// The row must be rewritten (tail, closure, `Stream-Seq`, last access).
    dirty: bool,
}

/// The stream writes of one PostgreSQL transaction.
pub(crate) struct StreamWrites {
    streams: HashMap<StreamId, Locked>,
    /// New chunks: (stream, pos, end, data).
    chunks: Vec<(StreamId, u64, u64, Bytes)>,
    /// Chunks written by `flush`, for the recent-chunks cache once committed.
    written: Vec<(StreamId, u64, u64, Bytes)>,
    /// Streams deleted (or soft-deleted) in this transaction.
    deleted: Vec<StreamId>,
    /// Tails to announce, computed by `flush`.
    notices: Vec<(StreamId, Tail)>,
    now_ms: i64,
}

impl Default for StreamWrites {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamWrites {
    pub(crate) fn new() -> Self {
        StreamWrites {
            streams: HashMap::new(),
            chunks: Vec::new(),
            written: Vec::new(),
            deleted: Vec::new(),
            notices: Vec::new(),
            now_ms: Utc::now().timestamp_millis(),
        }
    }

    pub(super) fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Locks the live stream at `path` (SELECT ... FOR UPDATE) and loads what appends are
    /// checked against. Ok(None): no such live stream.
    // The control plane's task transitions are the callers.
    pub(crate) async fn lock(
        &mut self,
        tx: &Transaction<'_>,
        path: &str,
    ) -> Result<Option<StreamId>, StoreError> {
        match self.lock_row(tx, path).await? {
            Some(row) if !row.soft_deleted && !row.expired(self.now_ms) => {
                self.adopt(&row);
                Ok(Some(row.id))
            }
            _ => Ok(None),
        }
    }

    /// The row at `path`, locked, whatever its state.
    pub(super) async fn lock_row(
        &mut self,
        tx: &Transaction<'_>,
        path: &str,
    ) -> Result<Option<StreamRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM streams WHERE path = $1 FOR UPDATE");
        match tx.query_typed_opt(&sql, &[(&path, Type::TEXT)]).await {
            Ok(Some(row)) => StreamRow::parse(&row).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The rows at `paths`, locked in id order: every node locks in that order, so batches
    /// that share streams wait for each other instead of deadlocking.
    pub(super) async fn lock_paths(
        &mut self,
        tx: &Transaction<'_>,
        paths: &[&str],
    ) -> Result<HashMap<String, StreamRow>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM streams WHERE path = ANY($1) ORDER BY id FOR UPDATE");
        let rows = match tx.query_typed(&sql, &[(&paths, Type::TEXT_ARRAY)]).await {
            Ok(rows) => rows,
            Err(e) => return Err(e.into()),
        };
        let mut out = HashMap::with_capacity(rows.len());
        for row in &rows {
            let row = StreamRow::parse(row)?;
            out.insert(row.path.clone(), row);
        }
        Ok(out)
    }

    /// Takes a row this transaction locked as the starting state of its appends. A stream
    /// already taken keeps the state this transaction gave it.
    pub(super) fn adopt(&mut self, row: &StreamRow) {
        self.streams.entry(row.id).or_insert_with(|| Locked {
            content_type: row.config.content_type.clone(),
            tail: row.tail,
            closed: row.closed,
            closed_by: row.closed_by.clone(),
            last_stream_seq: row.last_stream_seq.clone(),
            producers: HashMap::new(),
            changed_producers: HashSet::new(),
            dirty: false,
        });
    }

    /// `row`'s tail and closure as of this point in the transaction.
    fn current(&self, row: &StreamRow) -> (u64, bool) {
        match self.streams.get(&row.id) {
            Some(s) => (s.tail, s.closed),
            None => (row.tail, row.closed),
        }
    }

    /// Creates a plain (non-fork) stream, with an optional initial body, in this transaction.
    /// (Forks work too: this is the one create path of the PostgreSQL store.) An identical
    /// stream already at `path` is not an error: its id is returned.
    pub(crate) async fn create(
        &mut self,
        tx: &Transaction<'_>,
        path: &str,
        request: CreateStream,
    ) -> Result<StreamId, CreateError> {
        self.create_stream(tx, path, request)
            .await
            .map(|c| c.info.id)
    }

    /// Creates a stream or fork, or confirms that an identical one exists (idempotent PUT):
    /// [`crate::create`] over this transaction's steps ([`PgCreate`]).
    pub(super) async fn create_stream(
        &mut self,
        tx: &Transaction<'_>,
        path: &str,
        request: CreateStream,
    ) -> Result<Created, CreateError> {
        crate::create::create(&mut PgCreate { writes: self, tx }, path, &request).await
    }

    /// The end of the append that starts at `pos` in `source`'s view (its own chunks or those
    /// it inherits), clipped to where that view stops; `None` if no append starts there.
    async fn boundary(
        &mut self,
        tx: &Transaction<'_>,
        source: &StreamRow,
        pos: u64,
        limit: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut current = source.clone();
        let mut limit = limit;
        loop {
            if pos >= current.start {
                if let Some((_, _, end, _)) = self
                    .chunks
                    .iter()
                    .rev()
                    .find(|(id, p, _, _)| *id == current.id && *p == pos)
                {
                    return Ok(Some((*end).min(limit)));
                }
                let found = tx
                    .query_opt(
                        "SELECT pos, end_pos FROM chunks WHERE stream_id = $1 AND end_pos > $2
                         ORDER BY end_pos LIMIT 1",
                        &[&current.id, &stored(pos)?],
                    )
                    .await?;
                let Some(found) = found else {
                    return Ok(None);
                };
                let start = position(column(&found, 0)?, "chunk")?;
                let end = position(column(&found, 1)?, "chunk")?;
                return Ok((start == pos).then_some(end.min(limit)));
            }
            let Some((source_id, _)) = &current.fork else {
                return Ok(None);
            };
            limit = limit.min(current.start);
            let sql = format!("SELECT {COLUMNS} FROM streams WHERE id = $1");
            let row = tx.query_opt(&sql, &[source_id]).await?;
            let Some(row) = row else {
                return Ok(None);
            };
            current = StreamRow::parse(&row)?;
        }
    }

    /// One append to a stream this value locked or created (protocol rules via
    /// rules::check_append).
    pub(crate) async fn append(
        &mut self,
        tx: &Transaction<'_>,
        id: StreamId,
        append: PreparedAppend,
    ) -> Result<Appended, AppendError> {
        let PreparedAppend { request, body } = append;
        let Some(state) = self.streams.get(&id) else {
            return Err(AppendError::NotFound);
        };
        let producer = match &request.producer {
            Some(p) => match state.producers.get(&p.id) {
                Some(known) => *known,
                None => {
                    let known = self.load_producer(tx, id, &p.id).await?;
                    if let Some(state) = self.streams.get_mut(&id) {
                        state.producers.insert(p.id.clone(), known);
                    }
                    known
                }
            },
            None => None,
        };
        let Some(state) = self.streams.get_mut(&id) else {
            return Err(AppendError::NotFound);
        };
        let check = AppendCheck {
            content_type: &state.content_type,
            tail: state.tail,
            closed: state.closed,
            closed_by: state.closed_by.as_ref(),
            last_stream_seq: state.last_stream_seq.as_deref(),
            producer,
        };
        match check_append(&check, &request, body.as_ref().map(|_| ()))? {
            Verdict::Answer(answer) => return Ok(answer),
            Verdict::Write => {}
        }
        let body = body?;

        // Written: the row's tail, closure and last access change.
        state.dirty = true;
        let first = state.tail;
        if let Some(body) = body {
            state.tail = first + body.units;
            self.chunks.push((id, first, state.tail, body.data));
        }
        if let Some(seq) = request.stream_seq {
            state.last_stream_seq = Some(seq);
        }
        if let Some(p) = &request.producer {
            state.producers.insert(p.id.clone(), Some((p.epoch, p.seq)));
            state.changed_producers.insert(p.id.clone());
            if request.close {
                state.closed_by = Some(p.clone());
            }
        }
        if request.close {
            state.closed = true;
        }
        Ok(Appended {
            status: AppendStatus::Appended,
            next: Offset(state.tail),
            closed: state.closed,
            producer: request.producer.as_ref().map(|p| (p.epoch, p.seq)),
        })
    }

    async fn load_producer(
        &mut self,
        tx: &Transaction<'_>,
        id: StreamId,
        producer: &str,
    ) -> Result<Option<(u64, u64)>, AppendError> {
        let row = tx
            .query_typed_opt(
                "SELECT epoch, last_seq FROM producers WHERE stream_id = $1 AND producer_id = $2",
                &[(&id, Type::INT8), (&producer, Type::TEXT)],
            )
            .await
            .map_err(StoreError::from)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let epoch: i64 = column(&row, 0)?;
        let seq: i64 = column(&row, 1)?;
        Ok(Some((
            position(epoch, "producer epoch")?,
            position(seq, "producer sequence")?,
        )))
    }

    /// Deletes the stream `row` (locked by this transaction): softly while forks read from
    /// it, else for good, cascading to soft-deleted sources that no fork needs any more.
    pub(super) async fn remove(
        &mut self,
        tx: &Transaction<'_>,
        row: &StreamRow,
    ) -> Result<(), StoreError> {
        if row.refcount > 0 {
            tx.execute(
                "UPDATE streams SET soft_deleted = true WHERE id = $1",
                &[&row.id],
            )
            .await?;
            self.streams.remove(&row.id);
            self.deleted.push(row.id);
            return Ok(());
        }
        let mut current = Some((row.id, row.fork.as_ref().map(|(source, _)| *source)));
        let mut seen = HashSet::new();
        while let Some((id, source)) = current.take() {
            if !seen.insert(id) {
                break;
            }
            for sql in [
                "DELETE FROM chunks WHERE stream_id = $1",
                "DELETE FROM producers WHERE stream_id = $1",
                "DELETE FROM streams WHERE id = $1",
            ] {
                tx.execute(sql, &[&id]).await?;
            }
            self.streams.remove(&id);
            self.chunks.retain(|(stream, _, _, _)| *stream != id);
            self.deleted.push(id);
            let Some(source) = source else {
                break;
            };
            let released = tx
                .query_opt(
                    "UPDATE streams SET refcount = refcount - 1 WHERE id = $1
                     RETURNING refcount, soft_deleted, fork_source_id",
                    &[&source],
                )
                .await?;
            if let Some(r) = released {
                let refcount: i64 = column(&r, 0)?;
                let soft_deleted: bool = column(&r, 1)?;
                let next: Option<i64> = column(&r, 2)?;
                if refcount <= 0 && soft_deleted {
                    current = Some((source, next));
                }
            }
        }
        Ok(())
    }

    /// Writes what is buffered (chunks, producer rows, stream rows). Once, before commit; the
    /// new tails are announced after it ([`Self::publish_to`]).
    ///
    /// The (at most three) statements are sent together, pipelined on the connection, so the
    /// flush costs one round trip rather than four.
    pub(crate) async fn flush(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let chunks = ChunkRows::of(&self.chunks)?;
        let producers = self.producer_rows()?;
        let streams = self.stream_rows()?;
        let data: Vec<&[u8]> = chunks.data.iter().map(|d| d.as_ref()).collect();
        let (chunks_written, producers_written, streams_written) = tokio::join!(
            async {
                if chunks.ids.is_empty() {
                    return Ok(0);
                }
                tx.execute_typed(
                    "INSERT INTO chunks (stream_id, end_pos, pos, data)
                     SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::bytea[])",
                    &[
                        (&chunks.ids, Type::INT8_ARRAY),
                        (&chunks.ends, Type::INT8_ARRAY),
                        (&chunks.starts, Type::INT8_ARRAY),
                        (&data, Type::BYTEA_ARRAY),
                    ],
                )
                .await
            },
            async {
                if producers.ids.is_empty() {
                    return Ok(0);
                }
                tx.execute_typed(
                    "INSERT INTO producers (stream_id, producer_id, epoch, last_seq)
                     SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::int8[])
                     ON CONFLICT (stream_id, producer_id)
                     DO UPDATE SET epoch = excluded.epoch, last_seq = excluded.last_seq",
                    &[
                        (&producers.ids, Type::INT8_ARRAY),
                        (&producers.producers, Type::TEXT_ARRAY),
                        (&producers.epochs, Type::INT8_ARRAY),
                        (&producers.seqs, Type::INT8_ARRAY),
                    ],
                )
                .await
            },
            async {
                if streams.ids.is_empty() {
                    return Ok(0);
                }
                tx.execute_typed(
                    "UPDATE streams AS s SET tail = u.tail, closed = u.closed,
                        closed_by_producer = u.closer, closed_by_epoch = u.closer_epoch,
                        closed_by_seq = u.closer_seq, last_stream_seq = u.stream_seq,
                        last_access_ms = GREATEST(s.last_access_ms, $8)
                     FROM unnest($1::int8[], $2::int8[], $3::bool[], $4::text[], $5::int8[],
                                 $6::int8[], $7::text[])
                          AS u(id, tail, closed, closer, closer_epoch, closer_seq, stream_seq)
                     WHERE s.id = u.id",
                    &[
                        (&streams.ids, Type::INT8_ARRAY),
                        (&streams.tails, Type::INT8_ARRAY),
                        (&streams.closed, Type::BOOL_ARRAY),
                        (&streams.closers, Type::TEXT_ARRAY),
                        (&streams.closer_epochs, Type::INT8_ARRAY),
                        (&streams.closer_seqs, Type::INT8_ARRAY),
                        (&streams.stream_seqs, Type::TEXT_ARRAY),
                        (&self.now_ms, Type::INT8),
                    ],
                )
                .await
            },
        );
        drop(data);
        // In statement order: after the first failure, the others only report that the
        // transaction is aborted.
        for result in [chunks_written, producers_written, streams_written] {
            result?;
        }
        self.written = std::mem::take(&mut self.chunks);
        Ok(())
    }

    /// The producer rows this transaction changed, as statement parameters.
    fn producer_rows(&mut self) -> Result<ProducerRows, StoreError> {
        let mut rows = ProducerRows::default();
        for (id, state) in &mut self.streams {
            for producer in state.changed_producers.drain() {
                if let Some(Some((epoch, seq))) = state.producers.get(&producer) {
                    rows.ids.push(*id);
                    rows.epochs.push(stored(*epoch)?);
                    rows.seqs.push(stored(*seq)?);
                    rows.producers.push(producer);
                }
            }
        }
        Ok(rows)
    }

    /// The stream rows this transaction changed, as statement parameters; also what to
    /// announce of them (and of the streams it deleted).
    fn stream_rows(&mut self) -> Result<StreamRows, StoreError> {
        let mut rows = StreamRows::default();
        self.notices.clear();
        for (id, state) in &mut self.streams {
            if !state.dirty {
                continue;
            }
            state.dirty = false;
            let closer = state.closed_by.as_ref();
            rows.ids.push(*id);
            rows.tails.push(stored(state.tail)?);
            rows.closed.push(state.closed);
            rows.closers.push(closer.map(|p| p.id.clone()));
            rows.closer_epochs
                .push(closer.map(|p| stored(p.epoch)).transpose()?);
            rows.closer_seqs
                .push(closer.map(|p| stored(p.seq)).transpose()?);
            rows.stream_seqs.push(state.last_stream_seq.clone());
            self.notices.push((
                *id,
                Tail {
                    next: state.tail,
                    closed: state.closed,
                    deleted: false,
                },
            ));
        }
        for id in &self.deleted {
            self.notices.push((*id, gone()));
        }
        Ok(rows)
    }

    /// After the commit: publishes the new tails to this node's live readers, and announces
    /// them to the other nodes.
    pub(crate) fn published(self, store: &PgStore) {
        self.publish_to(store.shared());
    }

    pub(super) fn publish_to(self, shared: &Shared) {
        let tails = &shared.tails;
        // Chunks first: the readers the new tails wake find them in memory.
        for (id, pos, end, data) in self.written {
            if let Some(recent) = tails.recent(id) {
                recent.lock().record(Chunk { pos, end, data });
            }
        }
        for (id, tail) in self.notices {
            tails.merge(id, tail);
            shared.announcer.tail(id, tail);
        }
    }
}

/// The steps of a create in one PostgreSQL transaction: rows are locked as they are found
/// (`SELECT ... FOR UPDATE`), and what the transaction changed so far is in `writes`.
struct PgCreate<'w, 'c, 't> {
    writes: &'w mut StreamWrites,
    tx: &'c Transaction<'t>,
}

impl CreateTx for PgCreate<'_, '_, '_> {
    type Stream = StreamRow;

    async fn find(&mut self, path: &str) -> Result<Option<StreamRow>, StoreError> {
        self.writes.lock_row(self.tx, path).await
    }

    fn owner(&self, stream: &StreamRow) -> Option<i64> {
        stream.owner
    }

    fn shape<'s>(&self, stream: &'s StreamRow) -> (&'s StreamConfig, Option<&'s ForkFrom>) {
        (&stream.config, stream.fork.as_ref().map(|(_, spec)| spec))
    }

    fn info(&self, stream: &StreamRow) -> StreamInfo {
        stream.info()
    }

    fn expired(&self, stream: &StreamRow) -> bool {
        stream.expired(self.writes.now_ms)
    }

    async fn is_deleted(&mut self, stream: &StreamRow) -> Result<bool, StoreError> {
        Ok(stream.soft_deleted)
    }

    async fn remove_expired(&mut self, stream: &StreamRow) -> Result<bool, StoreError> {
        self.writes.remove(self.tx, stream).await?;
        Ok(stream.refcount > 0)
    }

    async fn current(&mut self, stream: &StreamRow) -> Result<Option<(u64, bool)>, StoreError> {
        Ok(Some(self.writes.current(stream)))
    }

    async fn boundary(
        &mut self,
        stream: &StreamRow,
        pos: u64,
        limit: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.writes.boundary(self.tx, stream, pos, limit).await
    }

    async fn insert(
        &mut self,
        path: &str,
        new: NewStream<StreamRow>,
    ) -> Result<Option<StreamInfo>, StoreError> {
        let NewStream {
            config,
            fork,
            start,
            body,
            closed,
            owner,
        } = new;
        let tail = start + body.as_ref().map_or(0, |b| b.units);
        let (fork_id, fork_path, fork_anchor, fork_sub) = match &fork {
            Some((source, _, spec)) => (
                Some(source.id),
                Some(spec.source.clone()),
                spec.offset.map(|o| stored(o.0)).transpose()?,
                Some(stored(spec.sub_offset)?),
            ),
            None => (None, None, None, None),
        };
        let ttl = config.ttl_secs.map(stored).transpose()?;
        let expires_ms = config.expires_at.map(|t| t.timestamp_millis());
        let inserted = self
            .tx
            .query_opt(
                "INSERT INTO streams (path, content_type, ttl_secs, expires_at_ms, created_at_ms,
                    last_access_ms, start_pos, tail, closed, fork_source_id, fork_source_path,
                    fork_anchor, fork_sub, owner_id)
                 VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (path) DO NOTHING
                 RETURNING id",
                &[
                    &path,
                    &config.content_type,
                    &ttl,
                    &expires_ms,
                    &self.writes.now_ms,
                    &stored(start)?,
                    &stored(tail)?,
                    &closed,
                    &fork_id,
                    &fork_path,
                    &fork_anchor,
                    &fork_sub,
                    &owner,
                ],
            )
            .await?;
        let Some(row) = inserted else {
            return Ok(None);
        };
        let id: StreamId = column(&row, 0)?;
        if let Some(source_id) = fork_id {
            self.tx
                .execute(
                    "UPDATE streams SET refcount = refcount + 1 WHERE id = $1",
                    &[&source_id],
                )
                .await?;
        }
        if let Some(body) = body {
            self.writes.chunks.push((id, start, tail, body.data));
        }
        self.writes.streams.insert(
            id,
            Locked {
                content_type: config.content_type.clone(),
                tail,
                closed,
                closed_by: None,
                last_stream_seq: None,
                producers: HashMap::new(),
                changed_producers: HashSet::new(),
                dirty: false,
            },
        );
        Ok(Some(StreamInfo {
            id,
            config,
            start: Offset::START,
            next: Offset(tail),
            closed,
        }))
    }
}

/// New chunks as statement parameters (one array per column).
#[derive(Default)]
struct ChunkRows {
    ids: Vec<StreamId>,
    starts: Vec<i64>,
    ends: Vec<i64>,
    data: Vec<Bytes>,
}

impl ChunkRows {
    fn of(chunks: &[(StreamId, u64, u64, Bytes)]) -> Result<Self, StoreError> {
        let mut rows = ChunkRows::default();
        for (id, pos, end, data) in chunks {
            rows.ids.push(*id);
            rows.starts.push(stored(*pos)?);
            rows.ends.push(stored(*end)?);
            rows.data.push(data.clone());
        }
        Ok(rows)
    }
}

#[derive(Default)]
struct ProducerRows {
    ids: Vec<StreamId>,
    producers: Vec<String>,
    epochs: Vec<i64>,
    seqs: Vec<i64>,
}

#[derive(Default)]
struct StreamRows {
    ids: Vec<StreamId>,
    tails: Vec<i64>,
    closed: Vec<bool>,
    closers: Vec<Option<String>>,
    closer_epochs: Vec<Option<i64>>,
    closer_seqs: Vec<Option<i64>>,
    stream_seqs: Vec<Option<String>>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::body::stored_body;
    use crate::pg::scratch::ScratchDatabase;
    use crate::tail::Wake;
    use crate::{PgOptions, StreamStore};
    use tether_types::ReadFrom;

    fn json_append(body: &'static str) -> PreparedAppend {
        let body = Bytes::from_static(body.as_bytes());
        PreparedAppend {
            body: stored_body(true, &body, false)
                .map_err(|e| AppendError::InvalidBody(e.to_string())),
            request: Append {
                content_type: Some("application/json".into()),
                body,
                ..Append::default()
            },
        }
    }

    #[tokio::test]
    async fn writes_in_a_callers_transaction_commit_with_it_and_wake_watchers() {
        let Some(db) = ScratchDatabase::create("stream writes in a transaction").await else {
            return;
        };
        let store = PgStore::connect(db.url(), PgOptions::default())
            .await
            .expect("connect");
        let request = CreateStream {
            content_type: Some("application/json".into()),
            ttl_secs: None,
            expires_at: None,
            closed: false,
            fork: None,
            body: Bytes::from_static(b"[1]"),
            ..CreateStream::default()
        };
        let mut client = store.client().await.expect("client");

        // Created in one transaction, appended to in a second, like a task and its events.
        let tx = client.transaction().await.expect("begin");
        let mut writes = StreamWrites::new();
        let id = writes
            .create(&tx, "tasks/t1", request)
            .await
            .expect("create");
        writes.flush(&tx).await.expect("flush");
        tx.commit().await.expect("commit");
        writes.published(&store);

        let (_, mut watch) = store.watch("tasks/t1").await.expect("watch");
        let tx = client.transaction().await.expect("begin");
        let mut writes = StreamWrites::new();
        assert_eq!(writes.lock(&tx, "tasks/t1").await.expect("lock"), Some(id));
        assert_eq!(writes.lock(&tx, "tasks/none").await.expect("lock"), None);
        let first = writes.append(&tx, id, json_append("[2,3]")).await.unwrap();
        let second = writes.append(&tx, id, json_append("4")).await.unwrap();
        assert_eq!(
            (first.next.0, second.next.0),
            (3, 4),
            "appends in one transaction follow each other"
        );
        writes.flush(&tx).await.expect("flush");
        tx.commit().await.expect("commit");
        writes.published(&store);

        match watch.wait_past(1, Duration::from_secs(10)).await {
            Wake::Changed(tail) => assert_eq!(tail.next, 4),
            Wake::TimedOut(tail) => panic!("the watcher was not woken: {tail:?}"),
        }
        let chunk = store
            .read("tasks/t1", ReadFrom::Start, 1 << 20)
            .await
            .unwrap();
        assert_eq!(chunk.records.concat(), b"12,34");

        // A rolled-back transaction leaves nothing behind.
        let tx = client.transaction().await.expect("begin");
        let mut writes = StreamWrites::new();
        writes.lock(&tx, "tasks/t1").await.expect("lock");
        writes.append(&tx, id, json_append("5")).await.unwrap();
        writes.flush(&tx).await.expect("flush");
        drop(tx);
        assert_eq!(store.head("tasks/t1").await.unwrap().next.0, 4);
        store.shutdown().await;
    }
}
