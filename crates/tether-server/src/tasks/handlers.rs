//! Creating, reading, listing and cancelling tasks.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::{Digest, Sha256};
use tether_core::machine::created_event;
use tether_core::TaskOp;
use tether_store::{NewTask, TaskFilter};
use tether_types::api::check_idempotency_key;
use tether_types::task::{FieldError, TaskList, Validation};
use tether_types::{Role, TaskId, TaskSpec, TaskState};

use super::{limit_param, task_json, timestamp, visible_task, with_status};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

/// A JSON body, or a 400 that says what is wrong with it.
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn invalid(problems: &[FieldError]) -> ApiError {
    let listed: Vec<String> = problems
        .iter()
        .map(|p| format!("{} {}", p.field, p.message))
        .collect();
    ApiError::bad_request(listed.join("; "))
}

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
    let created = created_event(&spec, &caller.0.user, timestamp(now));
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

pub async fn validate(caller: Caller, body: Bytes) -> Result<Json<Validation>, ApiError> {
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
    let mut warnings = vec![
        "no worker has connected to this server yet; the task would wait in SUBMITTED".to_string(),
    ];
    if spec.is_some_and(|s| s.max_turns.is_none() && s.max_budget_usd.is_none()) {
        warnings.push("neither max_turns nor max_budget_usd is set: the task has no limit".into());
    }
    Ok(Json(Validation {
        valid: errors.is_empty(),
        errors,
        warnings,
    }))
}

pub async fn get_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let task = visible_task(&state, &caller, &id).await?;
    Ok(Json(with_status(&state, task).await?).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<TaskList>, ApiError> {
    if let Some(unknown) = q
        .keys()
        .find(|k| !["status", "limit", "cursor"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter {unknown:?}; use status, limit or cursor"
        )));
    }
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
            limit,
        })
        .await
        .map_err(ApiError::storage)?;
    let next_cursor = (tasks.len() == limit)
        .then(|| tasks.last().map(|t| t.seq.to_string()))
        .flatten();
    Ok(Json(TaskList {
        data: tasks.into_iter().map(|t| task_json(t, None)).collect(),
        next_cursor,
    }))
}

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
    Ok(Json(task_json(done.task, None)).into_response())
}

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
