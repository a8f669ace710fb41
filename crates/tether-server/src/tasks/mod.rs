//! The tasks API: `/v1/tasks` and each task's events, status and export.

// `pub(crate)` so `crate::openapi` can name the handlers' `#[utoipa::path]` items.
pub(crate) mod events;
pub(crate) mod export;
pub(crate) mod handlers;
mod live;
pub mod log;
pub(crate) mod nudges;

use axum::routing::{get, post};
use axum::Router;
use tether_store::TaskRecord;
use tether_types::Task;

use crate::error::ApiError;
use crate::shared::task_json;
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

/// The task with its status snapshot brought up to date.
pub async fn with_status(state: &AppState, task: TaskRecord) -> Result<Task, ApiError> {
    let snapshot = state
        .views
        .current(state.store.as_ref(), &task.id, state.config.max_read_bytes)
        .await?;
    Ok(task_json(task, Some(snapshot.status)))
}
