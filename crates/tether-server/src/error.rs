//! The one place where store errors become HTTP responses.
//!
//! Durable Streams routes answer with the protocol's status codes and headers; the body is
//! Tether's wire error `{"error":{"code","message","request_id"}}`, which clients may show but
//! must not need. Every match here is exhaustive on purpose: a new error without a status does
//! not compile.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use std::error::Error as StdError;
use std::sync::Arc;

use tether_store::{AppendError, CreateError, DeleteError, LookupError, StoreError};
use tether_types::ErrorCode;

use crate::headers as h;
use crate::request_id::{RequestId, CURRENT_REQUEST};

/// An error response under construction.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Protocol headers the error carries (`Stream-Closed`, `Producer-Epoch`, ...).
    pub headers: Vec<(HeaderName, String)>,
    pub request_id: Option<String>,
    /// What caused a server error, logged with its whole chain and never sent.
    pub cause: Option<Arc<dyn StdError + Send + Sync>>,
}

impl ApiError {
    /// An error answered with its code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::with_status(status, code, message)
    }

    /// An error answered with a status its code does not choose (a framework's rejection).
    fn with_status(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            request_id: None,
            cause: None,
        }
    }

    /// A failure of the server itself (a value it could not encode, a task that ended
    /// without an answer): 500, its cause logged.
    pub fn internal(
        message: impl Into<String>,
        cause: impl StdError + Send + Sync + 'static,
    ) -> Self {
        ApiError::new(ErrorCode::InternalError, message).caused_by(Arc::new(cause))
    }

    pub fn caused_by(mut self, cause: Arc<dyn StdError + Send + Sync>) -> Self {
        self.cause = Some(cause);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::ValidationError, message)
    }

    /// An error answered without a handler (no such route, a method the route lacks, a body
    /// axum could not read or past the limit), given the API's shape: its status kept, a code
    /// named for the status.
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
            s if s.is_server_error() => ErrorCode::InternalError,
            // 400 and the rest of 4xx: axum's rejections of a path, query or body.
            _ => ErrorCode::ValidationError,
        };
        ApiError::with_status(status, code, message)
    }

    pub fn with_header(mut self, name: HeaderName, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    pub fn for_request(mut self, id: &RequestId) -> Self {
        self.request_id = Some(id.0.clone());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            match &self.cause {
                Some(cause) => tracing::error!(
                    code = self.code.as_str(),
                    message = %self.message,
                    cause = %Chain(cause.as_ref()),
                    "request failed"
                ),
                None => {
                    tracing::error!(code = self.code.as_str(), message = %self.message, "request failed")
                }
            }
        }
        let request_id = self
            .request_id
            .or_else(|| CURRENT_REQUEST.try_with(Clone::clone).ok());
        let body = json!({"error": {
            "code": self.code,
            "message": self.message,
            "request_id": request_id,
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
        response
    }
}

/// An error and its sources, `: `-separated: what a log line needs to say what happened.
struct Chain<'a>(&'a (dyn StdError + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

/// A storage failure by what it means to the client: try again later (the database is
/// unreachable or busy, the server is stopping, or a conflict outlasted the retries), a
/// concurrent change it did not expect, or stored data that does not read back, which is the
/// server's fault and no retry fixes. Every one is logged with its cause chain.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        let code = match &e {
            StoreError::Unavailable { .. }
            | StoreError::ShutDown
            | StoreError::Conflict {
                retryable: true, ..
            } => ErrorCode::StorageUnavailable,
            StoreError::Conflict {
                retryable: false, ..
            } => ErrorCode::StorageConflict,
            StoreError::Corrupt { .. } => ErrorCode::InternalError,
        };
        ApiError::new(code, message).caused_by(Arc::new(e))
    }
}

fn storage(e: StoreError) -> ApiError {
    ApiError::from(e)
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NotFound => ApiError::new(ErrorCode::StreamNotFound, e.to_string()),
            LookupError::Gone => ApiError::new(ErrorCode::StreamGone, e.to_string()),
            LookupError::OffsetBeyondTail => ApiError::bad_request(e.to_string()),
            LookupError::Storage(m) => storage(m),
        }
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        let msg = e.to_string();
        match e {
            CreateError::ConfigMismatch
            | CreateError::PathTaken
            | CreateError::PathBlocked
            | CreateError::SourceGone
            | CreateError::ForkContentTypeMismatch => ApiError::new(ErrorCode::StreamConflict, msg),
            CreateError::SourceNotFound => ApiError::new(ErrorCode::StreamNotFound, msg),
            CreateError::ForkOffsetBeyondTail
            | CreateError::SubOffsetOutOfRange
            | CreateError::InvalidBody(_) => ApiError::bad_request(msg),
            CreateError::Storage(m) => storage(m),
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        let msg = e.to_string();
        match e {
            AppendError::NotFound => ApiError::new(ErrorCode::StreamNotFound, msg),
            AppendError::Gone => ApiError::new(ErrorCode::StreamGone, msg),
            AppendError::Closed { next } => ApiError::new(ErrorCode::StreamClosed, msg)
                .with_header(h::STREAM_CLOSED, "true")
                .with_header(h::STREAM_NEXT_OFFSET, next),
            AppendError::ContentTypeMismatch => ApiError::new(ErrorCode::ContentTypeMismatch, msg),
            AppendError::EmptyBody
            | AppendError::InvalidBody(_)
            | AppendError::EpochNeedsSeqZero => ApiError::bad_request(msg),
            AppendError::SeqConflict => ApiError::new(ErrorCode::SeqConflict, msg),
            AppendError::StaleEpoch { current } => {
                ApiError::new(ErrorCode::StaleProducerEpoch, msg)
                    .with_header(h::PRODUCER_EPOCH, current)
            }
            AppendError::SeqGap { expected, received } => {
                ApiError::new(ErrorCode::ProducerSeqGap, msg)
                    .with_header(h::PRODUCER_EXPECTED_SEQ, expected)
                    .with_header(h::PRODUCER_RECEIVED_SEQ, received)
            }
            AppendError::Storage(m) => storage(m),
        }
    }
}

impl From<DeleteError> for ApiError {
    fn from(e: DeleteError) -> Self {
        let msg = e.to_string();
        match e {
            DeleteError::NotFound => ApiError::new(ErrorCode::StreamNotFound, msg),
            DeleteError::Gone => ApiError::new(ErrorCode::StreamGone, msg),
            DeleteError::Storage(m) => storage(m),
        }
    }
}

impl From<tether_store::CreateTaskError> for ApiError {
    fn from(e: tether_store::CreateTaskError) -> Self {
        use tether_store::CreateTaskError as E;
        let msg = e.to_string();
        match e {
            E::KeyReused => ApiError::new(ErrorCode::IdempotencyKeyReused, msg),
            E::Storage(m) => storage(m),
        }
    }
}

impl From<tether_store::TransitionFailed> for ApiError {
    fn from(e: tether_store::TransitionFailed) -> Self {
        use tether_core::TransitionError as T;
        use tether_store::TransitionFailed as E;
        let msg = e.to_string();
        match e {
            E::NotFound => task_not_found(),
            E::Refused(T::AlreadyTerminal(_)) => ApiError::new(ErrorCode::TaskAlreadyTerminal, msg),
            E::Refused(T::NotAllowed { .. }) => ApiError::new(ErrorCode::InvalidTransition, msg),
            E::Storage(m) => storage(m),
        }
    }
}

impl From<tether_store::AppendEventsError> for ApiError {
    fn from(e: tether_store::AppendEventsError) -> Self {
        use tether_store::AppendEventsError as E;
        let msg = e.to_string();
        match e {
            E::NotFound => task_not_found(),
            E::Terminal(_) => ApiError::new(ErrorCode::TaskAlreadyTerminal, msg),
            E::Stream(inner) => ApiError::from(inner),
            E::Storage(m) => storage(m),
        }
    }
}

impl From<tether_store::WorkError> for ApiError {
    fn from(e: tether_store::WorkError) -> Self {
        use tether_core::lease::Fenced;
        use tether_core::TransitionError;
        use tether_store::WorkError;
        let msg = e.to_string();
        match e {
            WorkError::NotFound => task_not_found(),
            WorkError::Fenced(Fenced::LeaseLost(_)) => ApiError::new(ErrorCode::LeaseLost, msg),
            // Apart from LEASE_LOST so that the worker gives its command the grace period a
            // cancel promises, whichever of its calls hears of the cancel first.
            WorkError::Fenced(Fenced::Cancelled) => ApiError::new(ErrorCode::TaskCancelled, msg),
            WorkError::Fenced(Fenced::StaleAttempt { .. }) => {
                ApiError::new(ErrorCode::StaleAttempt, msg)
            }
            WorkError::Refused(TransitionError::AlreadyTerminal(_)) => {
                ApiError::new(ErrorCode::TaskAlreadyTerminal, msg)
            }
            WorkError::Refused(TransitionError::NotAllowed { .. }) => {
                ApiError::new(ErrorCode::InvalidTransition, msg)
            }
            WorkError::Stream(inner) => ApiError::from(inner),
            WorkError::Storage(m) => storage(m),
        }
    }
}

impl From<tether_store::UserError> for ApiError {
    fn from(e: tether_store::UserError) -> Self {
        use tether_store::UserError;
        let msg = e.to_string();
        match e {
            UserError::Exists => ApiError::new(ErrorCode::UserExists, msg),
            UserError::NotFound => ApiError::new(ErrorCode::UserNotFound, msg),
            UserError::TokenNotFound => ApiError::new(ErrorCode::TokenNotFound, msg),
            UserError::Storage(e) => ApiError::from(e),
        }
    }
}

impl From<tether_store::NudgeError> for ApiError {
    fn from(e: tether_store::NudgeError) -> Self {
        use tether_store::NudgeError;
        let msg = e.to_string();
        match e {
            NudgeError::NotFound => task_not_found(),
            NudgeError::Terminal(_) => ApiError::new(ErrorCode::TaskAlreadyTerminal, msg),
            NudgeError::TooMany {
                retry_after_secs, ..
            } => ApiError::new(ErrorCode::TooManyNudges, msg)
                .with_header(axum::http::header::RETRY_AFTER, retry_after_secs),
            NudgeError::Storage(e) => ApiError::from(e),
        }
    }
}

/// The same answer for a task that does not exist and one the caller may not see: no
/// existence oracle.
pub fn task_not_found() -> ApiError {
    ApiError::new(ErrorCode::TaskNotFound, "task not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(e: StoreError) -> (StatusCode, ErrorCode) {
        let api = ApiError::from(e);
        assert!(
            api.cause.is_some(),
            "a storage failure keeps its cause for the log"
        );
        (api.status, api.code)
    }

    #[test]
    fn storage_failures_answer_by_whether_a_retry_can_help() {
        let io = || std::io::Error::other("disk on fire");
        let unavailable = StoreError::unavailable_by("writing", io());
        assert_eq!(
            answer(unavailable),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StorageUnavailable
            )
        );
        assert_eq!(
            answer(StoreError::ShutDown).1,
            ErrorCode::StorageUnavailable
        );
        assert_eq!(
            answer(StoreError::conflict_by("deadlock", true, io())),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StorageUnavailable
            )
        );
        assert_eq!(
            answer(StoreError::conflict_by("unique", false, io())),
            (StatusCode::CONFLICT, ErrorCode::StorageConflict)
        );
        assert_eq!(
            answer(StoreError::corrupt_by("a task's spec", io())),
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError)
        );
    }

    #[test]
    fn the_log_line_of_a_failure_carries_every_cause() {
        let e = StoreError::corrupt_by("task t1's spec", std::io::Error::other("EOF at 12"));
        let text = Chain(&e).to_string();
        assert_eq!(text, "corrupt stored data: task t1's spec: EOF at 12");
    }
}
