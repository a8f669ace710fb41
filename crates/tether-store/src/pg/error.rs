//! PostgreSQL's errors as [`StoreError`]s: the one place that decides what each means.

use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use crate::error::StoreError;

/// A database error with what the server said: `Display` alone gives only "db error".
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{e}: {} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// By the SQLSTATE: deadlocks (40P01) and serialisation failures (40001) are conflicts that
/// a retry of the whole transaction may get past; other constraint failures (class 23) are
/// conflicts it will not; data exceptions (class 22) mean a stored value does not fit what
/// reads it. Everything else (a lost connection, a server shutting down, missing schema) is
/// the database being unavailable.
impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        let what = describe(&e);
        let Some(code) = e.code() else {
            return StoreError::unavailable_by(what, e);
        };
        if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
        {
            return StoreError::conflict_by(what, true, e);
        }
        match code.code().get(..2) {
            Some("23") => StoreError::conflict_by(what, false, e),
            Some("22") => StoreError::corrupt_by(what, e),
            _ => StoreError::unavailable_by(what, e),
        }
    }
}

/// No connection from the pool: the database is unreachable, or every connection is busy.
impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::from(e),
            other => StoreError::unavailable_by("no database connection", other),
        }
    }
}

/// Column `i` of `row`; a value of another type (a damaged row, or a schema this code does
/// not know) is corrupt data, not an unavailable database.
pub(crate) fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::corrupt_by(format!("column {i}"), e))
}
