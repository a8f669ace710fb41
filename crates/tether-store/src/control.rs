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

use crate::error::{storage_failure, StorageFailure, StoreError};
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

impl TaskRecord {
    /// What the state machine looks at.
    pub fn current(&self) -> tether_core::Current {
        tether_core::Current {
            state: self.state,
            attempt: self.attempt,
        }
    }
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
    #[error(transparent)]
    Storage(StoreError),
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
    #[error(transparent)]
    Storage(StoreError),
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
    #[error(transparent)]
    Storage(StoreError),
}

/// Which tasks to list.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    /// `None`: every owner's (admins).
    pub owner_id: Option<UserId>,
    pub state: Option<TaskState>,
    /// Only tasks created before this `seq` (the previous page's last).
    pub before_seq: Option<i64>,
    /// Only tasks whose description, repository or metadata (as JSON text) contains this,
    /// ignoring case.
    pub search: Option<String>,
    pub limit: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// The user's own admission limit; `None` means the server's default.
    pub max_concurrent: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("a user with this name exists")]
    Exists,
    #[error("no such user")]
    NotFound,
    #[error("no such token")]
    TokenNotFound,
    #[error(transparent)]
    Storage(StoreError),
}

/// A live token as listed: never its secret or hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub user: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
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

/// A one-time login code or a browser session to store: only its hash, bound to the token
/// whose principal it acts as, so revoking the token ends it at once.
#[derive(Clone, Debug)]
pub struct NewSecret {
    pub hash: Vec<u8>,
    pub token_id: String,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
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

    async fn task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError>;

    /// Newest first.
    async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<TaskRecord>, StoreError>;

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
    async fn count_tasks(&self) -> Result<Vec<(TaskState, u64)>, StoreError>;

    async fn create_user(&self, name: &str, now: DateTime<Utc>) -> Result<UserRecord, UserError>;

    async fn user_count(&self) -> Result<u64, StoreError>;

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Sets (or, with `None`, clears) how many tasks the user may have running.
    async fn set_max_concurrent(&self, name: &str, limit: Option<u64>) -> Result<(), UserError>;

    async fn create_token(&self, token: NewToken) -> Result<(), UserError>;

    async fn revoke_token(&self, id: &str, now: DateTime<Utc>) -> Result<(), UserError>;

    /// The principal of an unrevoked token with this hash.
    async fn principal(&self, hash: &[u8]) -> Result<Option<Principal>, StoreError>;

    /// Every user, by name.
    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError>;

    /// Unrevoked tokens, oldest first: everyone's, or one user's.
    async fn list_tokens(&self, user: Option<UserId>) -> Result<Vec<TokenRecord>, StoreError>;

    /// Stores when tokens were last used, in one write for the batch; a time older than the
    /// stored one changes nothing. The server calls this about once a minute with what it
    /// noted in memory, never per request.
    async fn record_token_use(&self, used: Vec<(String, DateTime<Utc>)>) -> Result<(), StoreError>;

    /// Stores a login code for an unrevoked token (`TokenNotFound` otherwise), and drops
    /// codes that have expired.
    async fn create_login_code(&self, code: NewSecret) -> Result<(), UserError>;

    /// Deletes the code with this hash and returns its token's id if it had not expired at
    /// `now`: a code works once, on any node.
    async fn take_login_code(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError>;

    /// Stores a session for an unrevoked token (`TokenNotFound` otherwise), and drops
    /// sessions that have expired.
    async fn create_session(&self, session: NewSecret) -> Result<(), UserError>;

    /// The principal of the session with this hash, while it has not expired and its token
    /// is not revoked.
    async fn session(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<Principal>, StoreError>;

    /// Ends a session; ending one that is gone is not an error.
    async fn delete_session(&self, hash: &[u8]) -> Result<(), StoreError>;
}

// ---- execution ---------------------------------------------------------------------------

/// A lease handed to a worker with a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub id: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct Claim {
    pub worker: String,
    /// The id the new lease gets (random, from the caller).
    pub lease_id: String,
    pub now: DateTime<Utc>,
    pub lease_ttl: std::time::Duration,
    /// Running tasks an owner may have when their user row sets no limit.
    pub default_max_concurrent: u64,
}

#[derive(Clone, Debug)]
pub struct Claimed {
    pub task: TaskRecord,
    pub lease: LeaseGrant,
    /// Checkpoints of steps completed in earlier attempts, by step name.
    pub checkpoints: Vec<(String, serde_json::Value)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkError {
    #[error("task not found")]
    NotFound,
    #[error(transparent)]
    Fenced(#[from] tether_core::lease::Fenced),
    #[error(transparent)]
    Refused(#[from] TransitionError),
    /// The stream refused the batch (producer sequence rules).
    #[error(transparent)]
    Stream(AppendError),
    #[error(transparent)]
    Storage(StoreError),
}

/// A nudge to queue: its id, its text, and the name of the user who sent it.
#[derive(Clone, Copy, Debug)]
pub struct NewNudge<'a> {
    pub id: &'a str,
    pub message: &'a str,
    pub author: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NudgeRecord {
    pub id: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct Beat {
    pub expires_at: DateTime<Utc>,
    /// The task was cancelled: the worker should stop; its lease no longer writes.
    pub cancel_requested: bool,
    pub nudges: Vec<NudgeRecord>,
}

/// What beginning a step gave.
#[derive(Clone, Debug, PartialEq)]
pub struct StepStart {
    pub epoch: u32,
    /// Set when an earlier attempt completed the step: the worker skips it.
    pub checkpoint: Option<serde_json::Value>,
}

/// What a finish did.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub task: TaskRecord,
    /// False when it repeated an earlier finish: nothing was written.
    pub changed: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Completed { result: serde_json::Value },
    Failed { code: String, message: String },
}

/// What the reconciler did with one expired lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    pub task: TaskId,
    /// SUBMITTED (requeued) or TIMED_OUT.
    pub state: TaskState,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NudgeError {
    #[error("task not found")]
    NotFound,
    #[error("the task has already ended ({0})")]
    Terminal(TaskState),
    #[error("too many nudges: at most {limit} a minute per task")]
    TooMany { limit: u32, retry_after_secs: u64 },
    #[error(transparent)]
    Storage(StoreError),
}

/// Execution: claims, leases, steps, fenced writes, finishing, expiry, nudges.
#[async_trait]
pub trait WorkStore: Send + Sync + 'static {
    /// The oldest SUBMITTED task whose owner is under their concurrency limit, started and
    /// leased to the worker; `None` when there is none.
    async fn claim(&self, claim: Claim) -> Result<Option<Claimed>, WorkError>;

    async fn heartbeat(
        &self,
        id: &TaskId,
        lease: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<Beat, WorkError>;

    async fn begin_step(
        &self,
        id: &TaskId,
        lease: &str,
        step: &str,
        now: DateTime<Utc>,
    ) -> Result<StepStart, WorkError>;

    async fn complete_step(
        &self,
        id: &TaskId,
        lease: &str,
        step: &str,
        epoch: u32,
        checkpoint: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), WorkError>;

    /// Appends a worker's events: fenced by lease and step attempt; step events without an
    /// attempt get their step's current one.
    async fn worker_events(
        &self,
        id: &TaskId,
        lease: &str,
        events: Vec<Event>,
        producer: Option<ProducerStamp>,
        now: DateTime<Utc>,
    ) -> Result<EventsAppended, WorkError>;

    /// Ends the task; repeating the same finish with the same lease answers the same.
    async fn finish(
        &self,
        id: &TaskId,
        lease: &str,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<Finished, WorkError>;

    /// Hands back a task whose claim was answered into a closed connection: it returns to
    /// SUBMITTED as the same attempt (`task_requeued` without a new attempt). Returns whether
    /// it did; `false` when the lease no longer holds the running task.
    async fn release(
        &self,
        id: &TaskId,
        lease: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, WorkError>;

    /// Requeues (or times out, when attempts are used up) every task whose lease expired.
    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<Vec<Expired>, StoreError>;

    /// Queues a nudge for the worker and, in the same transaction, appends `nudge_sent`
    /// with its text and author to the task's events.
    async fn create_nudge(
        &self,
        id: &TaskId,
        nudge: NewNudge<'_>,
        now: DateTime<Utc>,
        per_minute: u32,
    ) -> Result<(), NudgeError>;

    /// Appends `nudge_acknowledged` the first time; later acks change nothing.
    async fn ack_nudge(
        &self,
        id: &TaskId,
        lease: &str,
        nudge_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), WorkError>;

    /// RUNNING or FINALIZING tasks per owner, or of one owner.
    async fn running_by_owner(
        &self,
        owner: Option<UserId>,
    ) -> Result<Vec<(UserId, u64)>, StoreError>;
}

storage_failure!(
    CreateTaskError,
    TransitionFailed,
    AppendEventsError,
    UserError,
    WorkError,
    NudgeError
);

/// The control store's operations share execution's helpers; their errors narrow back here.
impl From<WorkError> for TransitionFailed {
    fn from(e: WorkError) -> Self {
        match e {
            WorkError::NotFound => TransitionFailed::NotFound,
            WorkError::Refused(r) => TransitionFailed::Refused(r),
            WorkError::Storage(m) => TransitionFailed::Storage(m),
            // A state change writes one event without a producer or a lease: a refusal from
            // the stream or a fence would mean the row and its stream disagree.
            other @ (WorkError::Fenced(_) | WorkError::Stream(_)) => {
                TransitionFailed::Storage(StoreError::corrupt(other.to_string()))
            }
        }
    }
}

impl From<WorkError> for AppendEventsError {
    fn from(e: WorkError) -> Self {
        match e {
            WorkError::NotFound => AppendEventsError::NotFound,
            WorkError::Stream(s) => AppendEventsError::Stream(s),
            WorkError::Storage(m) => AppendEventsError::Storage(m),
            other @ (WorkError::Fenced(_) | WorkError::Refused(_)) => {
                AppendEventsError::Storage(StoreError::corrupt(other.to_string()))
            }
        }
    }
}
