//! [`ControlStore`] on SQLite: reads go to the reader pool, changes run as jobs on the
//! writer thread, in the same group-commit transactions as stream appends.

mod rows;
mod tasks;
mod users;
mod work;

use crate::error::StorageFailure;
use crate::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tether_core::TaskOp;
use tether_types::{Event, TaskId, TaskState};

use crate::model::ProducerStamp;

use super::writer::{job, Command, JobError, Writer};
use super::SqliteStore;
use crate::control::*;

impl<E: StorageFailure + Send + 'static> JobError for E {
    fn is_storage(&self) -> bool {
        StorageFailure::is_storage(self)
    }
}

impl SqliteStore {
    /// Runs `f` on the writer thread within the next batch; answers after the commit.
    async fn on_writer<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: JobError,
        F: FnOnce(&mut Writer) -> Result<T, E> + Send + 'static,
    {
        let (job, rx) = job(f);
        if self.sender.send(Command::Job(job)).is_err() {
            return Err(E::from(StoreError::ShutDown));
        }
        rx.await
            .unwrap_or_else(|_| Err(E::from(StoreError::ShutDown)))
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        Ok(self.readers.query(f).await?)
    }
}

/// What a task's row and first event take, about: charged to the disk's room.
const TASK_BYTES: u64 = 16 << 10;

/// About what `events` take on disk, charged to the disk's room before they are written:
/// their data's serialized length, without serializing it again.
fn events_bytes(events: &[Event]) -> u64 {
    events
        .iter()
        .map(|e| 128 + e.kind.len() as u64 + approximate_len(&e.data))
        .sum()
}

fn approximate_len(value: &serde_json::Value) -> u64 {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() as u64 + 2,
        Value::Array(items) => items.iter().map(approximate_len).sum::<u64>() + 2,
        Value::Object(map) => {
            map.iter()
                .map(|(k, v)| k.len() as u64 + 3 + approximate_len(v))
                .sum::<u64>()
                + 2
        }
    }
}

#[async_trait]
impl ControlStore for SqliteStore {
    async fn create_task(
        &self,
        task: NewTask,
        created: Event,
    ) -> Result<CreatedTask, CreateTaskError> {
        self.space()
            .take(TASK_BYTES)
            .map_err(CreateTaskError::Storage)?;
        self.on_writer(move |w| tasks::create(w, task, created))
            .await
    }

    async fn task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let id = id.clone();
        self.read(move |conn| rows::task(conn, &id)).await
    }

    async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        self.read(move |conn| rows::list(conn, &filter)).await
    }

    async fn transition(
        &self,
        id: &TaskId,
        op: TaskOp,
        now: DateTime<Utc>,
    ) -> Result<Transitioned, TransitionFailed> {
        let id = id.clone();
        self.on_writer(move |w| tasks::transition(w, &id, op, now))
            .await
    }

    async fn append_events(
        &self,
        id: &TaskId,
        batch: EventAppend,
    ) -> Result<EventsAppended, AppendEventsError> {
        let adds = batch.events.iter().map(|e| e.len() as u64).sum();
        self.space()
            .take(adds)
            .map_err(AppendEventsError::Storage)?;
        let id = id.clone();
        self.on_writer(move |w| tasks::append_events(w, &id, batch))
            .await
    }

    async fn count_tasks(&self) -> Result<Vec<(TaskState, u64)>, StoreError> {
        self.read(rows::count_by_state).await
    }

    async fn create_user(&self, name: &str, now: DateTime<Utc>) -> Result<UserRecord, UserError> {
        let name = name.to_string();
        self.on_writer(move |w| users::create_user(w, &name, now))
            .await
    }

    async fn user_count(&self) -> Result<u64, StoreError> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM users", [], |r| r.get::<_, i64>(0)))
            .await
            .map(|n| n as u64)
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let name = name.to_string();
        self.read(move |conn| users::user(conn, &name)).await
    }

    async fn set_max_concurrent(&self, name: &str, limit: Option<u64>) -> Result<(), UserError> {
        let name = name.to_string();
        self.on_writer(move |w| users::set_max_concurrent(w, &name, limit))
            .await
    }

    async fn create_token(&self, token: NewToken) -> Result<(), UserError> {
        self.on_writer(move |w| users::create_token(w, token)).await
    }

    async fn revoke_token(&self, id: &str, now: DateTime<Utc>) -> Result<(), UserError> {
        let id = id.to_string();
        self.on_writer(move |w| users::revoke_token(w, &id, now))
            .await
    }

    async fn principal(&self, hash: &[u8]) -> Result<Option<Principal>, StoreError> {
        let hash = hash.to_vec();
        self.read(move |conn| users::principal(conn, &hash)).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.read(users::list_users).await
    }

    async fn list_tokens(&self, user: Option<UserId>) -> Result<Vec<TokenRecord>, StoreError> {
        self.read(move |conn| users::list_tokens(conn, user)).await
    }

    async fn record_token_use(&self, used: Vec<(String, DateTime<Utc>)>) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        self.on_writer(move |w| users::record_token_use(w, &used))
            .await
            .map_err(|e| match e {
                UserError::Storage(e) => e,
                other => StoreError::corrupt(format!("recording token use: {other}")),
            })
    }

    async fn create_login_code(&self, code: NewSecret) -> Result<(), UserError> {
        self.on_writer(move |w| users::create_secret(w, "login_codes", code))
            .await
    }

    async fn take_login_code(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let hash = hash.to_vec();
        self.on_writer(move |w| users::take_login_code(w, &hash, now))
            .await
            .map_err(only_storage)
    }

    async fn create_session(&self, session: NewSecret) -> Result<(), UserError> {
        self.on_writer(move |w| users::create_secret(w, "sessions", session))
            .await
    }

    async fn session(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<Principal>, StoreError> {
        let hash = hash.to_vec();
        self.read(move |conn| users::session(conn, &hash, now))
            .await
    }

    async fn delete_session(&self, hash: &[u8]) -> Result<(), StoreError> {
        let hash = hash.to_vec();
        self.on_writer(move |w| users::delete_session(w, &hash))
            .await
            .map_err(only_storage)
    }
}

/// The storage failure of a job that can fail no other way.
fn only_storage(e: UserError) -> StoreError {
    match e {
        UserError::Storage(e) => e,
        other => StoreError::corrupt(other.to_string()),
    }
}

#[async_trait]
impl WorkStore for SqliteStore {
    async fn claim(&self, claim: Claim) -> Result<Option<Claimed>, WorkError> {
        self.on_writer(move |w| work::claim(w, claim)).await
    }

    async fn heartbeat(
        &self,
        id: &TaskId,
        lease: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<Beat, WorkError> {
        let (id, lease) = (id.clone(), lease.to_string());
        self.on_writer(move |w| work::heartbeat(w, &id, &lease, now, ttl))
            .await
    }

    async fn begin_step(
        &self,
        id: &TaskId,
        lease: &str,
        step: &str,
        now: DateTime<Utc>,
    ) -> Result<StepStart, WorkError> {
        let (id, lease, step) = (id.clone(), lease.to_string(), step.to_string());
        self.on_writer(move |w| work::begin_step(w, &id, &lease, &step, now))
            .await
    }

    async fn complete_step(
        &self,
        id: &TaskId,
        lease: &str,
        step: &str,
        epoch: u32,
        checkpoint: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), WorkError> {
        let (id, lease, step) = (id.clone(), lease.to_string(), step.to_string());
        self.on_writer(move |w| work::complete_step(w, &id, &lease, &step, epoch, checkpoint, now))
            .await
    }

    async fn worker_events(
        &self,
        id: &TaskId,
        lease: &str,
        events: Vec<Event>,
        producer: Option<ProducerStamp>,
        now: DateTime<Utc>,
    ) -> Result<EventsAppended, WorkError> {
        self.space()
            .take(events_bytes(&events))
            .map_err(WorkError::Storage)?;
        let (id, lease) = (id.clone(), lease.to_string());
        self.on_writer(move |w| work::worker_events(w, &id, &lease, events, producer, now))
            .await
    }

    async fn release(
        &self,
        id: &TaskId,
        lease: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, WorkError> {
        let (id, lease) = (id.clone(), lease.to_string());
        self.on_writer(move |w| work::release(w, &id, &lease, now))
            .await
    }

    async fn finish(
        &self,
        id: &TaskId,
        lease: &str,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<Finished, WorkError> {
        let (id, lease) = (id.clone(), lease.to_string());
        self.on_writer(move |w| work::finish(w, &id, &lease, outcome, now))
            .await
    }

    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<Vec<Expired>, StoreError> {
        self.on_writer(move |w| work::expire_leases(w, now))
            .await
            .map_err(|e| match e {
                WorkError::Storage(e) => e,
                other => StoreError::corrupt(format!("expiring leases: {other}")),
            })
    }

    async fn create_nudge(
        &self,
        id: &TaskId,
        nudge: NewNudge<'_>,
        now: DateTime<Utc>,
        per_minute: u32,
    ) -> Result<(), NudgeError> {
        let id = id.clone();
        let (nudge_id, message, author) = (
            nudge.id.to_string(),
            nudge.message.to_string(),
            nudge.author.to_string(),
        );
        self.on_writer(move |w| {
            let nudge = NewNudge {
                id: &nudge_id,
                message: &message,
                author: &author,
            };
            work::create_nudge(w, &id, nudge, now, per_minute)
        })
        .await
    }

    async fn ack_nudge(
        &self,
        id: &TaskId,
        lease: &str,
        nudge_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), WorkError> {
        let (id, lease, nudge_id) = (id.clone(), lease.to_string(), nudge_id.to_string());
        self.on_writer(move |w| work::ack_nudge(w, &id, &lease, &nudge_id, now))
            .await
    }

    async fn running_by_owner(
        &self,
        owner: Option<UserId>,
    ) -> Result<Vec<(UserId, u64)>, StoreError> {
        self.read(move |conn| work::running_by_owner(conn, owner))
            .await
    }
}
