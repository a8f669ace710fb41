//! Execution on PostgreSQL: claims, leases, steps with rewind, fenced worker writes,
//! finishing, expiry and nudges. Each call is one transaction that locks the task's row
//! before it checks anything, so no check can go stale before its write lands, whichever
//! node the competing request went to (G5, G6, G7).

use crate::StoreError;
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tether_core::lease;
use tether_types::{Event, TaskId, TaskState};
use tokio_postgres::GenericClient;

use super::rows::{self, col, unsigned};
use super::tasks::{append, apply, int};
use super::Tx;
use crate::control::*;
use crate::execution::{self, encode, Begin, Heartbeat, Leased, StepRow};
use crate::model::ProducerStamp;

/// The first key of the advisory locks that stand in for a missing `users` row.
const ADMISSION_LOCKS: i32 = 0x7465_7401;

/// Owners a claim passes over, found at their limit, before it gives up for this round.
const MAX_FULL_OWNERS: usize = 32;

/// A stored value that does not read back.
fn corrupt(e: impl std::fmt::Display) -> WorkError {
    WorkError::Storage(StoreError::corrupt(e.to_string()))
}

/// The task, locked, if `lease` is its live lease now.
async fn leased(
    t: &Tx<'_>,
    id: &TaskId,
    lease: &str,
    now: DateTime<Utc>,
) -> Result<Leased, WorkError> {
    let row = locked(t, id).await?;
    row.check(lease, now)?;
    Ok(row)
}

async fn locked(t: &Tx<'_>, id: &TaskId) -> Result<Leased, WorkError> {
    rows::lock::<WorkError>(t, id)
        .await?
        .ok_or(WorkError::NotFound)
}

/// The oldest SUBMITTED task, locked, whose owner is not in `full` and looked under their
/// limit; tasks other claims hold are skipped, so concurrent claimers on any node never wait
/// for each other or take the same task.
async fn candidate(
    t: &Tx<'_>,
    claim: &Claim,
    full: &[UserId],
) -> Result<Option<(TaskId, UserId)>, WorkError> {
    let default = i64::try_from(claim.default_max_concurrent).unwrap_or(i64::MAX);
    let row = t
        .query_opt(
            "SELECT t.id, t.owner_id FROM tasks t LEFT JOIN users u ON u.id = t.owner_id
             WHERE t.state = 'SUBMITTED' AND t.owner_id <> ALL($2)
               AND (SELECT count(*) FROM tasks r
                    WHERE r.owner_id = t.owner_id AND r.state IN ('RUNNING', 'FINALIZING'))
                   < coalesce(u.max_concurrent, $1)
             ORDER BY t.seq LIMIT 1
             FOR UPDATE OF t SKIP LOCKED",
            &[&default, &full],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id: String = col(&row, 0)?;
    let owner: UserId = col(&row, 1)?;
    Ok(Some((id.parse().map_err(corrupt)?, owner)))
}

/// Whether `owner` may start one more task, decided so that two claims for one owner can
/// never both pass at the limit, whichever nodes they run on (G7).
///
/// The candidate query's count ran on a snapshot taken before this transaction waited for
/// anything, so it may miss a claim for the same owner that is in flight on another node.
/// Here each claim first locks the owner's `users` row: claims for one owner take turns, and
/// each holds the lock until it commits. Under READ COMMITTED every statement sees all that
/// committed before the statement began, so the count below, a new statement issued once the
/// lock is ours, sees every task that an earlier holder of the lock started: at most `limit`
/// claims can find the owner under the limit. The limit is read from the locked row, so a
/// concurrent change of it is seen too. (An owner without a `users` row has nothing to lock:
/// a transaction-scoped advisory lock on the owner's id serialises their claims instead.)
async fn admits(t: &Tx<'_>, owner: UserId, default: u64) -> Result<bool, WorkError> {
    let user = t
        .query_opt(
            "SELECT max_concurrent FROM users WHERE id = $1 FOR UPDATE",
            &[&owner],
        )
        .await?;
    let limit = match user {
        Some(row) => col::<Option<i64>>(&row, 0)?.map_or(default, |n| n.max(0) as u64),
        None => {
            // Two-key advisory locks never meet one-key ones (the migration lock); owners
            // whose keys collide only wait for each other, which admits no more.
            t.execute(
                "SELECT pg_advisory_xact_lock($1, ($2::BIGINT % 2147483647)::INT4)",
                &[&ADMISSION_LOCKS, &owner],
            )
            .await?;
            default
        }
    };
    let running = t
        .query_one(
            "SELECT count(*) FROM tasks WHERE owner_id = $1 AND state IN ('RUNNING', 'FINALIZING')",
            &[&owner],
        )
        .await?;
    let running = unsigned(col(&running, 0)?, "count").map_err(WorkError::Storage)?;
    Ok(lease::admits(running, limit))
}

pub(super) async fn claim(t: &mut Tx<'_>, claim: &Claim) -> Result<Option<Claimed>, WorkError> {
    // Oldest first. An owner found at their limit once the count is exact is passed over:
    // the next candidate is another owner's task. The skipped task stays locked until this
    // transaction ends, which only makes other claimers skip it too, and they would not be
    // admitted for it either.
    let mut full = Vec::new();
    let id = loop {
        let Some((id, owner)) = candidate(t, claim, &full).await? else {
            return Ok(None);
        };
        if admits(t, owner, claim.default_max_concurrent).await? {
            break id;
        }
        full.push(owner);
        if full.len() >= MAX_FULL_OWNERS {
            return Ok(None);
        }
    };
    let mut task = locked(t, &id).await?.task;
    let (change, lease) = execution::start(&task, claim)?;
    apply(
        t,
        &mut task,
        &change,
        Some((
            &claim.lease_id,
            lease.expires_at.timestamp_millis(),
            &claim.worker,
        )),
        claim.now,
    )
    .await?;
    let rows = t
        .query(
            "SELECT name, checkpoint FROM steps WHERE task_id = $1 AND completed_epoch IS NOT NULL
             ORDER BY name",
            &[&id.as_str()],
        )
        .await?;
    let mut checkpoints = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: String = col(row, 0)?;
        let stored: Option<String> = col(row, 1)?;
        checkpoints.push((name, execution::checkpoint(stored.as_deref())));
    }
    Ok(Some(Claimed {
        task,
        lease,
        checkpoints,
    }))
}

pub(super) async fn heartbeat(
    t: &mut Tx<'_>,
    id: &TaskId,
    lease: &str,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<Beat, WorkError> {
    let row = locked(t, id).await?;
    let expires = match execution::heartbeat(&row, lease, now, ttl)? {
        Heartbeat::Answer(beat) => return Ok(beat),
        Heartbeat::Extend(expires) => expires,
    };
    t.execute(
        "UPDATE tasks SET lease_expires_ms = $2 WHERE id = $1",
        &[&id.as_str(), &expires.timestamp_millis()],
    )
    .await?;
    let rows = t
        .query(
            "SELECT id, message, created_ms FROM nudges WHERE task_id = $1 AND acked_ms IS NULL
             ORDER BY created_ms, id",
            &[&id.as_str()],
        )
        .await?;
    let mut nudges = Vec::with_capacity(rows.len());
    for r in &rows {
        nudges.push(NudgeRecord {
            id: col(r, 0)?,
            message: col(r, 1)?,
            created_at: execution::time(col(r, 2)?),
        });
    }
    Ok(Beat {
        expires_at: expires,
        cancel_requested: false,
        nudges,
    })
}

/// The rows of `steps` of a task whose row this transaction holds (every writer of a step
/// locks its task first), by name.
async fn step_rows(
    t: &Tx<'_>,
    id: &TaskId,
    steps: &[String],
) -> Result<HashMap<String, StepRow>, WorkError> {
    let rows = t
        .query(
            "SELECT epoch, lease_id, completed_epoch, checkpoint, first_event_pos, name
             FROM steps WHERE task_id = $1 AND name = ANY($2)",
            &[&id.as_str(), &steps],
        )
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in &rows {
        let name: String = col(r, 5)?;
        out.insert(name, rows::step_row(r).map_err(WorkError::Storage)?);
    }
    Ok(out)
}

async fn step_row(t: &Tx<'_>, id: &TaskId, step: &str) -> Result<Option<StepRow>, WorkError> {
    Ok(step_rows(t, id, &[step.to_string()]).await?.remove(step))
}

pub(super) async fn begin_step(
    t: &mut Tx<'_>,
    id: &TaskId,
    lease: &str,
    step: &str,
    now: DateTime<Utc>,
) -> Result<StepStart, WorkError> {
    leased(t, id, lease, now).await?;
    let row = step_row(t, id, step).await?;
    let (epoch, rewind) = match execution::begin(row.as_ref(), step, lease, now) {
        Begin::Answer(start) => return Ok(start),
        Begin::New { epoch, rewind } => (epoch, rewind),
    };
    if let Some(rewind) = rewind {
        append(t, id, &[encode(&rewind)?], false, None).await?;
    }
    t.execute(
        "INSERT INTO steps (task_id, name, epoch, lease_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (task_id, name) DO UPDATE SET epoch = $3, lease_id = $4",
        &[&id.as_str(), &step, &int::<WorkError>(epoch)?, &lease],
    )
    .await?;
    Ok(StepStart {
        epoch,
        checkpoint: None,
    })
}

/// Remembers where a step's first event is, for a later attempt's rewind.
async fn note_step_event(t: &Tx<'_>, id: &TaskId, step: &str, pos: u64) -> Result<(), WorkError> {
    let pos = i64::try_from(pos).map_err(corrupt)?;
    t.execute(
        "UPDATE steps SET first_event_pos = $3
         WHERE task_id = $1 AND name = $2 AND first_event_pos IS NULL",
        &[&id.as_str(), &step, &pos],
    )
    .await?;
    Ok(())
}

pub(super) async fn complete_step(
    t: &mut Tx<'_>,
    id: &TaskId,
    lease: &str,
    step: &str,
    epoch: u32,
    checkpoint: &Value,
    now: DateTime<Utc>,
) -> Result<(), WorkError> {
    leased(t, id, lease, now).await?;
    let row = step_row(t, id, step).await?;
    let Some(event) = execution::complete(row.as_ref(), step, epoch, now)? else {
        return Ok(());
    };
    let (next, _) = append(t, id, &[encode(&event)?], false, None).await?;
    note_step_event(t, id, step, next.0).await?;
    t.execute(
        "UPDATE steps SET completed_epoch = $3, checkpoint = $4 WHERE task_id = $1 AND name = $2",
        &[
            &id.as_str(),
            &step,
            &int::<WorkError>(epoch)?,
            &checkpoint.to_string(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn worker_events(
    t: &mut Tx<'_>,
    id: &TaskId,
    lease: &str,
    mut events: Vec<Event>,
    producer: Option<ProducerStamp>,
    now: DateTime<Utc>,
) -> Result<EventsAppended, WorkError> {
    leased(t, id, lease, now).await?;
    // Every step of the batch in one query.
    let steps = execution::steps_of(&events);
    let rows = step_rows(t, id, &steps).await?;
    let epochs: HashMap<String, Option<u32>> = steps
        .into_iter()
        .map(|step| {
            let current = rows.get(&step).map(|r| r.epoch);
            (step, current)
        })
        .collect();
    execution::stamp(&mut events, &epochs)?;
    let encoded = events.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
    let (next, appended) = append(t, id, &encoded, false, producer).await?;
    if appended {
        for (step, pos) in execution::first_step_events(&events, next) {
            note_step_event(t, id, &step, pos).await?;
        }
    }
    Ok(EventsAppended { next, appended })
}

pub(super) async fn finish(
    t: &mut Tx<'_>,
    id: &TaskId,
    lease: &str,
    outcome: Outcome,
    now: DateTime<Utc>,
) -> Result<Finished, WorkError> {
    let mut row = locked(t, id).await?;
    let Some(change) = execution::finish(&row, lease, outcome, now)? else {
        let task = row.task;
        return Ok(Finished {
            task,
            changed: false,
        });
    };
    apply(t, &mut row.task, &change, None, now).await?;
    Ok(Finished {
        task: row.task,
        changed: true,
    })
}

pub(super) async fn release(
    t: &mut Tx<'_>,
    id: &TaskId,
    lease: &str,
    now: DateTime<Utc>,
) -> Result<bool, WorkError> {
    let mut row = locked(t, id).await?;
    let Some(change) = execution::release(&row, lease, now)? else {
        return Ok(false);
    };
    apply(t, &mut row.task, &change, None, now).await?;
    Ok(true)
}

/// Tasks whose lease looks expired at `now`, oldest expiry first; each is checked again
/// under its row lock before anything changes.
pub(super) async fn expired(
    c: &impl GenericClient,
    now: DateTime<Utc>,
) -> Result<Vec<TaskId>, StoreError> {
    let rows = c
        .query(
            "SELECT id FROM tasks WHERE state IN ('RUNNING', 'FINALIZING') AND lease_expires_ms <= $1
             ORDER BY lease_expires_ms LIMIT 1000",
            &[&now.timestamp_millis()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let id: String = col(r, 0)?;
            id.parse::<TaskId>().map_err(StoreError::corrupt)
        })
        .collect()
}

/// Requeues or times out one task whose lease expired: the state it went to, or `None` when
/// under its lock it turned out not to need it (another node did it, or a heartbeat came).
pub(super) async fn expire(
    t: &mut Tx<'_>,
    id: &TaskId,
    now: DateTime<Utc>,
) -> Result<Option<TaskState>, WorkError> {
    let Some(mut row) = rows::lock::<WorkError>(t, id).await? else {
        return Ok(None);
    };
    let Some(change) = execution::expire(&row, now)? else {
        return Ok(None);
    };
    apply(t, &mut row.task, &change, None, now).await?;
    Ok(Some(change.state))
}

pub(super) async fn create_nudge(
    t: &mut Tx<'_>,
    id: &TaskId,
    nudge: NewNudge<'_>,
    now: DateTime<Utc>,
    per_minute: u32,
) -> Result<(), NudgeError> {
    // The task's row lock makes nudges to one task take turns, so the count is exact.
    let task = rows::lock::<NudgeError>(t, id)
        .await?
        .ok_or(NudgeError::NotFound)?
        .task;
    let window = t
        .query_one(
            "SELECT count(*), min(created_ms) FROM nudges WHERE task_id = $1 AND created_ms > $2",
            &[&id.as_str(), &execution::nudge_window_start(now)],
        )
        .await?;
    let recent: i64 = col(&window, 0)?;
    let oldest: Option<i64> = col(&window, 1)?;
    execution::admit_nudge(&task, recent.max(0) as u64, oldest, now, per_minute)?;
    // In this transaction: the record of who said what commits with the nudge, or neither.
    let event =
        encode(&execution::nudge_sent(&nudge, now)).map_err(execution::nudge_not_recorded)?;
    append(t, id, &[event], false, None)
        .await
        .map_err(execution::nudge_not_recorded)?;
    t.execute(
        "INSERT INTO nudges (id, task_id, message, created_ms) VALUES ($1, $2, $3, $4)",
        &[
            &nudge.id,
            &id.as_str(),
            &nudge.message,
            &now.timestamp_millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn ack_nudge(
    t: &mut Tx<'_>,
    id: &TaskId,
    lease: &str,
    nudge_id: &str,
    now: DateTime<Utc>,
) -> Result<(), WorkError> {
    leased(t, id, lease, now).await?;
    let acked = t
        .query_opt(
            "SELECT acked_ms FROM nudges WHERE id = $1 AND task_id = $2",
            &[&nudge_id, &id.as_str()],
        )
        .await?;
    let Some(acked) = acked else {
        return Err(WorkError::NotFound);
    };
    let acked: Option<i64> = col(&acked, 0)?;
    if acked.is_some() {
        return Ok(());
    }
    let event = execution::nudge_acknowledged(nudge_id, now);
    append(t, id, &[encode(&event)?], false, None).await?;
    t.execute(
        "UPDATE nudges SET acked_ms = $2 WHERE id = $1",
        &[&nudge_id, &now.timestamp_millis()],
    )
    .await?;
    Ok(())
}

pub(super) async fn running_by_owner(
    c: &impl GenericClient,
    owner: Option<UserId>,
) -> Result<Vec<(UserId, u64)>, StoreError> {
    let rows = c
        .query(
            "SELECT owner_id, count(*) FROM tasks
             WHERE state IN ('RUNNING', 'FINALIZING') AND ($1::BIGINT IS NULL OR owner_id = $1)
             GROUP BY owner_id ORDER BY owner_id",
            &[&owner],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let owner: UserId = col(r, 0)?;
            Ok((owner, unsigned(col(r, 1)?, "count")?))
        })
        .collect()
}
