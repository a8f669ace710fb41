//! Execution on the writer thread: claims, leases, steps with rewind, fenced worker writes,
//! finishing and lease expiry. Each call is one job: every check happens in the transaction
//! that writes, so a check cannot go stale before the write lands (G5, G6, G7).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use tether_types::{Event, TaskId};

use super::rows::{self, Leased};
use super::tasks::{append, apply};
use crate::control::*;
use crate::execution::{self, encode, Begin, Heartbeat, StepRow};
use crate::model::ProducerStamp;
use crate::sqlite::writer::Writer;
use crate::StoreError;

fn storage(e: rusqlite::Error) -> WorkError {
    WorkError::Storage(e.into())
}

/// A stored value that does not read back.
fn corrupt(e: impl std::fmt::Display) -> WorkError {
    WorkError::Storage(StoreError::corrupt(e.to_string()))
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn lease_row(conn: &Connection, id: &TaskId) -> Result<Leased, WorkError> {
    rows::leased(conn, id)
        .map_err(storage)?
        .ok_or(WorkError::NotFound)
}

/// The task, if `lease` is its live lease now.
fn leased(w: &Writer, id: &TaskId, lease: &str, now: DateTime<Utc>) -> Result<Leased, WorkError> {
    let row = lease_row(w.conn(), id)?;
    row.check(lease, now)?;
    Ok(row)
}

pub(super) fn claim(w: &mut Writer, claim: Claim) -> Result<Option<Claimed>, WorkError> {
    // Oldest first, skipping owners at their limit; the count is of task states, in this
    // transaction (G7).
    let candidate: Option<String> = w
        .conn()
        .prepare_cached(
            "SELECT t.id FROM tasks t LEFT JOIN users u ON u.id = t.owner_id
             WHERE t.state = 'SUBMITTED'
               AND (SELECT count(*) FROM tasks r
                    WHERE r.owner_id = t.owner_id AND r.state IN ('RUNNING', 'FINALIZING'))
                   < coalesce(u.max_concurrent, ?1)
             ORDER BY t.seq LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row([claim.default_max_concurrent as i64], |r| r.get(0))
                .optional()
        })
        .map_err(storage)?;
    let Some(id) = candidate else {
        return Ok(None);
    };
    let id: TaskId = id.parse().map_err(corrupt)?;
    let mut task = rows::task(w.conn(), &id)
        .map_err(storage)?
        .ok_or(WorkError::NotFound)?;
    let (change, lease) = execution::start(&task, &claim)?;
    apply(
        w,
        &mut task,
        &change,
        Some((&claim.lease_id, ms(lease.expires_at), &claim.worker)),
        claim.now,
    )?;
    let mut stmt = w
        .conn()
        .prepare_cached(
            "SELECT name, checkpoint FROM steps WHERE task_id = ?1 AND completed_epoch IS NOT NULL
             ORDER BY name",
        )
        .map_err(storage)?;
    let checkpoints = stmt
        .query_map([id.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(storage)?
        .into_iter()
        .map(|(name, cp)| (name, execution::checkpoint(cp.as_deref())))
        .collect();
    Ok(Some(Claimed {
        task,
        lease,
        checkpoints,
    }))
}

pub(super) fn heartbeat(
    w: &mut Writer,
    id: &TaskId,
    lease: &str,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<Beat, WorkError> {
    let row = lease_row(w.conn(), id)?;
    let expires = match execution::heartbeat(&row, lease, now, ttl)? {
        Heartbeat::Answer(beat) => return Ok(beat),
        Heartbeat::Extend(expires) => expires,
    };
    let nudges = pending_nudges(w.conn(), id)?;
    w.conn()
        .prepare_cached("UPDATE tasks SET lease_expires_ms = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id.as_str(), ms(expires)]))
        .map_err(storage)?;
    Ok(Beat {
        expires_at: expires,
        cancel_requested: false,
        nudges,
    })
}

fn pending_nudges(conn: &Connection, id: &TaskId) -> Result<Vec<NudgeRecord>, WorkError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, message, created_ms FROM nudges WHERE task_id = ?1 AND acked_ms IS NULL
             ORDER BY created_ms, id",
        )
        .map_err(storage)?;
    stmt.query_map([id.as_str()], |r| {
        Ok(NudgeRecord {
            id: r.get(0)?,
            message: r.get(1)?,
            created_at: rows::time(r.get(2)?),
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(storage)
}

fn step_row(conn: &Connection, id: &TaskId, step: &str) -> Result<Option<StepRow>, WorkError> {
    conn.prepare_cached(
        "SELECT epoch, lease_id, completed_epoch, checkpoint, first_event_pos FROM steps
         WHERE task_id = ?1 AND name = ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![id.as_str(), step], |r| {
            Ok(StepRow {
                epoch: r.get(0)?,
                lease_id: r.get(1)?,
                completed_epoch: r.get(2)?,
                checkpoint: r.get(3)?,
                first_event_pos: r.get::<_, Option<i64>>(4)?.map(|p| p as u64),
            })
        })
        .optional()
    })
    .map_err(storage)
}

pub(super) fn begin_step(
    w: &mut Writer,
    id: &TaskId,
    lease: &str,
    step: &str,
    now: DateTime<Utc>,
) -> Result<StepStart, WorkError> {
    leased(w, id, lease, now)?;
    let row = step_row(w.conn(), id, step)?;
    let (epoch, rewind) = match execution::begin(row.as_ref(), step, lease, now) {
        Begin::Answer(start) => return Ok(start),
        Begin::New { epoch, rewind } => (epoch, rewind),
    };
    if let Some(rewind) = rewind {
        append(w, id, &[encode(&rewind)?], false, None)?;
    }
    w.conn()
        .prepare_cached(
            "INSERT INTO steps (task_id, name, epoch, lease_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (task_id, name) DO UPDATE SET epoch = ?3, lease_id = ?4",
        )
        .and_then(|mut s| s.execute(params![id.as_str(), step, epoch, lease]))
        .map_err(storage)?;
    Ok(StepStart {
        epoch,
        checkpoint: None,
    })
}

/// Remembers where a step's first event is, for a later attempt's rewind.
fn note_step_event(conn: &Connection, id: &TaskId, step: &str, pos: u64) -> Result<(), WorkError> {
    conn.prepare_cached(
        "UPDATE steps SET first_event_pos = ?3
         WHERE task_id = ?1 AND name = ?2 AND first_event_pos IS NULL",
    )
    .and_then(|mut s| s.execute(params![id.as_str(), step, pos as i64]))
    .map_err(storage)?;
    Ok(())
}

pub(super) fn complete_step(
    w: &mut Writer,
    id: &TaskId,
    lease: &str,
    step: &str,
    epoch: u32,
    checkpoint: Value,
    now: DateTime<Utc>,
) -> Result<(), WorkError> {
    leased(w, id, lease, now)?;
    let row = step_row(w.conn(), id, step)?;
    let Some(event) = execution::complete(row.as_ref(), step, epoch, now)? else {
        return Ok(());
    };
    let (next, _) = append(w, id, &[encode(&event)?], false, None)?;
    note_step_event(w.conn(), id, step, next.0)?;
    w.conn()
        .prepare_cached(
            "UPDATE steps SET completed_epoch = ?3, checkpoint = ?4 WHERE task_id = ?1 AND name = ?2",
        )
        .and_then(|mut s| s.execute(params![id.as_str(), step, epoch, checkpoint.to_string()]))
        .map_err(storage)?;
    Ok(())
}

pub(super) fn worker_events(
    w: &mut Writer,
    id: &TaskId,
    lease: &str,
    mut events: Vec<Event>,
    producer: Option<ProducerStamp>,
    now: DateTime<Utc>,
) -> Result<EventsAppended, WorkError> {
    leased(w, id, lease, now)?;
    // Each step's current epoch is looked up once per batch.
    let mut epochs: HashMap<String, Option<u32>> = HashMap::new();
    for step in execution::steps_of(&events) {
        let current = step_row(w.conn(), id, &step)?.map(|r| r.epoch);
        epochs.insert(step, current);
    }
    execution::stamp(&mut events, &epochs)?;
    let encoded = events.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
    let (next, appended) = append(w, id, &encoded, false, producer)?;
    if appended {
        for (step, pos) in execution::first_step_events(&events, next) {
            note_step_event(w.conn(), id, &step, pos)?;
        }
    }
    Ok(EventsAppended { next, appended })
}

pub(super) fn finish(
    w: &mut Writer,
    id: &TaskId,
    lease: &str,
    outcome: Outcome,
    now: DateTime<Utc>,
) -> Result<Finished, WorkError> {
    let mut row = lease_row(w.conn(), id)?;
    let Some(change) = execution::finish(&row, lease, outcome, now)? else {
        let task = row.task;
        return Ok(Finished {
            task,
            changed: false,
        });
    };
    apply(w, &mut row.task, &change, None, now)?;
    Ok(Finished {
        task: row.task,
        changed: true,
    })
}

pub(super) fn release(
    w: &mut Writer,
    id: &TaskId,
    lease: &str,
    now: DateTime<Utc>,
) -> Result<bool, WorkError> {
    let mut row = lease_row(w.conn(), id)?;
    let Some(change) = execution::release(&row, lease, now)? else {
        return Ok(false);
    };
    apply(w, &mut row.task, &change, None, now)?;
    Ok(true)
}

pub(super) fn expire_leases(w: &mut Writer, now: DateTime<Utc>) -> Result<Vec<Expired>, WorkError> {
    let ids: Vec<String> = w
        .conn()
        .prepare_cached(
            "SELECT id FROM tasks WHERE state IN ('RUNNING', 'FINALIZING') AND lease_expires_ms <= ?1
             ORDER BY lease_expires_ms LIMIT 1000",
        )
        .and_then(|mut s| {
            s.query_map([ms(now)], |r| r.get(0))
                .and_then(|rows| rows.collect())
        })
        .map_err(storage)?;
    let mut out = Vec::new();
    for id in ids {
        let id: TaskId = id.parse().map_err(corrupt)?;
        let mut row = lease_row(w.conn(), &id)?;
        let Some(change) = execution::expire(&row, now)? else {
            continue;
        };
        let state = change.state;
        apply(w, &mut row.task, &change, None, now)?;
        out.push(Expired { task: id, state });
    }
    Ok(out)
}

pub(super) fn create_nudge(
    w: &mut Writer,
    id: &TaskId,
    nudge: NewNudge<'_>,
    now: DateTime<Utc>,
    per_minute: u32,
) -> Result<(), NudgeError> {
    let st = |e: rusqlite::Error| NudgeError::Storage(e.into());
    let task = rows::task(w.conn(), id)
        .map_err(st)?
        .ok_or(NudgeError::NotFound)?;
    let window_start = execution::nudge_window_start(now);
    let (recent, oldest): (i64, Option<i64>) = w
        .conn()
        .prepare_cached(
            "SELECT count(*), min(created_ms) FROM nudges WHERE task_id = ?1 AND created_ms > ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![id.as_str(), window_start], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .map_err(st)?;
    execution::admit_nudge(&task, recent.max(0) as u64, oldest, now, per_minute)?;
    // Decided; from here on only storage failures, which undo the whole batch (G5).
    let event = execution::nudge_sent(&nudge, now);
    let recorded = encode(&event).and_then(|e| append(w, id, &[e], false, None));
    recorded.map_err(execution::nudge_not_recorded)?;
    w.conn()
        .prepare_cached(
            "INSERT INTO nudges (id, task_id, message, created_ms) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![nudge.id, id.as_str(), nudge.message, ms(now)]))
        .map_err(st)?;
    Ok(())
}

pub(super) fn ack_nudge(
    w: &mut Writer,
    id: &TaskId,
    lease: &str,
    nudge_id: &str,
    now: DateTime<Utc>,
) -> Result<(), WorkError> {
    leased(w, id, lease, now)?;
    let acked: Option<Option<i64>> = w
        .conn()
        .prepare_cached("SELECT acked_ms FROM nudges WHERE id = ?1 AND task_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![nudge_id, id.as_str()], |r| r.get(0))
                .optional()
        })
        .map_err(storage)?;
    match acked {
        None => Err(WorkError::NotFound),
        Some(Some(_)) => Ok(()),
        Some(None) => {
            let event = execution::nudge_acknowledged(nudge_id, now);
            append(w, id, &[encode(&event)?], false, None)?;
            w.conn()
                .prepare_cached("UPDATE nudges SET acked_ms = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![nudge_id, ms(now)]))
                .map_err(storage)?;
            Ok(())
        }
    }
}

pub(super) fn running_by_owner(
    conn: &Connection,
    owner: Option<UserId>,
) -> rusqlite::Result<Vec<(UserId, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT owner_id, count(*) FROM tasks
         WHERE state IN ('RUNNING', 'FINALIZING') AND (?1 IS NULL OR owner_id = ?1)
         GROUP BY owner_id",
    )?;
    let rows = stmt.query_map([owner], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}
