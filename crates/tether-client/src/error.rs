//! What a call to the Tether API can fail with.

use tether_types::{ErrorBody, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status; `code` is its stable error code.
    #[error("{message} ({code}, HTTP {status}{})", request_suffix(request_id))]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        request_id: Option<String>,
    },
    /// The server ended a live stream with an `event: error` frame. It carries no HTTP status
    /// (the stream had already started with 200), only the error body.
    #[error(
        "the server ended the stream: {message} ({code}{})",
        request_suffix(request_id)
    )]
    Stream {
        code: ErrorCode,
        message: String,
        request_id: Option<String>,
    },
    /// No answer: connection refused or reset, timeout, a body cut short. The message carries
    /// the whole cause chain ("connection refused" is what a person needs to read), so the
    /// reqwest error is not also exposed as `source()`, which would print it twice.
    #[error("cannot reach the server: {}", chain(.0))]
    Network(reqwest::Error),
    /// A live stream stopped without an error to show for it: silence past the keep-alive
    /// interval, or an end before the task's terminal event.
    #[error("the live stream was interrupted: {0}")]
    Interrupted(String),
    /// An answer that is not what the API documents.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// The client was given something it cannot send (a base URL that is not http).
    #[error("{0}")]
    Usage(String),
}

/// Error codes that describe the request, not the server's health: asking again gives the
/// same answer.
const CALLER_CODES: [ErrorCode; 6] = [
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::TaskNotFound,
    ErrorCode::ValidationError,
    ErrorCode::UserNotFound,
    ErrorCode::TokenNotFound,
];

/// Codes that tell a worker its claim on a task is over.
const FENCED_CODES: [ErrorCode; 3] = [
    ErrorCode::LeaseLost,
    ErrorCode::StaleAttempt,
    ErrorCode::TaskAlreadyTerminal,
];

impl Error {
    /// Worth trying again later: the network failed or the server had a problem of its own.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Network(_) | Error::Interrupted(_) => true,
            Error::Api { status, .. } => *status >= 500,
            Error::Stream { code, .. } => !CALLER_CODES.contains(code),
            Error::Decode(_) | Error::Usage(_) => false,
        }
    }

    /// The server refused a worker's write because its lease or step attempt was superseded,
    /// or the task ended: the work must stop at once, and retrying cannot help (G6).
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Api { status: 409, code, .. } if FENCED_CODES.contains(code))
    }

    /// The server refused a worker's write because the task was cancelled while the worker's
    /// lease held it: the work must stop, but gracefully (the command gets its grace period),
    /// unlike a lost lease, after which another worker may own the task.
    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            Error::Api {
                status: 409,
                code: ErrorCode::TaskCancelled,
                ..
            }
        )
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The stable error code, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } | Error::Stream { code, .. } => Some(code.as_str()),
            _ => None,
        }
    }

    /// Builds the error for a non-2xx answer from its status and body. A body that is not the
    /// documented error shape (a proxy's HTML page, say) still gives a readable message.
    pub(crate) fn from_response(status: u16, request_id: Option<String>, body: &[u8]) -> Error {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => Error::Api {
                status,
                code: error.code,
                message: error.message,
                request_id: error.request_id.or(request_id),
            },
            Err(_) => Error::Api {
                status,
                code: ErrorCode::Other(format!("HTTP_{status}")),
                message: preview(body),
                request_id,
            },
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(error: reqwest::Error) -> Error {
        if error.is_decode() {
            Error::Decode(chain(&error))
        } else {
            Error::Network(error)
        }
    }
}

fn request_suffix(request_id: &Option<String>) -> String {
    request_id
        .as_deref()
        .map(|id| format!(", request {id}"))
        .unwrap_or_default()
}

/// reqwest's top-level message ("error sending request") hides the cause that a person needs
/// ("connection refused").
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The start of a body, as text, for messages.
fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "no error body".to_string();
    }
    let mut cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_gives_its_code_message_and_request_id() {
        let body =
            br#"{"error":{"code":"TASK_NOT_FOUND","message":"no such task","request_id":"r1"}}"#;
        let error = Error::from_response(404, Some("header-id".into()), body);
        match &error {
            Error::Api {
                status,
                code,
                message,
                request_id,
            } => {
                assert_eq!(*status, 404);
                assert_eq!(code, "TASK_NOT_FOUND");
                assert_eq!(message, "no such task");
                assert_eq!(request_id.as_deref(), Some("r1"));
            }
            other => panic!("expected an API error, got {other:?}"),
        }
        assert!(!error.is_retryable());
        assert_eq!(
            error.to_string(),
            "no such task (TASK_NOT_FOUND, HTTP 404, request r1)"
        );
    }

    #[test]
    fn a_body_of_another_shape_still_gives_a_readable_error() {
        let error = Error::from_response(502, None, b"<html>Bad Gateway</html>");
        assert_eq!(error.code(), Some("HTTP_502"));
        assert!(error.to_string().contains("Bad Gateway"));
        assert!(error.is_retryable());
    }

    #[test]
    fn server_side_failures_are_retryable_and_caller_mistakes_are_not() {
        let api = |status| Error::from_response(status, None, b"");
        assert!(api(503).is_retryable());
        assert!(api(500).is_retryable());
        for status in [400, 401, 403, 404, 409, 422] {
            assert!(!api(status).is_retryable(), "{status}");
        }
        let stream = |code: &str| Error::Stream {
            code: code.into(),
            message: String::new(),
            request_id: None,
        };
        assert!(stream("INTERNAL").is_retryable());
        assert!(!stream("TASK_NOT_FOUND").is_retryable());
    }

    #[test]
    fn only_a_409_with_a_fencing_code_fences_a_worker() {
        let conflict = |code: &str| {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
            Error::from_response(409, None, body.as_bytes())
        };
        assert!(conflict("LEASE_LOST").is_fenced());
        assert!(conflict("STALE_ATTEMPT").is_fenced());
        assert!(conflict("TASK_ALREADY_TERMINAL").is_fenced());
        assert!(!conflict("USER_EXISTS").is_fenced());
        assert!(conflict("TASK_CANCELLED").is_cancelled());
        assert!(!conflict("TASK_CANCELLED").is_fenced());
        assert!(!conflict("LEASE_LOST").is_cancelled());
        assert!(!conflict("LEASE_LOST").is_retryable());
        assert!(!Error::from_response(503, None, b"").is_fenced());
    }
}
