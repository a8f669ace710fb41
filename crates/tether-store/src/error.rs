//! The storage error both backends answer with: what happened, as far as a caller can act on
//! it, with the cause kept for the log.
//!
//! A failure carried as text cannot tell "try again later" from "this row is damaged", and
//! loses its cause before anyone logs it. Each backend turns its own errors into a
//! [`StoreError`] in one place (`sqlite::error`, `pg::error`); the operations' own error enums
//! carry it in their `Storage` case.

use std::error::Error as StdError;
use std::sync::Arc;

/// The underlying error, shared: an error a group commit gives every request of a batch.
pub type Cause = Arc<dyn StdError + Send + Sync + 'static>;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or could not do the work now (connection lost,
    /// pool exhausted, disk full or failing, database busy): the same request may succeed
    /// later.
    #[error("storage unavailable: {what}")]
    Unavailable {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// Another transaction got in the way. `retryable`: the whole transaction may succeed if
    /// tried again from the start (a deadlock or serialisation failure); otherwise a
    /// constraint found a concurrent change the operation did not expect.
    #[error("storage conflict: {what}")]
    Conflict {
        what: String,
        retryable: bool,
        #[source]
        cause: Option<Cause>,
    },
    /// Stored data does not read back as what Tether writes (a value of the wrong type or
    /// range, JSON that does not parse, a row that must exist and does not): damage or a
    /// bug, which no retry fixes.
    #[error("corrupt stored data: {what}")]
    Corrupt {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The store has stopped (or is stopping) and takes no more work.
    #[error("the store is shut down")]
    ShutDown,
}

impl StoreError {
    pub fn unavailable(what: impl Into<String>) -> Self {
        StoreError::Unavailable {
            what: what.into(),
            cause: None,
        }
    }

    pub fn unavailable_by(
        what: impl Into<String>,
        cause: impl StdError + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            what: what.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    pub fn conflict_by(
        what: impl Into<String>,
        retryable: bool,
        cause: impl StdError + Send + Sync + 'static,
    ) -> Self {
        StoreError::Conflict {
            what: what.into(),
            retryable,
            cause: Some(Arc::new(cause)),
        }
    }

    pub fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            cause: None,
        }
    }

    pub fn corrupt_by(
        what: impl Into<String>,
        cause: impl StdError + Send + Sync + 'static,
    ) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// The same failure, said of something more specific: `"task t1's spec"` before
    /// `"expected value at line 1"`. The kind and the cause stay.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        match self {
            StoreError::Unavailable { what: w, cause } => StoreError::Unavailable {
                what: format!("{what}: {w}"),
                cause,
            },
            StoreError::Conflict {
                what: w,
                retryable,
                cause,
            } => StoreError::Conflict {
                what: format!("{what}: {w}"),
                retryable,
                cause,
            },
            StoreError::Corrupt { what: w, cause } => StoreError::Corrupt {
                what: format!("{what}: {w}"),
                cause,
            },
            StoreError::ShutDown => StoreError::ShutDown,
        }
    }

    /// Whether trying the whole transaction again from the start may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict {
                retryable: true,
                ..
            }
        )
    }

    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }
}

/// Two storage errors are equal when they are of the same kind and say the same thing; their
/// causes are not compared (errors are not comparable). For tests that compare results.
impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        use StoreError::*;
        match (self, other) {
            (Unavailable { what: a, .. }, Unavailable { what: b, .. }) => a == b,
            (
                Conflict {
                    what: a,
                    retryable: ra,
                    ..
                },
                Conflict {
                    what: b,
                    retryable: rb,
                    ..
                },
            ) => a == b && ra == rb,
            (Corrupt { what: a, .. }, Corrupt { what: b, .. }) => a == b,
            (ShutDown, ShutDown) => true,
            _ => false,
        }
    }
}

impl Eq for StoreError {}

/// An operation's error, which has a storage case: what a backend fills from a
/// [`StoreError`], and what decides that a shared transaction must not commit.
pub(crate) trait StorageFailure: From<StoreError> {
    fn storage(&self) -> Option<&StoreError>;

    fn is_storage(&self) -> bool {
        self.storage().is_some()
    }
}

/// Every operation's error has a `Storage(StoreError)` case.
macro_rules! storage_failure {
    ($($ty:ident),*) => {$(
        impl From<StoreError> for $ty {
            fn from(e: StoreError) -> Self {
                $ty::Storage(e)
            }
        }
        impl StorageFailure for $ty {
            fn storage(&self) -> Option<&StoreError> {
                match self {
                    $ty::Storage(e) => Some(e),
                    _ => None,
                }
            }
        }
    )*};
}
pub(crate) use storage_failure;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_kind_and_the_cause() {
        let parse = serde_json::from_str::<u32>("{").unwrap_err();
        let e = StoreError::corrupt_by("spec", parse).context("task t1");
        assert!(e.is_corrupt());
        assert_eq!(e.to_string(), "corrupt stored data: task t1: spec");
        assert!(e.source().is_some(), "the parse error is kept as the cause");
    }
}
