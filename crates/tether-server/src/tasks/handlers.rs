//! Creating, reading, listing and cancelling tasks.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use chrono::Utc;
use serde_json::json;
use sha2::{Digest, Sha256};
use tether_core::machine::created_event;
use tether_core::TaskOp;
use tether_store::{NewTask, TaskFilter};
use tether_types::api::check_idempotency_key;
use tether_types::event::format_timestamp;
use tether_types::task::{FieldError, TaskList, Validation};
use tether_types::{Role, TaskId, TaskSpec, TaskState};

use super::with_status;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{limit_param, parse_json};
use crate::shared::{task_json, visible_task};
use crate::AppState;

const DEFAULT_PAGE: usize = 20;
/// A worker seen this recently counts as connected for `validate`.
const WORKER_SEEN_WITHIN_MS: i64 = 60_000;
const MAX_PAGE: usize = 100;

fn invalid(problems: &[FieldError]) -> ApiError {
    let listed: Vec<String> = problems
        .iter()
        .map(|p| format!("{} {}", p.field, p.message))
        .collect();
    ApiError::bad_request(listed.join("; "))
}

#[utoipa::path(
    post,
    path = "/v1/tasks",
    tag = "tasks",
    operation_id = "submit_task",
    summary = "Submit a task",
    request_body = tether_types::TaskSpec,
    params(
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[A-Za-z0-9_-]{1,128}$",
            description = "Makes a retried submission create the task once, per user"),
    ),
    responses(
        (status = 201, description = "The task, created", body = tether_types::Task,
            headers(("Location" = String, description = "The task's URL"))),
        (status = 200, description = "A repeated `Idempotency-Key` with the same body: the original task",
            body = tether_types::Task,
            headers(("Idempotent-Replay" = String, description = "`true`"))),
        (status = 400, description = "`VALIDATION_ERROR`: a bad body or key", body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a worker token", body = tether_types::ErrorBody),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`: the key with a different body",
            body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::User])?;
    let spec: TaskSpec = parse_json(&body)?;
    let problems = spec.problems();
    if !problems.is_empty() {
        return Err(invalid(&problems));
    }
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?;
            check_idempotency_key(key).map_err(ApiError::bad_request)?;
            // The spec as parsed, so formatting differences are the same request.
            let canonical = serde_json::to_vec(&spec).unwrap_or_default();
            Some((key.to_string(), Sha256::digest(&canonical).to_vec()))
        }
    };
    let now = Utc::now();
    let id = TaskId::from_random(rand::random());
    let created = created_event(&spec, &caller.0.user, format_timestamp(now));
    let out = state
        .control
        .create_task(
            NewTask {
                id,
                owner_id: caller.0.user_id,
                spec,
                idempotency,
                now,
            },
            created,
        )
        .await?;
    if !out.replayed {
        state.metrics.transition(TaskState::Submitted);
        state.work_ready.notify_waiters();
    }
    let location = format!("/v1/tasks/{}", out.task.id);
    let task = task_json(out.task, None);
    if out.replayed {
        Ok((StatusCode::OK, [("idempotent-replay", "true")], Json(task)).into_response())
    } else {
        Ok((
            StatusCode::CREATED,
            [(header::LOCATION, location)],
            Json(task),
        )
            .into_response())
    }
}

#[utoipa::path(
    post,
    path = "/v1/tasks/validate",
    tag = "tasks",
    operation_id = "validate_task",
    summary = "Check a task spec without creating anything",
    request_body = tether_types::TaskSpec,
    responses(
        (status = 200, description = "What is wrong with the spec, if anything",
            body = tether_types::task::Validation),
        (status = 400, description = "`VALIDATION_ERROR`: the body is not JSON", body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a worker token", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn validate(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Validation>, ApiError> {
    caller.require(&[Role::Admin, Role::User])?;
    let value: serde_json::Value = parse_json(&body)?;
    let (errors, spec) = match serde_json::from_value::<TaskSpec>(value) {
        Ok(spec) => (spec.problems(), Some(spec)),
        Err(e) => (
            vec![FieldError {
                field: "body".into(),
                message: e.to_string(),
            }],
            None,
        ),
    };
    let mut warnings = Vec::new();
    let seen = state
        .worker_seen_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    if Utc::now().timestamp_millis() - seen > WORKER_SEEN_WITHIN_MS {
        warnings.push(
            "no worker has claimed or heartbeat in the last minute; the task would wait in SUBMITTED"
                .to_string(),
        );
    }
    let running = state
        .work
        .running_by_owner(Some(caller.0.user_id))
        .await?
        .first()
        .map_or(0, |(_, n)| *n);
    let limit = state
        .control
        .user(&caller.0.user)
        .await?
        .and_then(|u| u.max_concurrent)
        .unwrap_or(state.config.max_concurrent);
    if !tether_core::lease::admits(running, limit) {
        warnings.push(format!(
            "you have {running} running tasks, your limit: the task would wait until one ends"
        ));
    }
    if spec.is_some_and(|s| s.max_turns.is_none() && s.max_budget_usd.is_none()) {
        warnings.push("neither max_turns nor max_budget_usd is set: the task has no limit".into());
    }
    Ok(Json(Validation {
        valid: errors.is_empty(),
        errors,
        warnings,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/tasks/{id}",
    tag = "tasks",
    operation_id = "get_task",
    summary = "A task with its status snapshot",
    params(("id" = tether_types::TaskId, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task, with `status`", body = tether_types::Task),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 404, description = "`TASK_NOT_FOUND`, also for another user's task",
            body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let task = visible_task(&state, &caller, &id).await?;
    Ok(Json(with_status(&state, task).await?).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "tasks",
    operation_id = "list_tasks",
    summary = "The caller's tasks (an admin's: all), newest first",
    params(
        ("status" = Option<tether_types::TaskState>, Query, description = "Only tasks in this state"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size; default 20"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
        ("q" = Option<String>, Query, max_length = 200,
            description = "Only tasks whose description, repository or metadata contains this text, ignoring case"),
    ),
    responses(
        (status = 200, description = "A page of tasks", body = tether_types::task::TaskList),
        (status = 400, description = "`VALIDATION_ERROR`: a bad or unknown parameter",
            body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<TaskList>, ApiError> {
    if let Some(unknown) = q
        .keys()
        .find(|k| !["status", "limit", "cursor", "q"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter {unknown:?}; use status, limit, cursor or q"
        )));
    }
    let search = search_param(&q)?;
    let state_filter = q
        .get("status")
        .map(|s| s.parse::<TaskState>())
        .transpose()
        .map_err(ApiError::bad_request)?;
    let limit = limit_param(&q, DEFAULT_PAGE, MAX_PAGE)?;
    let before_seq = q
        .get("cursor")
        .map(|c| c.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("cursor is not one this server gave out"))?;
    let tasks = state
        .control
        .list_tasks(TaskFilter {
            owner_id: caller.owner_filter(),
            state: state_filter,
            before_seq,
            search,
            limit,
        })
        .await?;
    let next_cursor = (tasks.len() == limit)
        .then(|| tasks.last().map(|t| t.seq.to_string()))
        .flatten();
    Ok(Json(TaskList {
        data: tasks.into_iter().map(|t| task_json(t, None)).collect(),
        next_cursor,
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/tasks/{id}",
    tag = "tasks",
    operation_id = "cancel_task",
    summary = "Cancel a task",
    params(("id" = tether_types::TaskId, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task, cancelled", body = tether_types::Task),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a worker token", body = tether_types::ErrorBody),
        (status = 404, description = "`TASK_NOT_FOUND`", body = tether_types::ErrorBody),
        (status = 409, description = "`TASK_ALREADY_TERMINAL`", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let task = visible_task(&state, &caller, &id).await?;
    caller.require(&[Role::Admin, Role::User])?;
    let op = TaskOp::Cancel {
        by: caller.0.user.clone(),
        reason: None,
    };
    let done = state.control.transition(&task.id, op, Utc::now()).await?;
    state.metrics.transition(done.task.state);
    // A running task's slot is free now.
    state.work_ready.notify_waiters();
    Ok(Json(task_json(done.task, None)).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/status/rebuild",
    tag = "tasks",
    operation_id = "rebuild_task_status",
    summary = "Recompute a task's status snapshot from its whole log (admin)",
    params(("id" = tether_types::TaskId, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The recomputed snapshot", body = StatusRebuild),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin token", body = tether_types::ErrorBody),
        (status = 404, description = "`TASK_NOT_FOUND`", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn rebuild(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin])?;
    let task = visible_task(&state, &caller, &id).await?;
    let (status, unchanged) = state
        .views
        .rebuild(state.store.as_ref(), &task.id, state.config.max_read_bytes)
        .await?;
    Ok(Json(json!({ "status": status, "unchanged": unchanged })).into_response())
}

/// `POST /v1/tasks/{id}/status/rebuild` answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StatusRebuild {
    /// The snapshot recomputed from the whole log.
    pub status: tether_types::TaskStatus,
    /// True when the recomputed snapshot equals the one the server held.
    pub unchanged: bool,
}

/// Longest search text `q` takes.
const MAX_SEARCH_CHARS: usize = 200;

/// `q`, trimmed; blank is no search.
fn search_param(q: &HashMap<String, String>) -> Result<Option<String>, ApiError> {
    let Some(text) = q.get("q").map(|t| t.trim()).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_SEARCH_CHARS {
        return Err(ApiError::bad_request(format!(
            "q may be at most {MAX_SEARCH_CHARS} characters"
        )));
    }
    tether_types::text::check_text("q", text).map_err(ApiError::bad_request)?;
    Ok(Some(text.to_string()))
}
