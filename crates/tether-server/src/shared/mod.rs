//! What more than one resource needs of tasks and producers, kept below the resources so that
//! none of them reaches into another: a task as the API shows it and who may see it, the
//! producer headers, and a batch of events as a producer sends it.

mod batch;
mod producer;

use tether_store::TaskRecord;
use tether_types::{Task, TaskId, TaskStatus};

use crate::auth::Caller;
use crate::error::{task_not_found, ApiError};
use crate::headers::PREFIX;
use crate::AppState;

pub use batch::accept_batch;
pub use producer::producer_stamp;

/// The task as the API shows it.
pub fn task_json(task: TaskRecord, status: Option<TaskStatus>) -> Task {
    Task {
        stream_url: format!("{PREFIX}{}", task.id.stream_path()),
        id: task.id,
        owner: task.owner,
        state: task.state,
        attempt: task.attempt,
        spec: task.spec,
        created_at: task.created_at,
        updated_at: task.updated_at,
        status,
    }
}

/// The task `raw_id` names, if it exists and the caller may see it; otherwise 404.
pub async fn visible_task(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
) -> Result<TaskRecord, ApiError> {
    let Ok(id) = raw_id.parse::<TaskId>() else {
        return Err(task_not_found());
    };
    match state.control.task(&id).await {
        Ok(Some(task)) if caller.can_see(&task) => Ok(task),
        Ok(_) => Err(task_not_found()),
        Err(e) => Err(ApiError::from(e)),
    }
}
