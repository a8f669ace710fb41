//! The Durable Streams protocol at `/v1/stream/{path}`.

pub(crate) mod direct;
mod frames;
mod park;
mod read;
mod response;
mod sse;
pub(crate) mod write;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::get;
use axum::Router;
use tether_store::{Access, CreateError};
use tether_types::task::TASK_STREAM_PREFIX;
use tether_types::ErrorCode;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::text_field;
use crate::headers::PREFIX;
use crate::shared::visible_task;
use crate::{auth, AppState};

pub use frames::FrameShare;
pub use park::Parking;

pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new().route(
        "/v1/stream/{*path}",
        get(read::get)
            .head(read::head)
            .put(write::put)
            .post(write::post)
            .delete(write::delete)
            .layer(DefaultBodyLimit::max(state.config.max_append_bytes)),
    )
}

/// Who a stream request acts for, once admitted.
pub(crate) struct Admitted {
    pub caller: Caller,
    /// What the request may see of the stream it names: every stream the caller sees (see
    /// [`Caller::stream_access`]), or all of a task's stream once the task is visible.
    pub access: Access,
}

/// Streams need a token when auth is on. A plain stream is seen by its owner and by admins
/// (the store answers "not found" to anyone else). Task streams are readable by whoever may
/// see the task and writable by no one: their events go through the tasks API, which keeps
/// the lifecycle rules (one terminal event, last).
pub(crate) async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    method: &Method,
) -> Result<Admitted, ApiError> {
    // A plain call at the top of each handler rather than a middleware layer: this is the
    // append path, and a layer costs a boxed clone of the route on every request.
    let caller = auth::authenticate(state, method, headers).await?;
    // One memchr over the path: a NUL (`%00`) cannot be stored as a path by PostgreSQL.
    text_field("the stream path", path)?;
    if let Some(task_id) = path.strip_prefix(TASK_STREAM_PREFIX) {
        if !matches!(*method, Method::GET | Method::HEAD) {
            return Err(ApiError::new(ErrorCode::ReadOnlyStream, "task streams are written by Tether itself; producers use POST /v1/tasks/{id}/events",
            ));
        }
        visible_task(state, &caller, task_id).await?;
        return Ok(Admitted {
            caller,
            access: Access::All,
        });
    }
    let access = caller.stream_access();
    Ok(Admitted { caller, access })
}

/// What the caller may see of a fork's source, by the rule of the source itself: a task's
/// stream is readable by whoever may see the task, a plain stream by its owner and admins.
/// A source the caller may not read is answered exactly as a missing one (same status, code
/// and message), so a fork is no existence oracle and no way around either rule.
pub(crate) async fn source_access(
    state: &AppState,
    caller: &Caller,
    source: &str,
) -> Result<Access, ApiError> {
    match source.strip_prefix(TASK_STREAM_PREFIX) {
        Some(task_id) => match visible_task(state, caller, task_id).await {
            Ok(_) => Ok(Access::All),
            // Hidden or missing alike; a storage failure stays one.
            Err(e) if e.status == StatusCode::NOT_FOUND => {
                Err(ApiError::from(CreateError::SourceNotFound))
            }
            Err(e) => Err(e),
        },
        None => Ok(caller.stream_access()),
    }
}

/// The stream path inside a `Stream-Forked-From` value, which names the source by its URL path.
pub fn source_path(value: &str) -> &str {
    let value = value.trim();
    value
        .strip_prefix(PREFIX)
        .or_else(|| value.strip_prefix('/'))
        .unwrap_or(value)
}
