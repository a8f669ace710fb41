//! SQLite's errors as [`StoreError`]s: the one place that decides what each means.

use rusqlite::ErrorCode;

use crate::error::StoreError;

/// A stored value of the wrong type or range, or a damaged file, is corrupt data; a
/// constraint is a conflict (never worth retrying: one writer thread runs every write, so
/// nothing concurrent can have caused it); the rest (a full or failing disk, a busy or
/// read-only file) leaves the store unavailable until that is fixed.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::Error as E;
        let what = e.to_string();
        match &e {
            E::FromSqlConversionFailure(..)
            | E::IntegralValueOutOfRange(..)
            | E::Utf8Error(..)
            | E::InvalidColumnType(..) => StoreError::corrupt_by(what, e),
            E::SqliteFailure(failure, _) => match failure.code {
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                    StoreError::corrupt_by(what, e)
                }
                ErrorCode::ConstraintViolation => StoreError::conflict_by(what, false, e),
                _ => StoreError::unavailable_by(what, e),
            },
            _ => StoreError::unavailable_by(what, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn a_value_that_does_not_convert_is_corrupt_and_keeps_its_cause() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let e = db
            .query_row("SELECT 'not a number'", [], |r| r.get::<_, i64>(0))
            .unwrap_err();
        let e = StoreError::from(e);
        assert!(e.is_corrupt(), "{e:?}");
        assert!(e.source().is_some());
    }

    #[test]
    fn a_constraint_is_a_conflict_not_worth_retrying() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
            .unwrap();
        let e = StoreError::from(db.execute("INSERT INTO t VALUES (1)", []).unwrap_err());
        assert!(
            matches!(
                e,
                StoreError::Conflict {
                    retryable: false,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
