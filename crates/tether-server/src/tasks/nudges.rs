//! `POST /v1/tasks/{id}/nudges`: a short message to a running agent, recorded with its author
//! by a `nudge_sent` event, delivered with the worker's next heartbeat and acknowledged by a
//! `nudge_acknowledged` event.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use chrono::Utc;
use tether_types::worker::{NewNudge, NudgeCreated, MAX_NUDGE_CHARS};
use tether_types::Role;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{parse_json, text_field};
use crate::shared::visible_task;
use crate::AppState;

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/nudges",
    tag = "tasks",
    operation_id = "nudge_task",
    summary = "Send a short message to a running task",
    description = "Accepting it appends `nudge_sent` (its id, text and author) to the task's \
        events. The worker gets it with its next heartbeat; its acknowledgement appends \
        `nudge_acknowledged`.",
    request_body = tether_types::worker::NewNudge,
    params(("id" = tether_types::TaskId, Path, description = "The task's id")),
    responses(
        (status = 202, description = "Accepted: delivered with the worker's next heartbeat",
            body = tether_types::worker::NudgeCreated),
        (status = 400, description = "`VALIDATION_ERROR`: a bad body, or a message that is \
            empty or over 2000 characters after trimming", body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a worker token", body = tether_types::ErrorBody),
        (status = 404, description = "`TASK_NOT_FOUND`, also for another user's task",
            body = tether_types::ErrorBody),
        (status = 409, description = "`TASK_ALREADY_TERMINAL`", body = tether_types::ErrorBody),
        (status = 429, description = "`TOO_MANY_NUDGES`: over the per-task limit a minute \
            (`nudges_per_minute`, default 10)", body = tether_types::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until another nudge is accepted"))),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let task = visible_task(&state, &caller, &id).await?;
    caller.require(&[Role::Admin, Role::User])?;
    let nudge: NewNudge = parse_json(&body)?;
    let message = text_field("message", nudge.message.trim())?;
    if message.is_empty() {
        return Err(ApiError::bad_request("message must not be empty"));
    }
    let chars = message.chars().count();
    if chars > MAX_NUDGE_CHARS {
        return Err(ApiError::bad_request(format!(
            "message has {chars} characters; at most {MAX_NUDGE_CHARS} are allowed"
        )));
    }
    let nudge_id = format!("ndg_{}", crate::auth::random_text(20));
    state
        .work
        .create_nudge(
            &task.id,
            tether_store::NewNudge {
                id: &nudge_id,
                message,
                author: &caller.0.user,
            },
            Utc::now(),
            state.config.nudges_per_minute,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(NudgeCreated { id: nudge_id })).into_response())
}
