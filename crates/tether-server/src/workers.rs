//! The worker protocol at `/v1/worker/*`: claim (long-poll), heartbeat, steps, fenced event
//! batches, nudge acknowledgements and finish. Every rule lives in the store's transaction;
//! these handlers parse, authorise and translate.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::Utc;
use serde_json::{json, Value};
use tether_store::{Claim, Outcome};
use tether_types::event::{format_timestamp, Appended};
use tether_types::task::Failure;
use tether_types::worker::{
    ClaimRequest, Claimed, Heartbeat, Lease, LeaseRef, Nudge, StepBegun, StepComplete,
    StepCompleted,
};
use tether_types::{Role, TaskId};

use crate::auth::Caller;
use crate::error::{task_not_found, ApiError};
use crate::extract::{parse_json, text_field};
use crate::handover::Unhanded;
use crate::shared::{accept_batch, producer_stamp, task_json};
use crate::shutdown::stopped;
use crate::AppState;

/// [`tether_types::worker::WorkerEvents`] as it arrives: events kept raw, to be checked by [`accept_batch`].
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkerBatch {
    lease: String,
    events: Vec<Box<serde_json::value::RawValue>>,
}

/// The longest a claim may wait.
const MAX_CLAIM_WAIT_MS: u64 = 60_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/worker/claim", post(claim))
        .route("/v1/worker/tasks/{id}/heartbeat", post(heartbeat))
        .route("/v1/worker/tasks/{id}/steps/{step}/begin", post(begin_step))
        .route(
            "/v1/worker/tasks/{id}/steps/{step}/complete",
            post(complete_step),
        )
        .route("/v1/worker/tasks/{id}/events", post(events))
        .route("/v1/worker/tasks/{id}/nudges/{nudge}/ack", post(ack_nudge))
        .route("/v1/worker/tasks/{id}/finish", post(finish))
}

fn worker(caller: &Caller) -> Result<(), ApiError> {
    caller.require(&[Role::Worker, Role::Admin])
}

/// Notes that a worker is connected (for `POST /v1/tasks/validate`).
fn seen(state: &AppState) {
    state.worker_seen_ms.store(
        Utc::now().timestamp_millis(),
        std::sync::atomic::Ordering::Relaxed,
    );
}

fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse().map_err(|_| task_not_found())
}

/// Step names: 1 to 64 of `[A-Za-z0-9_.-]`.
fn step_name(raw: &str) -> Result<&str, ApiError> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(raw)
    } else {
        Err(ApiError::bad_request(format!(
            "{raw:?} is not a step name: use 1 to 64 letters, digits, '_', '-' or '.'"
        )))
    }
}

#[utoipa::path(
    post,
    path = "/v1/worker/claim",
    tag = "workers",
    operation_id = "claim_task",
    summary = "Wait for a task to run and take a lease on it",
    description = "Long-polls for the oldest submitted task whose owner is under its \
        `max_concurrent`, starts it and leases it to the caller.",
    request_body = tether_types::worker::ClaimRequest,
    responses(
        (status = 200, description = "A task to run, its attempt, the lease, and the checkpoints \
            of the steps an earlier attempt completed", body = tether_types::worker::Claimed),
        (status = 204, description = "No task came within `wait_ms` (at most 60000), or the \
            server is shutting down: ask again"),
        (status = 400, description = "`VALIDATION_ERROR`: a bad body, or a `worker` name that \
            is empty or over 128 characters", body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a user token", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    worker(&caller)?;
    seen(&state);
    let request: ClaimRequest = parse_json(&body)?;
    if request.worker.trim().is_empty() || request.worker.len() > 128 {
        return Err(ApiError::bad_request("worker must be 1 to 128 characters"));
    }
    text_field("worker", &request.worker)?;
    let wait = request
        .wait_ms
        .unwrap_or(state.config.long_poll_timeout.as_millis() as u64)
        .min(MAX_CLAIM_WAIT_MS);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait);
    let mut shutdown = state.shutdown.clone();
    loop {
        // Listen before looking, so work that appears in between wakes this claim, whether
        // it appears on this node or (sharing a database) on another.
        let ready = state.work_ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        let remote = state.coord.remote_work().map(|n| n.notified());
        tokio::pin!(remote);
        if let Some(r) = remote.as_mut().as_pin_mut() {
            r.enable();
        }
        if let Some((c, unhanded)) = claim_once(&state, &request.worker).await? {
            let body = Claimed {
                attempt: c.task.attempt,
                task: task_json(c.task, None),
                lease: Lease {
                    id: c.lease.id,
                    expires_at: c.lease.expires_at,
                },
                checkpoints: c.checkpoints.into_iter().collect(),
            };
            let json = serde_json::to_vec(&body)
                .map_err(|e| ApiError::internal("a claim could not be encoded", e))?;
            return Ok(unhanded.respond(json));
        }
        let remote_ready = async {
            match remote.as_mut().as_pin_mut() {
                Some(r) => r.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut ready => {}
            _ = remote_ready => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(StatusCode::NO_CONTENT.into_response()),
            _ = stopped(&mut shutdown) => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}

/// One claim transaction, run apart from the request: if the worker goes away while it
/// commits (hyper drops the request), the claim comes back here to no one and is released.
async fn claim_once(
    state: &AppState,
    worker: &str,
) -> Result<Option<(tether_store::Claimed, Unhanded)>, ApiError> {
    let claim = Claim {
        worker: worker.to_string(),
        lease_id: format!("lease_{}", crate::auth::random_text(20)),
        now: Utc::now(),
        lease_ttl: state.config.lease_ttl,
        default_max_concurrent: state.config.max_concurrent,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let state = state.clone();
    tokio::spawn(async move {
        let claimed = state.work.claim(claim).await.map(|c| {
            c.map(|c| {
                state.metrics.transition(c.task.state);
                let unhanded = Unhanded::new(&state, c.task.id.clone(), c.lease.id.clone());
                (c, unhanded)
            })
        });
        // With the request gone, the claim is dropped here, which releases it.
        let _ = tx.send(claimed);
    });
    let claimed = rx
        .await
        .map_err(|e| ApiError::internal("the claim ended without an answer", e))?;
    Ok(claimed?)
}

#[utoipa::path(
    post,
    path = "/v1/worker/tasks/{id}/heartbeat",
    tag = "workers",
    operation_id = "heartbeat",
    summary = "Extend the lease; learn of a cancel and of pending nudges",
    request_body = tether_types::worker::LeaseRef,
    params(("id" = tether_types::TaskId, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The lease's new expiry, whether to stop, and the nudges not \
            yet acknowledged, oldest first", body = tether_types::worker::Heartbeat),
        (status = 400, description = "`VALIDATION_ERROR`: a bad body", body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a user token", body = tether_types::ErrorBody),
        (status = 404, description = "`TASK_NOT_FOUND`", body = tether_types::ErrorBody),
        (status = 409, description = "`LEASE_LOST`: the lease expired, or the task was requeued \
            or finished (a cancelled task answers 200 with `cancel_requested`)", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Heartbeat>, ApiError> {
    worker(&caller)?;
    seen(&state);
    let id = task_id(&id)?;
    let lease: LeaseRef = parse_json(&body)?;
    let beat = state
        .work
        .heartbeat(
            &id,
            text_field("lease", &lease.lease)?,
            Utc::now(),
            state.config.lease_ttl,
        )
        .await
        .map_err(|e| state.metrics.fenced(e))?;
    Ok(Json(Heartbeat {
        expires_at: beat.expires_at,
        cancel_requested: beat.cancel_requested,
        nudges: beat
            .nudges
            .into_iter()
            .map(|n| Nudge {
                id: n.id,
                message: n.message,
                created_at: n.created_at,
            })
            .collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/worker/tasks/{id}/steps/{step}/begin",
    tag = "workers",
    operation_id = "begin_step",
    summary = "Begin an attempt of a step, or learn that an earlier attempt completed it",
    description = "Beginning a later attempt of a step whose earlier attempt wrote events \
        appends `stream_rewind`. Asking again with the same lease returns the same epoch.",
    request_body = tether_types::worker::LeaseRef,
    params(
        ("id" = tether_types::TaskId, Path, description = "The task's id"),
        ("step" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "The step's name"),
    ),
    responses(
        (status = 200, description = "The epoch to run the step as; or, with `completed`, the \
            checkpoint of an earlier attempt: skip the step", body = tether_types::worker::StepBegun),
        (status = 400, description = "`VALIDATION_ERROR`: a bad body or step name", body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a user token", body = tether_types::ErrorBody),
        (status = 404, description = "`TASK_NOT_FOUND`", body = tether_types::ErrorBody),
        (status = 409, description = "`LEASE_LOST`; `TASK_CANCELLED`: the task was cancelled \
            under this lease", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn begin_step(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, step)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<StepBegun>, ApiError> {
    worker(&caller)?;
    let id = task_id(&id)?;
    let step = step_name(&step)?;
    let lease: LeaseRef = parse_json(&body)?;
    let begun = state
        .work
        .begin_step(&id, text_field("lease", &lease.lease)?, step, Utc::now())
        .await
        .map_err(|e| state.metrics.fenced(e))?;
    Ok(Json(StepBegun {
        epoch: begun.epoch,
        completed: begun.checkpoint.is_some(),
        checkpoint: begun.checkpoint,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/worker/tasks/{id}/steps/{step}/complete",
    tag = "workers",
    operation_id = "complete_step",
    summary = "Complete a step: store its checkpoint and append `step_completed`",
    request_body = tether_types::worker::StepComplete,
    params(
        ("id" = tether_types::TaskId, Path, description = "The task's id"),
        ("step" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "The step's name"),
    ),
    responses(
        (status = 200, description = "Completed (or already completed with this epoch)",
            body = tether_types::worker::StepCompleted),
        (status = 400, description = "`VALIDATION_ERROR`: a bad body or step name", body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a user token", body = tether_types::ErrorBody),
        (status = 404, description = "`TASK_NOT_FOUND`", body = tether_types::ErrorBody),
        (status = 409, description = "`LEASE_LOST`; `TASK_CANCELLED`; `STALE_ATTEMPT`: the epoch is not the step's \
            newest, or the step was never begun", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn complete_step(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, step)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<StepCompleted>, ApiError> {
    worker(&caller)?;
    let id = task_id(&id)?;
    let step = step_name(&step)?;
    let done: StepComplete = parse_json(&body)?;
    state
        .work
        .complete_step(
            &id,
            text_field("lease", &done.lease)?,
            step,
            done.epoch,
            done.checkpoint,
            Utc::now(),
        )
        .await
        .map_err(|e| state.metrics.fenced(e))?;
    Ok(Json(StepCompleted { epoch: done.epoch }))
}

#[utoipa::path(
    post,
    path = "/v1/worker/tasks/{id}/events",
    tag = "workers",
    operation_id = "worker_events",
    summary = "Append a batch of events under the lease",
    description = "An event with a `step` gets that step's current epoch as its `attempt` \
        unless it names one. One refused event refuses the whole batch.",
    request_body = tether_types::worker::WorkerEvents,
    params(
        ("id" = tether_types::TaskId, Path, description = "The task's id"),
        ("Producer-Id" = Option<String>, Header,
            description = "An idempotent producer's id, as in the Durable Streams protocol"),
        ("Producer-Epoch" = Option<u64>, Header, description = "The producer's epoch"),
        ("Producer-Seq" = Option<u64>, Header,
            description = "The batch's sequence number: a retried batch is stored once"),
    ),
    responses(
        (status = 200, description = "Stored (or, for a repeated producer batch, already stored)",
            body = tether_types::event::Appended),
        (status = 400, description = "`VALIDATION_ERROR`: a bad body, no events, a bad event, \
            or a type the server reserves", body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a user token; `STALE_PRODUCER_EPOCH`",
            body = tether_types::ErrorBody),
        (status = 404, description = "`TASK_NOT_FOUND`", body = tether_types::ErrorBody),
        (status = 409, description = "`LEASE_LOST`; `TASK_CANCELLED`; `STALE_ATTEMPT`: an event for an older \
            attempt of a step, or for a step never begun; `PRODUCER_SEQ_GAP`", body = tether_types::ErrorBody),
        (status = 413, description = "`EVENT_TOO_LARGE`: an event over 1 MiB", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Appended>, ApiError> {
    worker(&caller)?;
    let id = task_id(&id)?;
    let batch: RawWorkerBatch = parse_json(&body)?;
    let now = Utc::now();
    let events = accept_batch(&batch.events, &format_timestamp(now))?;
    let count = events.len();
    let producer = producer_stamp(&headers)?;
    let out = state
        .work
        .worker_events(
            &id,
            text_field("lease", &batch.lease)?,
            events,
            producer,
            now,
        )
        .await
        .map_err(|e| state.metrics.fenced(e))?;
    if out.appended {
        state.metrics.task_events(count);
    }
    Ok(Json(Appended {
        next_after: out.next,
        appended: out.appended,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/worker/tasks/{id}/nudges/{nudge}/ack",
    tag = "workers",
    operation_id = "ack_nudge",
    summary = "Acknowledge a nudge: append `nudge_acknowledged` once",
    request_body = tether_types::worker::LeaseRef,
    params(
        ("id" = tether_types::TaskId, Path, description = "The task's id"),
        ("nudge" = String, Path, description = "The nudge's id, from a heartbeat"),
    ),
    responses(
        (status = 200, description = "Acknowledged (or already acknowledged): `{}`", body = Object),
        (status = 400, description = "`VALIDATION_ERROR`: a bad body", body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a user token", body = tether_types::ErrorBody),
        (status = 404, description = "`TASK_NOT_FOUND`: no such task, or no such nudge on it",
            body = tether_types::ErrorBody),
        (status = 409, description = "`LEASE_LOST`; `TASK_CANCELLED`: the task was cancelled \
            under this lease", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn ack_nudge(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, nudge)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    worker(&caller)?;
    let id = task_id(&id)?;
    let lease: LeaseRef = parse_json(&body)?;
    state
        .work
        .ack_nudge(
            &id,
            text_field("lease", &lease.lease)?,
            text_field("nudge", &nudge)?,
            Utc::now(),
        )
        .await
        .map_err(|e| state.metrics.fenced(e))?;
    Ok(Json(json!({})))
}

#[utoipa::path(
    post,
    path = "/v1/worker/tasks/{id}/finish",
    tag = "workers",
    operation_id = "finish_task",
    summary = "End the task as completed or failed, and give up the lease",
    description = "Idempotent: repeating the same finish with the same lease answers the same \
        and appends nothing.",
    request_body = tether_types::worker::Finish,
    params(("id" = tether_types::TaskId, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task, finished", body = tether_types::Task),
        (status = 400, description = "`VALIDATION_ERROR`: a bad body", body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a user token", body = tether_types::ErrorBody),
        (status = 404, description = "`TASK_NOT_FOUND`", body = tether_types::ErrorBody),
        (status = 409, description = "`LEASE_LOST`; `TASK_CANCELLED`; `TASK_ALREADY_TERMINAL`; \
            `INVALID_TRANSITION`: the task's state does not allow this outcome", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn finish(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    worker(&caller)?;
    let id = task_id(&id)?;
    let finish: tether_types::worker::Finish = parse_json(&body)?;
    let outcome = match finish.outcome {
        tether_types::worker::Outcome::Completed => Outcome::Completed {
            result: finish.result.unwrap_or(Value::Null),
        },
        tether_types::worker::Outcome::Failed => {
            let Failure { code, message } = finish.error.unwrap_or(Failure {
                code: "FAILED".into(),
                message: String::new(),
            });
            text_field("error.code", &code)?;
            Outcome::Failed { code, message }
        }
    };
    let finished = state
        .work
        .finish(
            &id,
            text_field("lease", &finish.lease)?,
            outcome,
            Utc::now(),
        )
        .await
        .map_err(|e| state.metrics.fenced(e))?;
    if finished.changed {
        state.metrics.transition(finished.task.state);
        state.work_ready.notify_waiters();
    }
    Ok(Json(task_json(finished.task, None)).into_response())
}
