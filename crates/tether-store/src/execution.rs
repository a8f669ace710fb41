//! The control plane's decisions, apart from any storage.
//!
//! Each backend loads what a decision needs in its own way (SQLite on its single writer
//! thread, PostgreSQL under the task's row lock), asks a function here what to do, and then
//! writes what it was told in the same transaction. Keeping the decisions here means the two
//! backends cannot drift apart on what a lease check, a step retry, a repeated finish or a
//! nudge limit means; only the SQL differs.

use crate::StoreError;
use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tether_core::lease::{self, Held};
use tether_core::steps;
use tether_core::{decide, TaskOp, Transition};
use tether_types::event::kind;
use tether_types::{Event, Offset, TaskState};

use crate::body::{PreparedAppend, StoredBody};
use crate::control::*;
use crate::model::{
    Access, Append, AppendError, AppendStatus, Appended, CreateStream, ProducerStamp,
};

/// Task streams hold JSON messages.
pub(crate) const JSON: &str = "application/json";

/// How long a lease lasts when the requested TTL does not fit a date.
const FALLBACK_TTL: chrono::Duration = chrono::Duration::seconds(30);

/// A nudge counts against its task's limit for this long.
const NUDGE_WINDOW_MS: i64 = 60_000;

/// Event timestamps, in the format [`tether_types::event::format_timestamp`] defines.
pub(crate) fn timestamp(now: DateTime<Utc>) -> String {
    tether_types::event::format_timestamp(now)
}

/// A time stored as milliseconds since the epoch; an impossible one reads as the epoch.
pub(crate) fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// When a lease granted or extended at `now` for `ttl` runs out.
pub(crate) fn lease_expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(ttl).unwrap_or(FALLBACK_TTL)
}

pub(crate) fn encode(event: &Event) -> Result<Bytes, WorkError> {
    serde_json::to_vec(event)
        .map(Bytes::from)
        .map_err(|e| WorkError::Storage(StoreError::corrupt_by("an event does not encode", e)))
}

// ---- appends to a task's stream ------------------------------------------------------------

/// Messages in their stored form: JSON values joined by commas.
fn stored(messages: &[Bytes]) -> StoredBody {
    let mut data = BytesMut::new();
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            data.extend_from_slice(b",");
        }
        data.extend_from_slice(m);
    }
    StoredBody {
        data: data.freeze(),
        units: messages.len() as u64,
    }
}

/// An append of already serialized events, in the form a backend's stream writer takes;
/// `close` after a terminal event.
pub(crate) fn prepared(
    messages: &[Bytes],
    close: bool,
    producer: Option<ProducerStamp>,
) -> PreparedAppend {
    let body = stored(messages);
    PreparedAppend {
        request: Append {
            content_type: Some(JSON.into()),
            body: body.data.clone(),
            close,
            producer,
            stream_seq: None,
            access: Access::All,
        },
        body: Ok(Some(body)),
    }
}

/// What a task's append did: the offset after it, and whether it was new (an idempotent
/// producer's repeat is not). The stream's own refusals stay apart from storage failures.
pub(crate) fn appended(result: Result<Appended, AppendError>) -> Result<(Offset, bool), WorkError> {
    match result {
        Ok(a) => Ok((a.next, a.status == AppendStatus::Appended)),
        Err(AppendError::Storage(m)) => Err(WorkError::Storage(m)),
        Err(e) => Err(WorkError::Stream(e)),
    }
}

/// The request that creates a new task's stream, with `created` as its first event.
pub(crate) fn task_stream(created: &Event) -> Result<CreateStream, CreateTaskError> {
    let first = serde_json::to_vec(created)
        .map_err(|e| StoreError::corrupt_by("an event does not encode", e))?;
    Ok(CreateStream {
        content_type: Some(JSON.into()),
        ttl_secs: None,
        expires_at: None,
        closed: false,
        fork: None,
        body: Bytes::from(first),
        ..CreateStream::default()
    })
}

// ---- tasks ---------------------------------------------------------------------------------

/// An `Idempotency-Key` seen before: the original task when the request is the same.
pub(crate) fn replay(earlier_hash: &[u8], hash: &[u8]) -> Result<(), CreateTaskError> {
    if earlier_hash == hash {
        Ok(())
    } else {
        Err(CreateTaskError::KeyReused)
    }
}

/// How many attempts a new task may have.
pub(crate) fn max_attempts(task: &NewTask) -> u32 {
    task.spec
        .max_attempts
        .unwrap_or(tether_types::task::DEFAULT_MAX_ATTEMPTS)
}

/// Brings `task` up to date after `change` was written at `now`.
pub(crate) fn applied(task: &mut TaskRecord, change: &Transition, now: DateTime<Utc>) {
    task.state = change.state;
    task.attempt = change.attempt;
    task.updated_at = time(now.timestamp_millis());
}

/// Whether a state change may let a waiting claim succeed: a new SUBMITTED task, or a
/// running one that stopped counting against its owner's limit.
pub(crate) fn frees_work(from: TaskState, change: &Transition) -> bool {
    let running = |s: TaskState| matches!(s, TaskState::Running | TaskState::Finalizing);
    change.state == TaskState::Submitted || (running(from) && !running(change.state))
}

/// A task with the columns execution checks: its lease and how many attempts it may have.
pub(crate) struct Leased {
    pub task: TaskRecord,
    pub lease_id: Option<String>,
    pub expires_ms: Option<i64>,
    pub max_attempts: u32,
}

impl Leased {
    /// Whether `lease` is the task's live lease at `now` (G6).
    pub fn check(&self, lease: &str, now: DateTime<Utc>) -> Result<(), WorkError> {
        let held = Held {
            state: self.task.state,
            lease_id: self.lease_id.as_deref(),
            expires_ms: self.expires_ms,
        };
        Ok(lease::check(&held, lease, now.timestamp_millis())?)
    }
}

// ---- claims and heartbeats -----------------------------------------------------------------

/// Starting a claimed task: the change to write and the lease it gets.
pub(crate) fn start(
    task: &TaskRecord,
    claim: &Claim,
) -> Result<(Transition, LeaseGrant), WorkError> {
    let change = decide(
        task.current(),
        &TaskOp::Start {
            worker: Some(claim.worker.clone()),
        },
        timestamp(claim.now),
    )?;
    let lease = LeaseGrant {
        id: claim.lease_id.clone(),
        expires_at: lease_expiry(claim.now, claim.lease_ttl),
    };
    Ok((change, lease))
}

/// A stored checkpoint; one that does not parse reads as null rather than failing the claim.
pub(crate) fn checkpoint(stored: Option<&str>) -> Value {
    stored
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or(Value::Null)
}

/// What a heartbeat does.
pub(crate) enum Heartbeat {
    /// Answer this and write nothing.
    Answer(Beat),
    /// Extend the lease to this time and answer with the pending nudges.
    Extend(DateTime<Utc>),
}

pub(crate) fn heartbeat(
    row: &Leased,
    lease: &str,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<Heartbeat, WorkError> {
    // A cancelled task's worker learns it here, with its own lease.
    if row.task.state == TaskState::Cancelled && row.lease_id.as_deref() == Some(lease) {
        return Ok(Heartbeat::Answer(Beat {
            expires_at: time(row.expires_ms.unwrap_or_default()),
            cancel_requested: true,
            nudges: Vec::new(),
        }));
    }
    row.check(lease, now)?;
    Ok(Heartbeat::Extend(lease_expiry(now, ttl)))
}

// ---- steps ---------------------------------------------------------------------------------

/// A step's row.
pub(crate) struct StepRow {
    pub epoch: u32,
    pub lease_id: String,
    pub completed_epoch: Option<u32>,
    pub checkpoint: Option<String>,
    /// The stream position of the first event any attempt of the step wrote.
    pub first_event_pos: Option<u64>,
}

impl StepRow {
    /// What the step rules of [`tether_core::steps`] need of the row.
    fn attempts(&self) -> steps::StepAttempts<'_> {
        steps::StepAttempts {
            epoch: self.epoch,
            lease_id: &self.lease_id,
            completed_epoch: self.completed_epoch,
            first_event_pos: self.first_event_pos,
        }
    }
}

/// What beginning a step does.
pub(crate) enum Begin {
    /// Answer this and write nothing: the step is done (skip it with its checkpoint), or the
    /// same lease asked again (a retried request keeps its attempt).
    Answer(StepStart),
    /// Append `rewind` (when an earlier attempt wrote events, they are superseded from here
    /// on), then record `epoch` as the step's attempt, begun by this lease.
    New { epoch: u32, rewind: Option<Event> },
}

pub(crate) fn begin(row: Option<&StepRow>, step: &str, lease: &str, now: DateTime<Utc>) -> Begin {
    match steps::begin(row.map(StepRow::attempts), lease) {
        steps::Begin::Completed { epoch } => Begin::Answer(StepStart {
            epoch,
            checkpoint: row.map(|r| checkpoint(r.checkpoint.as_deref())),
        }),
        steps::Begin::Again { epoch } => Begin::Answer(StepStart {
            epoch,
            checkpoint: None,
        }),
        steps::Begin::New { epoch, rewind } => Begin::New {
            epoch,
            rewind: rewind.map(|r| r.event(step, timestamp(now))),
        },
    }
}

/// Completing attempt `epoch` of a step: `None` when it already is (a repeat writes nothing),
/// else the `step_completed` event to append; a stale attempt is fenced.
pub(crate) fn complete(
    row: Option<&StepRow>,
    step: &str,
    epoch: u32,
    now: DateTime<Utc>,
) -> Result<Option<Event>, WorkError> {
    let attempts = row.map(StepRow::attempts);
    Ok(steps::complete(attempts, step, epoch, timestamp(now))?)
}

pub(crate) use steps::{first_step_events, steps_of};

/// Stamps a batch's step events with their attempts, refusing it whole when one is stale
/// ([`steps::stamp`]).
pub(crate) fn stamp(
    events: &mut [Event],
    epochs: &HashMap<String, Option<u32>>,
) -> Result<(), WorkError> {
    Ok(steps::stamp(events, epochs)?)
}

// ---- finishing and expiry ------------------------------------------------------------------

/// The change a finish writes; `None` for the same finish again, from the lease that
/// finished it: the same answer, nothing new.
pub(crate) fn finish(
    row: &Leased,
    lease: &str,
    outcome: Outcome,
    now: DateTime<Utc>,
) -> Result<Option<Transition>, WorkError> {
    let (wanted, op) = match outcome {
        Outcome::Completed { result } => (TaskState::Completed, TaskOp::Complete { result }),
        Outcome::Failed { code, message } => (TaskState::Failed, TaskOp::Fail { code, message }),
    };
    if row.task.state == wanted && row.lease_id.as_deref() == Some(lease) {
        return Ok(None);
    }
    row.check(lease, now)?;
    Ok(Some(decide(row.task.current(), &op, timestamp(now))?))
}

/// Handing back a claim whose answer never reached its worker: the same attempt goes back to
/// SUBMITTED, claimable at once. `None` when `lease` no longer holds the task (it expired, or
/// the worker got it after all and wrote: then there is nothing to hand back).
pub(crate) fn release(
    row: &Leased,
    lease: &str,
    now: DateTime<Utc>,
) -> Result<Option<Transition>, WorkError> {
    if row.check(lease, now).is_err() || row.task.state != TaskState::Running {
        return Ok(None);
    }
    let op = TaskOp::Release {
        reason: "the claim's answer did not reach the worker".into(),
    };
    Ok(Some(decide(row.task.current(), &op, timestamp(now))?))
}

/// What the reconciler does with a task whose lease expired at `now`: `None` when, checked
/// again under its row lock, it no longer has one that expired (another node got there
/// first, or a heartbeat did); else a requeue while attempts are left, a time-out after.
pub(crate) fn expire(row: &Leased, now: DateTime<Utc>) -> Result<Option<Transition>, WorkError> {
    let running = matches!(row.task.state, TaskState::Running | TaskState::Finalizing);
    let expired = row.expires_ms.is_some_and(|e| e <= now.timestamp_millis());
    if !(running && expired) {
        return Ok(None);
    }
    let op = if row.task.attempt < row.max_attempts {
        TaskOp::Requeue {
            reason: "lease expired without a heartbeat".into(),
        }
    } else {
        TaskOp::TimeOut {
            code: "LEASE_EXPIRED".into(),
            message: format!(
                "the lease expired on attempt {} of {}",
                row.task.attempt, row.max_attempts
            ),
        }
    };
    Ok(Some(decide(row.task.current(), &op, timestamp(now))?))
}

// ---- nudges --------------------------------------------------------------------------------

/// Nudges created after this time count against the limit at `now`.
pub(crate) fn nudge_window_start(now: DateTime<Utc>) -> i64 {
    now.timestamp_millis() - NUDGE_WINDOW_MS
}

/// Whether one more nudge may go to `task`, which has `recent` nudges in the window, the
/// oldest created at `oldest_ms`; a refusal says when to retry.
pub(crate) fn admit_nudge(
    task: &TaskRecord,
    recent: u64,
    oldest_ms: Option<i64>,
    now: DateTime<Utc>,
    per_minute: u32,
) -> Result<(), NudgeError> {
    if task.state.is_terminal() {
        return Err(NudgeError::Terminal(task.state));
    }
    if recent >= u64::from(per_minute) {
        let now_ms = now.timestamp_millis();
        let free_at = oldest_ms.unwrap_or(nudge_window_start(now)) + NUDGE_WINDOW_MS;
        let wait = ((free_at - now_ms).max(0) as u64).div_ceil(1000).max(1);
        return Err(NudgeError::TooMany {
            limit: per_minute,
            retry_after_secs: wait,
        });
    }
    Ok(())
}

/// The audit record of an accepted nudge: who said what to the task.
pub(crate) fn nudge_sent(nudge: &NewNudge<'_>, now: DateTime<Utc>) -> Event {
    Event::new(
        kind::NUDGE_SENT,
        timestamp(now),
        json!({ "nudge_id": nudge.id, "message": nudge.message, "author": nudge.author }),
    )
}

/// The record of a nudge refused by the task's stream after the nudge was admitted: the
/// stream and the task disagree, which no caller can fix, so the transaction is undone.
pub(crate) fn nudge_not_recorded(e: WorkError) -> NudgeError {
    match e {
        WorkError::Storage(m) => NudgeError::Storage(m),
        other => NudgeError::Storage(StoreError::corrupt(format!(
            "the nudge could not be recorded: {other}"
        ))),
    }
}

pub(crate) fn nudge_acknowledged(nudge_id: &str, now: DateTime<Utc>) -> Event {
    Event::new(
        kind::NUDGE_ACKNOWLEDGED,
        timestamp(now),
        json!({ "nudge_id": nudge_id }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nudge_limit_says_when_the_oldest_nudge_leaves_the_window() {
        let task = TaskRecord {
            id: tether_types::TaskId::from_random(1),
            seq: 1,
            owner_id: 1,
            owner: "ann".into(),
            state: TaskState::Running,
            attempt: 1,
            spec: Default::default(),
            created_at: time(0),
            updated_at: time(0),
        };
        let now = time(70_000);
        assert!(admit_nudge(&task, 2, Some(20_000), now, 3).is_ok());
        assert_eq!(
            admit_nudge(&task, 3, Some(20_000), now, 3),
            Err(NudgeError::TooMany {
                limit: 3,
                retry_after_secs: 10
            })
        );
    }
}
