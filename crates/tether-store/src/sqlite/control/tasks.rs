//! Task changes, each one job on the writer thread: decide, then write the row and the
//! events together.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use tether_core::{decide, TaskOp, Transition};
use tether_types::{Event, Offset, TaskId};

use super::rows;
use crate::control::*;
use crate::execution::{self, applied, prepared, timestamp};
use crate::model::CreateError;
use crate::model::ProducerStamp;
use crate::sqlite::writer::Writer;
use crate::StoreError;

fn storage<E: From<StoreError>>(e: rusqlite::Error) -> E {
    E::from(e.into())
}

pub(super) fn create(
    w: &mut Writer,
    task: NewTask,
    created: Event,
) -> Result<CreatedTask, CreateTaskError> {
    if let Some((key, hash)) = &task.idempotency {
        let earlier: Option<(String, Vec<u8>)> = w
            .conn()
            .prepare_cached("SELECT id, idem_hash FROM tasks WHERE owner_id = ?1 AND idem_key = ?2")
            .and_then(|mut s| {
                s.query_row(params![task.owner_id, key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(storage::<CreateTaskError>)?;
        if let Some((id, earlier_hash)) = earlier {
            execution::replay(&earlier_hash, hash)?;
            let id: TaskId = id.parse().map_err(StoreError::corrupt)?;
            let original = rows::task(w.conn(), &id)
                .map_err(storage::<CreateTaskError>)?
                .ok_or_else(|| StoreError::corrupt("idempotent task vanished"))?;
            return Ok(CreatedTask {
                task: original,
                replayed: true,
            });
        }
    }
    let stream = w
        .create_stream(&task.id.stream_path(), execution::task_stream(&created)?)
        .map_err(|e| match e {
            CreateError::Storage(e) => e.context("task stream"),
            other => StoreError::corrupt(format!("task stream: {other}")),
        })?;
    if !stream.created {
        return Err(StoreError::corrupt(format!(
            "a stream already exists for new task {}",
            task.id
        ))
        .into());
    }
    let spec = serde_json::to_string(&task.spec)
        .map_err(|e| StoreError::corrupt_by("the task's spec does not encode", e))?;
    let (key, hash) = task.idempotency.clone().unzip();
    let now = task.now.timestamp_millis();
    w.conn()
        .prepare_cached(
            "INSERT INTO tasks (id, owner_id, state, attempt, spec, created_at_ms, updated_at_ms,
                                idem_key, idem_hash, max_attempts)
             VALUES (?1, ?2, 'SUBMITTED', 1, ?3, ?4, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                task.id.as_str(),
                task.owner_id,
                spec,
                now,
                key,
                hash,
                execution::max_attempts(&task)
            ])
        })
        .map_err(storage::<CreateTaskError>)?;
    let record = rows::task(w.conn(), &task.id)
        .map_err(storage::<CreateTaskError>)?
        .ok_or_else(|| StoreError::corrupt("new task not found"))?;
    Ok(CreatedTask {
        task: record,
        replayed: false,
    })
}

pub(super) fn transition(
    w: &mut Writer,
    id: &TaskId,
    op: TaskOp,
    now: DateTime<Utc>,
) -> Result<Transitioned, TransitionFailed> {
    let mut task = rows::task(w.conn(), id)
        .map_err(storage::<TransitionFailed>)?
        .ok_or(TransitionFailed::NotFound)?;
    let change = decide(task.current(), &op, timestamp(now))?;
    let offset = apply(w, &mut task, &change, None, now)?;
    Ok(Transitioned { task, offset })
}

pub(super) fn append_events(
    w: &mut Writer,
    id: &TaskId,
    batch: EventAppend,
) -> Result<EventsAppended, AppendEventsError> {
    let task = rows::task(w.conn(), id)
        .map_err(storage::<AppendEventsError>)?
        .ok_or(AppendEventsError::NotFound)?;
    if task.state.is_terminal() {
        return Err(AppendEventsError::Terminal(task.state));
    }
    let (next, appended) = append(w, id, &batch.events, false, batch.producer)?;
    Ok(EventsAppended { next, appended })
}

/// Appends events (already serialized) to the task's stream: the offset after them, and
/// whether they were new (an idempotent producer's repeat is not).
pub(super) fn append(
    w: &mut Writer,
    id: &TaskId,
    events: &[Bytes],
    close: bool,
    producer: Option<ProducerStamp>,
) -> Result<(Offset, bool), WorkError> {
    let stream = w
        .stream(&id.stream_path())
        .map_err(storage::<WorkError>)?
        .ok_or_else(|| StoreError::corrupt(format!("task {id} has no stream")))?;
    execution::appended(w.append_to(&stream, prepared(events, close, producer)))
}

/// Writes a decided state change: compare-and-sets the row (and, for a claim, its lease:
/// id, expiry, worker), appends the change's event (closing the stream after a terminal
/// one), and brings `task` up to date. Returns the offset after the event.
pub(super) fn apply(
    w: &mut Writer,
    task: &mut TaskRecord,
    change: &Transition,
    lease: Option<(&str, i64, &str)>,
    now: DateTime<Utc>,
) -> Result<Offset, WorkError> {
    let now_ms = now.timestamp_millis();
    let changed = w
        .conn()
        .prepare_cached(
            "UPDATE tasks SET state = ?3, attempt = ?4, updated_at_ms = ?5,
                 lease_id = coalesce(?7, lease_id), lease_expires_ms = coalesce(?8, lease_expires_ms),
                 worker = coalesce(?9, worker)
             WHERE id = ?1 AND state = ?2 AND attempt = ?6",
        )
        .and_then(|mut s| {
            s.execute(params![
                task.id.as_str(),
                task.state.as_str(),
                change.state.as_str(),
                change.attempt,
                now_ms,
                task.attempt,
                lease.map(|l| l.0),
                lease.map(|l| l.1),
                lease.map(|l| l.2),
            ])
        })
        .map_err(storage::<WorkError>)?;
    if changed != 1 {
        return Err(
            StoreError::corrupt(format!("task {} changed under its writer", task.id)).into(),
        );
    }
    let event = execution::encode(&change.event)?;
    let (offset, _) = append(w, &task.id, &[event], change.is_terminal(), None)?;
    applied(task, change, now);
    Ok(offset)
}
