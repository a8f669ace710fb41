//! Task rows in and out of SQL. Values read from disk are checked, never trusted: a damaged
//! row is an error, not a panic.

use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};
use tether_types::{TaskId, TaskState};

use crate::control::{TaskFilter, TaskRecord};
pub(super) use crate::execution::{time, Leased};

const SELECT_TASK: &str =
    "SELECT t.seq, t.id, t.owner_id, coalesce(u.name, ''), t.state, t.attempt,
        t.spec, t.created_at_ms, t.updated_at_ms, t.lease_id, t.lease_expires_ms, t.max_attempts
    FROM tasks t LEFT JOIN users u ON u.id = t.owner_id";

/// A value that does not read back as what was written: corrupt data (see `sqlite::error`),
/// its cause kept.
fn bad(
    column: usize,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, cause.into())
}

fn task_row(r: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    let id: String = r.get(1)?;
    let state: String = r.get(4)?;
    let spec: String = r.get(6)?;
    Ok(TaskRecord {
        seq: r.get(0)?,
        id: id.parse::<TaskId>().map_err(|e| bad(1, e))?,
        owner_id: r.get(2)?,
        owner: r.get(3)?,
        state: state.parse::<TaskState>().map_err(|e| bad(4, e))?,
        attempt: r.get(5)?,
        spec: serde_json::from_str(&spec).map_err(|e| bad(6, e))?,
        created_at: time(r.get(7)?),
        updated_at: time(r.get(8)?),
    })
}

pub(super) fn task(conn: &Connection, id: &TaskId) -> rusqlite::Result<Option<TaskRecord>> {
    Ok(leased(conn, id)?.map(|l| l.task))
}

/// The task and its lease columns, in one query.
pub(super) fn leased(conn: &Connection, id: &TaskId) -> rusqlite::Result<Option<Leased>> {
    conn.prepare_cached(&format!("{SELECT_TASK} WHERE t.id = ?1"))?
        .query_row([id.as_str()], |r| {
            Ok(Leased {
                task: task_row(r)?,
                lease_id: r.get(9)?,
                expires_ms: r.get(10)?,
                max_attempts: r.get(11)?,
            })
        })
        .optional()
}

pub(super) fn list(conn: &Connection, f: &TaskFilter) -> rusqlite::Result<Vec<TaskRecord>> {
    let sql = format!(
        "{SELECT_TASK} WHERE (?1 IS NULL OR t.owner_id = ?1) AND (?2 IS NULL OR t.state = ?2)
           AND (?3 IS NULL OR t.seq < ?3)
           AND (?5 IS NULL OR instr(lower(coalesce(json_extract(t.spec, '$.description'), '')
                  || ' ' || coalesce(json_extract(t.spec, '$.repository'), '')
                  || ' ' || coalesce(json_extract(t.spec, '$.metadata'), '')), lower(?5)) > 0)
         ORDER BY t.seq DESC LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            f.owner_id,
            f.state.map(TaskState::as_str),
            f.before_seq,
            f.limit as i64,
            f.search
        ],
        task_row,
    )?;
    rows.collect()
}

pub(super) fn count_by_state(conn: &Connection) -> rusqlite::Result<Vec<(TaskState, u64)>> {
    let mut stmt = conn.prepare_cached("SELECT state, count(*) FROM tasks GROUP BY state")?;
    let rows = stmt.query_map([], |r| {
        let state: String = r.get(0)?;
        let n: i64 = r.get(1)?;
        Ok((state.parse::<TaskState>().map_err(|e| bad(0, e))?, n as u64))
    })?;
    rows.collect()
}
