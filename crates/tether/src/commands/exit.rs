//! Exit codes, which scripts rely on: keep them stable.

use tether_client::Error;
use tether_types::TaskState;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit(i32);

impl Exit {
    /// Done; for a watched task: it completed.
    pub const OK: Exit = Exit(0);
    /// The task failed, was cancelled or timed out.
    pub const TASK_NOT_COMPLETED: Exit = Exit(1);
    /// Bad arguments, no permission, or no such task (clap's own usage errors are 2 as well).
    pub const USAGE: Exit = Exit(2);
    /// The server could not be reached or answered with an error of its own.
    pub const FAILURE: Exit = Exit(3);
    /// Ctrl-C, by the shell convention 128 + SIGINT.
    pub const INTERRUPTED: Exit = Exit(130);

    pub fn code(self) -> i32 {
        self.0
    }

    /// A watched task's exit code from its final state.
    pub fn for_state(state: TaskState) -> Exit {
        match state {
            TaskState::Completed => Exit::OK,
            TaskState::Failed | TaskState::Cancelled | TaskState::TimedOut => {
                Exit::TASK_NOT_COMPLETED
            }
            TaskState::Submitted | TaskState::Running | TaskState::Finalizing => Exit::FAILURE,
        }
    }

    /// A watched task's exit code from its terminal event type.
    pub fn for_terminal_kind(kind: &str) -> Exit {
        if kind == tether_types::event::kind::TASK_COMPLETED {
            Exit::OK
        } else {
            Exit::TASK_NOT_COMPLETED
        }
    }

    /// The caller's mistakes (4xx, bad arguments) are 2; everything else is 3.
    pub fn for_error(error: &anyhow::Error) -> Exit {
        if error.downcast_ref::<UsageError>().is_some() {
            return Exit::USAGE;
        }
        match error.downcast_ref::<Error>() {
            Some(Error::Api { status, .. }) if (400..500).contains(status) => Exit::USAGE,
            Some(Error::Usage(_)) => Exit::USAGE,
            Some(e @ Error::Stream { .. }) if !e.is_retryable() => Exit::USAGE,
            _ => Exit::FAILURE,
        }
    }
}

/// A mistake in what the user asked for, found before or without asking the server.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_mistakes_exit_2_and_server_trouble_exits_3() {
        let api = |status: u16| {
            anyhow::Error::new(Error::Api {
                status,
                code: "X".into(),
                message: "m".into(),
                request_id: None,
            })
        };
        assert_eq!(Exit::for_error(&api(404)), Exit::USAGE);
        assert_eq!(Exit::for_error(&api(401)), Exit::USAGE);
        assert_eq!(Exit::for_error(&api(503)), Exit::FAILURE);
        let usage = anyhow::Error::new(UsageError("file exists".into()));
        assert_eq!(Exit::for_error(&usage), Exit::USAGE);
        assert_eq!(Exit::for_error(&anyhow::anyhow!("io")), Exit::FAILURE);
    }

    #[test]
    fn only_a_completed_task_exits_0() {
        assert_eq!(Exit::for_state(TaskState::Completed), Exit::OK);
        for state in [TaskState::Failed, TaskState::Cancelled, TaskState::TimedOut] {
            assert_eq!(Exit::for_state(state), Exit::TASK_NOT_COMPLETED);
        }
        assert_eq!(Exit::for_terminal_kind("task_completed"), Exit::OK);
        assert_eq!(
            Exit::for_terminal_kind("task_cancelled"),
            Exit::TASK_NOT_COMPLETED
        );
    }
}
