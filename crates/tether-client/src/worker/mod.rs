//! The worker side of Tether: the protocol's calls ([`api`]) and a runtime that claims
//! tasks and runs each through a [`Runner`], keeping its lease, sending its events and
//! finishing it.
//!
//! The runtime owns everything a runner should not have to get right: heartbeats at a third
//! of the lease, retrying with backoff, idempotent event batches, flushing events before a
//! step completes or the task finishes, and stopping at once when the server fences the
//! lease (DESIGN.md G6). A runner only runs steps and emits events.

pub mod api;
mod lease;
mod retry;
mod run;
mod runtime;
mod sender;
mod stop;

pub use api::ProducerStamp;
pub use run::{check_step_name, Outcome, StepStart, TaskRun, MAX_STEP_CHARS};
pub use runtime::{run_worker, WorkerConfig};
pub use stop::Stop;

use crate::Error;

/// Why a runner's call about its task did not go through.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The work was stopped (cancelled, fenced, shutting down): return without finishing.
    #[error("the task's work was stopped: {0}")]
    Stopped(Stop),
    /// The server refused the call for a reason retrying cannot change.
    #[error(transparent)]
    Api(Error),
    /// The runner asked for something the protocol cannot express (a bad step name).
    #[error("{0}")]
    Invalid(String),
}

/// Runs one claimed task. Implementations: the exec and demo workers of the `tether` binary.
#[async_trait::async_trait]
pub trait Runner: Send + Sync + 'static {
    /// Runs the task to its end. `Err(TaskError::Stopped)` means it was stopped from outside
    /// and must not be finished; any other error fails the task.
    async fn run(&self, task: TaskRun) -> Result<Outcome, TaskError>;
}
