//! Task changes, each in one transaction: lock the row, decide, then write the row and the
//! events together.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tether_core::{decide, TaskOp, Transition};
use tether_types::{Event, Offset, TaskId};

use super::rows::{self, col};
use super::Tx;
use crate::control::*;
use crate::execution::{self, applied, prepared, timestamp};
use crate::model::CreateError;
use crate::model::ProducerStamp;
use crate::StoreError;

/// A small count as the database's INTEGER.
pub(super) fn int<E: From<StoreError>>(n: u32) -> Result<i32, E> {
    i32::try_from(n).map_err(|_| {
        E::from(StoreError::corrupt(format!(
            "{n} does not fit the database"
        )))
    })
}

/// The task created earlier with this owner's `key`, if any: the original task when the
/// request is the same, else [`CreateTaskError::KeyReused`].
async fn earlier(
    t: &Tx<'_>,
    owner: UserId,
    key: &str,
    hash: &[u8],
) -> Result<Option<CreatedTask>, CreateTaskError> {
    let row = t
        .query_opt(
            "SELECT id, idem_hash FROM tasks WHERE owner_id = $1 AND idem_key = $2",
            &[&owner, &key],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id: String = col(&row, 0)?;
    let earlier_hash: Option<Vec<u8>> = col(&row, 1)?;
    execution::replay(earlier_hash.as_deref().unwrap_or_default(), hash)?;
    let id: TaskId = id.parse().map_err(StoreError::corrupt)?;
    let original = rows::task(&*t.tx, &id)
        .await?
        .ok_or_else(|| StoreError::corrupt("idempotent task vanished"))?;
    Ok(Some(CreatedTask {
        task: original,
        replayed: true,
    }))
}

pub(super) async fn create(
    t: &mut Tx<'_>,
    task: &NewTask,
    created: &Event,
) -> Result<CreatedTask, CreateTaskError> {
    if let Some((key, hash)) = &task.idempotency {
        if let Some(original) = earlier(t, task.owner_id, key, hash).await? {
            return Ok(original);
        }
    }
    let spec = serde_json::to_string(&task.spec)
        .map_err(|e| StoreError::corrupt_by("the task's spec does not encode", e))?;
    let (key, hash) = task.idempotency.clone().unzip();
    let now = task.now.timestamp_millis();
    let max_attempts = int::<CreateTaskError>(execution::max_attempts(task))?;
    // Two nodes creating with the same key: the later insert waits for the earlier one's
    // transaction and, once that commits, does nothing. The statement after it runs on a new
    // snapshot (READ COMMITTED), which holds the winner's task: both answer with that one.
    let inserted = t
        .query_opt(
            "INSERT INTO tasks (id, owner_id, state, attempt, spec, created_at_ms, updated_at_ms,
                                idem_key, idem_hash, max_attempts)
             VALUES ($1, $2, 'SUBMITTED', 1, $3, $4, $4, $5, $6, $7)
             ON CONFLICT (owner_id, idem_key) WHERE idem_key IS NOT NULL DO NOTHING
             RETURNING seq",
            &[
                &task.id.as_str(),
                &task.owner_id,
                &spec,
                &now,
                &key,
                &hash,
                &max_attempts,
            ],
        )
        .await?;
    if inserted.is_none() {
        let (key, hash) = task
            .idempotency
            .as_ref()
            .ok_or_else(|| StoreError::corrupt("a task without a key conflicted on its key"))?;
        return earlier(t, task.owner_id, key, hash)
            .await?
            .ok_or_else(|| StoreError::corrupt("the conflicting task vanished").into());
    }
    let request = execution::task_stream(created)?;
    t.writes
        .create(&t.tx, &task.id.stream_path(), request)
        .await
        .map_err(|e| match e {
            CreateError::Storage(e) => e.context("task stream"),
            other => StoreError::corrupt(format!("task stream: {other}")),
        })?;
    t.work = true;
    let record = rows::task(&*t.tx, &task.id)
        .await?
        .ok_or_else(|| StoreError::corrupt("new task not found"))?;
    Ok(CreatedTask {
        task: record,
        replayed: false,
    })
}

pub(super) async fn transition(
    t: &mut Tx<'_>,
    id: &TaskId,
    op: &TaskOp,
    now: DateTime<Utc>,
) -> Result<Transitioned, TransitionFailed> {
    let mut row = rows::lock::<TransitionFailed>(t, id)
        .await?
        .ok_or(TransitionFailed::NotFound)?;
    let change = decide(row.task.current(), op, timestamp(now))?;
    let offset = apply(t, &mut row.task, &change, None, now).await?;
    Ok(Transitioned {
        task: row.task,
        offset,
    })
}

pub(super) async fn append_events(
    t: &mut Tx<'_>,
    id: &TaskId,
    batch: &EventAppend,
) -> Result<EventsAppended, AppendEventsError> {
    let row = rows::lock::<AppendEventsError>(t, id)
        .await?
        .ok_or(AppendEventsError::NotFound)?;
    if row.task.state.is_terminal() {
        return Err(AppendEventsError::Terminal(row.task.state));
    }
    let (next, appended) = append(t, id, &batch.events, false, batch.producer.clone()).await?;
    Ok(EventsAppended { next, appended })
}

/// Appends events (already serialized) to the task's stream in this transaction: the offset
/// after them, and whether they were new.
pub(super) async fn append(
    t: &mut Tx<'_>,
    id: &TaskId,
    events: &[Bytes],
    close: bool,
    producer: Option<ProducerStamp>,
) -> Result<(Offset, bool), WorkError> {
    let stream = t
        .writes
        .lock(&t.tx, &id.stream_path())
        .await?
        .ok_or_else(|| StoreError::corrupt(format!("task {id} has no stream")))?;
    let result = t
        .writes
        .append(&t.tx, stream, prepared(events, close, producer))
        .await;
    execution::appended(result)
}

/// Writes a decided state change of a task whose row this transaction locked: sets the row
/// (and, for a claim, its lease: id, expiry, worker), appends the change's event (closing
/// the stream after a terminal one), and brings `task` up to date. Returns the offset after
/// the event.
pub(super) async fn apply(
    t: &mut Tx<'_>,
    task: &mut TaskRecord,
    change: &Transition,
    lease: Option<(&str, i64, &str)>,
    now: DateTime<Utc>,
) -> Result<Offset, WorkError> {
    let changed = t
        .execute(
            "UPDATE tasks SET state = $3, attempt = $4, updated_at_ms = $5,
                 lease_id = coalesce($7, lease_id),
                 lease_expires_ms = coalesce($8, lease_expires_ms),
                 worker = coalesce($9, worker)
             WHERE id = $1 AND state = $2 AND attempt = $6",
            &[
                &task.id.as_str(),
                &task.state.as_str(),
                &change.state.as_str(),
                &int::<WorkError>(change.attempt)?,
                &now.timestamp_millis(),
                &int::<WorkError>(task.attempt)?,
                &lease.map(|l| l.0),
                &lease.map(|l| l.1),
                &lease.map(|l| l.2),
            ],
        )
        .await?;
    if changed != 1 {
        return Err(
            StoreError::corrupt(format!("task {} changed under its row lock", task.id)).into(),
        );
    }
    if execution::frees_work(task.state, change) {
        t.work = true;
    }
    let event = execution::encode(&change.event)?;
    let (offset, _) = append(t, &task.id, &[event], change.is_terminal(), None).await?;
    applied(task, change, now);
    Ok(offset)
}
