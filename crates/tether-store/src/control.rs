//! The control plane's storage: tasks, users and tokens, beside the streams they own.
//!
//! [`ControlStore`] is what the tasks API needs from a backend. The rules themselves are
//! `tether-core`'s; a backend runs them inside the transaction that also appends the task's
//! events, so a state change and its event commit together or not at all (G5).

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tether_core::{TaskOp, TransitionError};
use tether_types::{Event, Offset, Role, TaskId, TaskSpec, TaskState};

use crate::model::{AppendError, ProducerStamp};

pub type UserId = i64;

/// Who is calling, as a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub user: String,
    pub role: Role,
    pub token_id: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskRecord {
    pub id: TaskId,
    /// Orders tasks by creation; the list cursor.
    pub seq: i64,
    pub owner_id: UserId,
    pub owner: String,
    pub state: TaskState,
    pub attempt: u32,
    pub spec: TaskSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Creating a task.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub id: TaskId,
    pub owner_id: UserId,
    pub spec: TaskSpec,
    /// `Idempotency-Key` and a hash of the request it came with.
    pub idempotency: Option<(String, Vec<u8>)>,
    pub now: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct CreatedTask {
    pub task: TaskRecord,
    /// The key was seen before with the same request: this is the original task.
    pub replayed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateTaskError {
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    #[error("storage failure: {0}")]
    Storage(String),
}

/// The outcome of an accepted state change.
#[derive(Clone, Debug)]
pub struct Transitioned {
    pub task: TaskRecord,
    /// The offset after the event that records the change.
    pub offset: Offset,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionFailed {
    #[error("task not found")]
    NotFound,
    #[error(transparent)]
    Refused(#[from] TransitionError),
    #[error("storage failure: {0}")]
    Storage(String),
}

/// Producer events for a task's stream.
#[derive(Clone, Debug)]
pub struct EventAppend {
    /// The events, each one JSON object, already validated and stamped.
    pub events: Vec<Bytes>,
    pub producer: Option<ProducerStamp>,
}

#[derive(Clone, Debug)]
pub struct EventsAppended {
    pub next: Offset,
    /// False when an idempotent producer repeated a batch already stored.
    pub appended: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendEventsError {
    #[error("task not found")]
    NotFound,
    #[error("the task has already ended ({0})")]
    Terminal(TaskState),
    /// The stream refused the batch (producer sequence rules).
    #[error(transparent)]
    Stream(AppendError),
    #[error("storage failure: {0}")]
    Storage(String),
}

/// Which tasks to list.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    /// `None`: every owner's (admins).
    pub owner_id: Option<UserId>,
    pub state: Option<TaskState>,
    /// Only tasks created before this `seq` (the previous page's last).
    pub before_seq: Option<i64>,
    pub limit: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("a user with this name exists")]
    Exists,
    #[error("no such user")]
    NotFound,
    #[error("no such token")]
    TokenNotFound,
    #[error("storage failure: {0}")]
    Storage(String),
}

/// A token to store: only its hash, never the secret.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub id: String,
    pub user: String,
    pub role: Role,
    pub hash: Vec<u8>,
    pub now: DateTime<Utc>,
}

#[async_trait]
pub trait ControlStore: Send + Sync + 'static {
    /// Creates a task and its stream, whose first event is `created` (or, for a repeated
    /// idempotency key, returns the original task).
    async fn create_task(
        &self,
        task: NewTask,
        created: Event,
    ) -> Result<CreatedTask, CreateTaskError>;

    async fn task(&self, id: &TaskId) -> Result<Option<TaskRecord>, String>;

    /// Newest first.
    async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<TaskRecord>, String>;

    /// Applies `op` with `tether_core::decide`, writing the row and appending the event in
    /// one transaction; a terminal event also closes the stream.
    async fn transition(
        &self,
        id: &TaskId,
        op: TaskOp,
        now: DateTime<Utc>,
    ) -> Result<Transitioned, TransitionFailed>;

    /// Appends producer events to a task that has not ended.
    async fn append_events(
        &self,
        id: &TaskId,
        batch: EventAppend,
    ) -> Result<EventsAppended, AppendEventsError>;

    /// How many tasks are in each state (for metrics).
    async fn count_tasks(&self) -> Result<Vec<(TaskState, u64)>, String>;

    async fn create_user(&self, name: &str, now: DateTime<Utc>) -> Result<UserRecord, UserError>;

    async fn user_count(&self) -> Result<u64, String>;

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, String>;

    async fn create_token(&self, token: NewToken) -> Result<(), UserError>;

    async fn revoke_token(&self, id: &str, now: DateTime<Utc>) -> Result<(), UserError>;

    /// The principal of an unrevoked token with this hash.
    async fn principal(&self, hash: &[u8]) -> Result<Option<Principal>, String>;
}
