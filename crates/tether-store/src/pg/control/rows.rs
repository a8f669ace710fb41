//! Task rows in and out of SQL. Values read from the database are checked, never trusted: a
//! damaged row is an error, not a panic.

use crate::StoreError;
use tether_types::{TaskId, TaskState};
use tokio_postgres::{GenericClient, Row};

use super::Tx;
use crate::control::{TaskFilter, TaskRecord};
use crate::execution::{time, Leased, StepRow};

/// The task columns every query reads, in the order [`task_row`] takes them.
pub(super) const SELECT_TASK: &str =
    "SELECT t.seq, t.id, t.owner_id, coalesce(u.name, ''), t.state, t.attempt,
        t.spec, t.created_at_ms, t.updated_at_ms, t.lease_id, t.lease_expires_ms, t.max_attempts
    FROM tasks t LEFT JOIN users u ON u.id = t.owner_id";

/// Column `i` of `row`; a value of another type (a damaged row) is an error.
pub(super) fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
) -> Result<T, StoreError> {
    crate::pg::error::column(row, i)
}

/// A count or number that must not be negative.
pub(super) fn unsigned(n: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::corrupt(format!("{what} is negative ({n})")))
}

fn small(n: i32, what: &str) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::corrupt(format!("{what} is negative ({n})")))
}

fn task_row(r: &Row) -> Result<TaskRecord, StoreError> {
    let id: String = col(r, 1)?;
    let state: String = col(r, 4)?;
    let spec: String = col(r, 6)?;
    Ok(TaskRecord {
        seq: col(r, 0)?,
        id: id.parse::<TaskId>().map_err(StoreError::corrupt)?,
        owner_id: col(r, 2)?,
        owner: col(r, 3)?,
        state: state.parse::<TaskState>().map_err(StoreError::corrupt)?,
        attempt: small(col(r, 5)?, "attempt")?,
        spec: serde_json::from_str(&spec)
            .map_err(|e| StoreError::corrupt_by(format!("task {id}'s spec"), e))?,
        created_at: time(col(r, 7)?),
        updated_at: time(col(r, 8)?),
    })
}

fn leased_row(r: &Row) -> Result<Leased, StoreError> {
    Ok(Leased {
        task: task_row(r)?,
        lease_id: col(r, 9)?,
        expires_ms: col(r, 10)?,
        max_attempts: small(col(r, 11)?, "max_attempts")?,
    })
}

pub(super) async fn task(
    c: &impl GenericClient,
    id: &TaskId,
) -> Result<Option<TaskRecord>, StoreError> {
    let row = c
        .query_opt(&format!("{SELECT_TASK} WHERE t.id = $1"), &[&id.as_str()])
        .await?;
    row.as_ref().map(task_row).transpose()
}

/// The task and its lease columns, its row locked until the transaction ends: whatever is
/// decided from them cannot go stale before it is written.
pub(super) async fn lock<E: From<StoreError>>(
    t: &Tx<'_>,
    id: &TaskId,
) -> Result<Option<Leased>, E> {
    let row = t
        .query_opt(
            &format!("{SELECT_TASK} WHERE t.id = $1 FOR UPDATE OF t"),
            &[&id.as_str()],
        )
        .await?;
    Ok(row.as_ref().map(leased_row).transpose()?)
}

pub(super) async fn list(
    c: &impl GenericClient,
    f: &TaskFilter,
) -> Result<Vec<TaskRecord>, StoreError> {
    let sql = format!(
        "{SELECT_TASK} WHERE ($1::BIGINT IS NULL OR t.owner_id = $1)
           AND ($2::TEXT IS NULL OR t.state = $2) AND ($3::BIGINT IS NULL OR t.seq < $3)
           AND ($5::TEXT IS NULL OR strpos(lower(coalesce(t.spec::jsonb->>'description', '')
                  || ' ' || coalesce(t.spec::jsonb->>'repository', '')
                  || ' ' || coalesce(t.spec::jsonb->>'metadata', '')), lower($5)) > 0)
         ORDER BY t.seq DESC LIMIT $4"
    );
    let limit = i64::try_from(f.limit).unwrap_or(i64::MAX);
    let rows = c
        .query(
            &sql,
            &[
                &f.owner_id,
                &f.state.map(TaskState::as_str),
                &f.before_seq,
                &limit,
                &f.search,
            ],
        )
        .await?;
    rows.iter().map(task_row).collect()
}

pub(super) async fn count_by_state(
    c: &impl GenericClient,
) -> Result<Vec<(TaskState, u64)>, StoreError> {
    let rows = c
        .query("SELECT state, count(*) FROM tasks GROUP BY state", &[])
        .await?;
    rows.iter()
        .map(|r| {
            let state: String = col(r, 0)?;
            let state = state.parse::<TaskState>().map_err(StoreError::corrupt)?;
            Ok((state, unsigned(col(r, 1)?, "count")?))
        })
        .collect()
}

pub(super) fn step_row(r: &Row) -> Result<StepRow, StoreError> {
    Ok(StepRow {
        epoch: small(col(r, 0)?, "step epoch")?,
        lease_id: col(r, 1)?,
        completed_epoch: col::<Option<i32>>(r, 2)?
            .map(|e| small(e, "completed epoch"))
            .transpose()?,
        checkpoint: col(r, 3)?,
        first_event_pos: col::<Option<i64>>(r, 4)?
            .map(|p| unsigned(p, "first event position"))
            .transpose()?,
    })
}
