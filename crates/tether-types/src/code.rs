//! The stable codes of the API's error body (`{"error":{"code",...}}`), with the HTTP status
//! each is answered with: one list that the server answers from and the client reads with.
//!
//! The codes are a wire format: clients match on them, so a code, once shipped, keeps its
//! spelling and its meaning. A code this list does not know (a newer server's) parses as
//! [`ErrorCode::Other`], so an older client keeps working.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $status:literal;)*) => {
        /// An error code of the API. See the module's documentation.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
            /// A code this version does not know, as the server spelled it.
            Other(String),
        }

        impl ErrorCode {
            /// Every code this version knows.
            pub const KNOWN: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as it is sent: `TASK_NOT_FOUND`.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                    ErrorCode::Other(code) => code,
                }
            }

            /// The HTTP status the server answers this code with. (Where the server passes
            /// on a status it did not choose, such as a framework's rejection, the response
            /// keeps that status.) An unknown code says nothing of its status: 500.
            pub fn status(&self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                    ErrorCode::Other(_) => 500,
                }
            }
        }

        impl FromStr for ErrorCode {
            type Err = Infallible;

            fn from_str(code: &str) -> Result<Self, Infallible> {
                Ok(match code {
                    $($code => ErrorCode::$variant,)*
                    other => ErrorCode::Other(other.to_string()),
                })
            }
        }
    };
}

error_codes! {
    // Requests the server could not take.
    /// A malformed or invalid request (a field, a query parameter, a header value).
    ValidationError = "VALIDATION_ERROR", 400;
    /// A header that carries meaning was given twice.
    DuplicateHeader = "DUPLICATE_HEADER", 400;
    /// No token, or an unknown or revoked one.
    Unauthorized = "UNAUTHORIZED", 401;
    /// The token's role may not do this.
    Forbidden = "FORBIDDEN", 403;
    /// A page of another origin, with `--auth off`.
    OriginNotAllowed = "ORIGIN_NOT_ALLOWED", 403;
    /// A write to a task's stream, which only Tether writes.
    ReadOnlyStream = "READ_ONLY_STREAM", 403;
    /// No such route.
    NotFound = "NOT_FOUND", 404;
    /// The route lacks the method.
    MethodNotAllowed = "METHOD_NOT_ALLOWED", 405;
    /// The body did not arrive in time.
    RequestTimeout = "REQUEST_TIMEOUT", 408;
    /// A body over the limit.
    PayloadTooLarge = "PAYLOAD_TOO_LARGE", 413;
    /// One event over the size limit.
    EventTooLarge = "EVENT_TOO_LARGE", 413;
    /// A request target over the limit.
    UriTooLong = "URI_TOO_LONG", 414;
    /// A body without a JSON content type where one is needed.
    UnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE", 415;
    /// A `Host` that is not a loopback name, with `--auth off`.
    HostNotAllowed = "HOST_NOT_ALLOWED", 421;
    /// Headers over the limit.
    HeadersTooLarge = "HEADERS_TOO_LARGE", 431;

    // Tasks.
    /// No such task, or one the caller may not see.
    TaskNotFound = "TASK_NOT_FOUND", 404;
    /// The task has ended; the change needs one that has not.
    TaskAlreadyTerminal = "TASK_ALREADY_TERMINAL", 409;
    /// The task's state does not allow the change.
    InvalidTransition = "INVALID_TRANSITION", 409;
    /// The same `Idempotency-Key` came with a different request.
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED", 422;
    /// Too many nudges to one task in a minute.
    TooManyNudges = "TOO_MANY_NUDGES", 429;

    // Workers (G6).
    /// The worker's lease on the task is gone: stop at once.
    LeaseLost = "LEASE_LOST", 409;
    /// A write tagged with a step attempt that a newer one superseded.
    StaleAttempt = "STALE_ATTEMPT", 409;
    /// The task was cancelled while the worker held it: stop, gracefully.
    TaskCancelled = "TASK_CANCELLED", 409;

    // Users and tokens.
    /// A user with this name exists.
    UserExists = "USER_EXISTS", 409;
    /// No such user.
    UserNotFound = "USER_NOT_FOUND", 404;
    /// No such token.
    TokenNotFound = "TOKEN_NOT_FOUND", 404;
    /// A login code that is unknown, used already or expired.
    LoginCodeInvalid = "LOGIN_CODE_INVALID", 401;
    /// A change made with a session cookie whose `Origin` is missing or not the server's own.
    SessionOriginRefused = "SESSION_ORIGIN_REFUSED", 403;

    // Streams (the Durable Streams protocol's statuses).
    /// No such stream, or one the caller may not see.
    StreamNotFound = "STREAM_NOT_FOUND", 404;
    /// The stream was deleted.
    StreamGone = "STREAM_GONE", 410;
    /// Another stream holds the path, or the fork cannot be made.
    StreamConflict = "STREAM_CONFLICT", 409;
    /// The stream is closed.
    StreamClosed = "STREAM_CLOSED", 409;
    /// The body's content type is not the stream's.
    ContentTypeMismatch = "CONTENT_TYPE_MISMATCH", 409;
    /// `Stream-Seq` did not increase.
    SeqConflict = "SEQ_CONFLICT", 409;
    /// An idempotent producer's epoch is older than the stream's.
    StaleProducerEpoch = "STALE_PRODUCER_EPOCH", 403;
    /// An idempotent producer skipped sequence numbers.
    ProducerSeqGap = "PRODUCER_SEQ_GAP", 409;

    // The server's own health.
    /// Storage is unreachable, busy or full, or the server is stopping: try again later.
    StorageUnavailable = "STORAGE_UNAVAILABLE", 503;
    /// A concurrent change the request did not expect: read again, then decide.
    StorageConflict = "STORAGE_CONFLICT", 409;
    /// The server failed (stored data that does not read back, a bug): no retry helps.
    InternalError = "INTERNAL_ERROR", 500;
    /// A live stream failed after it started (an `event: error` frame).
    StreamFailed = "STREAM_FAILED", 500;
    /// An `event: error` frame whose body the client could not read (never sent).
    Unknown = "UNKNOWN", 500;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Ok(code.parse().unwrap_or_else(|e: Infallible| match e {}))
    }
}

impl From<&str> for ErrorCode {
    fn from(code: &str) -> Self {
        code.parse().unwrap_or_else(|e: Infallible| match e {})
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_parses_back_to_itself_and_is_spelled_once() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::KNOWN {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(code.as_str().parse::<ErrorCode>().unwrap(), *code);
            assert!((400..600).contains(&code.status()), "{code}");
        }
    }

    #[test]
    fn a_code_from_a_newer_server_is_kept_as_it_was_sent() {
        let code: ErrorCode = serde_json::from_str(r#""QUOTA_EXCEEDED""#).unwrap();
        assert_eq!(code, ErrorCode::Other("QUOTA_EXCEEDED".into()));
        assert_eq!(serde_json::to_string(&code).unwrap(), r#""QUOTA_EXCEEDED""#);
    }

    #[test]
    fn codes_travel_as_their_screaming_names() {
        let json = serde_json::to_string(&ErrorCode::LeaseLost).unwrap();
        assert_eq!(json, r#""LEASE_LOST""#);
        assert_eq!(
            serde_json::from_str::<ErrorCode>(&json).unwrap(),
            ErrorCode::LeaseLost
        );
    }
}
