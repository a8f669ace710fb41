//! The tasks API: `/v1/tasks` and each task's events, status and export.

// `pub(crate)` so `crate::openapi` can name the handlers' `#[utoipa::path]` items.
pub(crate) mod events;
pub(crate) mod export;
pub(crate) mod handlers;
mod live;
pub mod log;
pub(crate) mod nudges;

pub use handlers::{parse_json, text_field};

use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use tether_store::TaskRecord;
use tether_types::{Task, TaskId, TaskStatus};

use crate::auth::Caller;
use crate::error::{task_not_found, ApiError};
use crate::streams::PREFIX;
use crate::AppState;

pub use log::Views;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tasks", post(handlers::create).get(handlers::list))
        .route("/v1/tasks/validate", post(handlers::validate))
        .route(
            "/v1/tasks/{id}",
            get(handlers::get_task).delete(handlers::cancel),
        )
        .route(
            "/v1/tasks/{id}/events",
            get(events::get).post(events::append),
        )
        .route("/v1/tasks/{id}/status/rebuild", post(handlers::rebuild))
        .route("/v1/tasks/{id}/export", get(export::export))
        .route("/v1/tasks/{id}/nudges", post(nudges::create))
}

pub fn timestamp(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

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

/// The task with its status snapshot brought up to date.
pub async fn with_status(state: &AppState, task: TaskRecord) -> Result<Task, ApiError> {
    let snapshot = state
        .views
        .current(state.store.as_ref(), &task.id, state.config.max_read_bytes)
        .await?;
    Ok(task_json(task, Some(snapshot.status)))
}

/// A `limit`-like query parameter: a number in `1..=max`, `default` when absent.
pub fn limit_param(
    q: &std::collections::HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be a number from 1 to {max}"))
            }),
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

/// Resolves once the server starts shutting down.
pub async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
