//! `GET /v1/tasks/{id}/export`: the task and every event as JSON lines, streamed.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use tether_types::Offset;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{log, with_status};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::shared::visible_task;
use crate::AppState;

const BATCH: usize = 1000;

#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/export",
    tag = "tasks",
    operation_id = "export_task",
    summary = "The task and every event, as JSON lines",
    params(("id" = tether_types::TaskId, Path, description = "The task's id")),
    responses(
        (status = 200, description = "A first line `{\"task\":Task}`, then one `EventAt` per line",
            body = ExportLine, content_type = "application/x-ndjson"),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 404, description = "`TASK_NOT_FOUND`", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let task = visible_task(&state, &caller, &id).await?;
    let id = task.id.clone();
    let task = with_status(&state, task).await?;
    let mut head = serde_json::to_vec(&json!({ "task": task }))
        .map_err(|e| ApiError::internal("the task could not be encoded", e))?;
    head.push(b'\n');
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(8);
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(head))).await.is_err() {
            return;
        }
        let mut cursor = Offset(0);
        loop {
            let read = match log::read(
                state.store.as_ref(),
                &id,
                cursor,
                BATCH,
                None,
                state.config.max_read_bytes,
            )
            .await
            {
                Ok(read) => read,
                Err(e) => {
                    // The body has started; a last line says why it is incomplete.
                    let line = json!({"error": {"code": e.code, "message": e.message}});
                    let _ = tx.send(Ok(Bytes::from(format!("{line}\n")))).await;
                    return;
                }
            };
            let mut lines = Vec::new();
            for e in &read.events {
                if serde_json::to_writer(&mut lines, e).is_ok() {
                    lines.push(b'\n');
                }
            }
            if !lines.is_empty() && tx.send(Ok(Bytes::from(lines))).await.is_err() {
                return;
            }
            cursor = read.next;
            if read.at_end() || read.events.is_empty() {
                return;
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// The first line of an export.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ExportHead {
    pub task: tether_types::Task,
}

/// One line of `GET /v1/tasks/{id}/export`: an `ExportHead` first, then one `EventAt` per
/// event. If reading fails midway, a last line `{"error":{"code","message"}}` says why.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Describes the lines; the export handler writes them itself.
pub enum ExportLine {
    Head(Box<ExportHead>),
    Event(tether_types::EventAt),
}
