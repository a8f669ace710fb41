//! The one place where store errors become HTTP responses.
//!
//! Durable Streams routes answer with the protocol's status codes and headers; the body is
//! Tether's wire error `{"error":{"code","message","request_id"}}`, which clients may show but
//! must not need. Every match here is exhaustive on purpose: a new error without a status does
//! not compile.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use tether_store::{AppendError, CreateError, DeleteError, LookupError};

use crate::headers as h;
use crate::request_id::{RequestId, CURRENT_REQUEST};

/// An error response under construction.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Protocol headers the error carries (`Stream-Closed`, `Producer-Epoch`, ...).
    pub headers: Vec<(HeaderName, String)>,
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            request_id: None,
        }
    }

    pub fn storage(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "STORAGE_UNAVAILABLE",
            message,
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    /// An error answered without a handler (no such route, a method the route lacks, a body
    /// axum could not read or past the limit), given the API's shape: its status kept, a code
    /// named for the status.
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
            StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
            StatusCode::REQUEST_TIMEOUT => "REQUEST_TIMEOUT",
            s if s.is_server_error() => "INTERNAL_ERROR",
            // 400 and the rest of 4xx: axum's rejections of a path, query or body.
            _ => "VALIDATION_ERROR",
        };
        ApiError::new(status, code, message)
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
            tracing::error!(code = self.code, message = %self.message, "request failed");
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

fn storage(message: String) -> ApiError {
    ApiError::storage(message)
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "STREAM_NOT_FOUND", e.to_string())
            }
            LookupError::Gone => ApiError::new(StatusCode::GONE, "STREAM_GONE", e.to_string()),
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
            | CreateError::ForkContentTypeMismatch => {
                ApiError::new(StatusCode::CONFLICT, "STREAM_CONFLICT", msg)
            }
            CreateError::SourceNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "STREAM_NOT_FOUND", msg)
            }
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
            AppendError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "STREAM_NOT_FOUND", msg),
            AppendError::Gone => ApiError::new(StatusCode::GONE, "STREAM_GONE", msg),
            AppendError::Closed { next } => {
                ApiError::new(StatusCode::CONFLICT, "STREAM_CLOSED", msg)
                    .with_header(h::STREAM_CLOSED, "true")
                    .with_header(h::STREAM_NEXT_OFFSET, next)
            }
            AppendError::ContentTypeMismatch => {
                ApiError::new(StatusCode::CONFLICT, "CONTENT_TYPE_MISMATCH", msg)
            }
            AppendError::EmptyBody
            | AppendError::InvalidBody(_)
            | AppendError::EpochNeedsSeqZero => ApiError::bad_request(msg),
            AppendError::SeqConflict => ApiError::new(StatusCode::CONFLICT, "SEQ_CONFLICT", msg),
            AppendError::StaleEpoch { current } => {
                ApiError::new(StatusCode::FORBIDDEN, "STALE_PRODUCER_EPOCH", msg)
                    .with_header(h::PRODUCER_EPOCH, current)
            }
            AppendError::SeqGap { expected, received } => {
                ApiError::new(StatusCode::CONFLICT, "PRODUCER_SEQ_GAP", msg)
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
            DeleteError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "STREAM_NOT_FOUND", msg),
            DeleteError::Gone => ApiError::new(StatusCode::GONE, "STREAM_GONE", msg),
            DeleteError::Storage(m) => storage(m),
        }
    }
}

impl From<tether_store::CreateTaskError> for ApiError {
    fn from(e: tether_store::CreateTaskError) -> Self {
        use tether_store::CreateTaskError as E;
        let msg = e.to_string();
        match e {
            E::KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                msg,
            ),
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
            E::Refused(T::AlreadyTerminal(_)) => {
                ApiError::new(StatusCode::CONFLICT, "TASK_ALREADY_TERMINAL", msg)
            }
            E::Refused(T::NotAllowed { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "INVALID_TRANSITION", msg)
            }
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
            E::Terminal(_) => ApiError::new(StatusCode::CONFLICT, "TASK_ALREADY_TERMINAL", msg),
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
            WorkError::Fenced(Fenced::LeaseLost(_)) => {
                ApiError::new(StatusCode::CONFLICT, "LEASE_LOST", msg)
            }
            // Apart from LEASE_LOST so that the worker gives its command the grace period a
            // cancel promises, whichever of its calls hears of the cancel first.
            WorkError::Fenced(Fenced::Cancelled) => {
                ApiError::new(StatusCode::CONFLICT, "TASK_CANCELLED", msg)
            }
            WorkError::Fenced(Fenced::StaleAttempt { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "STALE_ATTEMPT", msg)
            }
            WorkError::Refused(TransitionError::AlreadyTerminal(_)) => {
                ApiError::new(StatusCode::CONFLICT, "TASK_ALREADY_TERMINAL", msg)
            }
            WorkError::Refused(TransitionError::NotAllowed { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "INVALID_TRANSITION", msg)
            }
            WorkError::Stream(inner) => ApiError::from(inner),
            WorkError::Storage(m) => storage(m),
        }
    }
}

/// The same answer for a task that does not exist and one the caller may not see: no
/// existence oracle.
pub fn task_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "TASK_NOT_FOUND", "task not found")
}
