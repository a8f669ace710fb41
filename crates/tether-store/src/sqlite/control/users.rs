//! Users and tokens. Only token hashes are stored; the secret is shown once, by the caller.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use tether_types::Role;

use super::rows::time;
use crate::control::{NewSecret, NewToken, Principal, TokenRecord, UserError, UserId, UserRecord};
use crate::sqlite::writer::Writer;

fn storage(e: rusqlite::Error) -> UserError {
    UserError::Storage(e.into())
}

pub(super) fn create_user(
    w: &mut Writer,
    name: &str,
    now: DateTime<Utc>,
) -> Result<UserRecord, UserError> {
    let conn = w.conn();
    let exists = conn
        .prepare_cached("SELECT 1 FROM users WHERE name = ?1")
        .and_then(|mut s| s.exists([name]))
        .map_err(storage)?;
    if exists {
        return Err(UserError::Exists);
    }
    conn.prepare_cached("INSERT INTO users (name, created_at_ms) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![name, now.timestamp_millis()]))
        .map_err(storage)?;
    Ok(UserRecord {
        id: conn.last_insert_rowid(),
        name: name.to_string(),
        created_at: time(now.timestamp_millis()),
        max_concurrent: None,
    })
}

pub(super) fn user(conn: &Connection, name: &str) -> rusqlite::Result<Option<UserRecord>> {
    conn.prepare_cached(
        "SELECT id, name, created_at_ms, max_concurrent FROM users WHERE name = ?1",
    )?
    .query_row([name], |r| {
        Ok(UserRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            created_at: time(r.get(2)?),
            max_concurrent: r.get::<_, Option<i64>>(3)?.map(|n| n.max(0) as u64),
        })
    })
    .optional()
}

pub(super) fn set_max_concurrent(
    w: &mut Writer,
    name: &str,
    limit: Option<u64>,
) -> Result<(), UserError> {
    let changed = w
        .conn()
        .prepare_cached("UPDATE users SET max_concurrent = ?2 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![name, limit.map(|l| l as i64)]))
        .map_err(storage)?;
    if changed == 0 {
        return Err(UserError::NotFound);
    }
    Ok(())
}

pub(super) fn create_token(w: &mut Writer, token: NewToken) -> Result<(), UserError> {
    let conn = w.conn();
    let user: Option<i64> = conn
        .prepare_cached("SELECT id FROM users WHERE name = ?1")
        .and_then(|mut s| s.query_row([&token.user], |r| r.get(0)).optional())
        .map_err(storage)?;
    let Some(user_id) = user else {
        return Err(UserError::NotFound);
    };
    conn.prepare_cached(
        "INSERT INTO tokens (id, user_id, role, hash, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            token.id,
            user_id,
            token.role.as_str(),
            token.hash,
            token.now.timestamp_millis()
        ])
    })
    .map_err(storage)?;
    Ok(())
}

pub(super) fn revoke_token(w: &mut Writer, id: &str, now: DateTime<Utc>) -> Result<(), UserError> {
    let changed = w
        .conn()
        .prepare_cached(
            "UPDATE tokens SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
        )
        .and_then(|mut s| s.execute(params![id, now.timestamp_millis()]))
        .map_err(storage)?;
    if changed == 0 {
        return Err(UserError::TokenNotFound);
    }
    Ok(())
}

pub(super) fn principal(conn: &Connection, hash: &[u8]) -> rusqlite::Result<Option<Principal>> {
    let row = conn
        .prepare_cached(
            "SELECT t.id, t.role, u.id, u.name FROM tokens t JOIN users u ON u.id = t.user_id
             WHERE t.hash = ?1 AND t.revoked_at_ms IS NULL",
        )?
        .query_row([hash], principal_row)
        .optional()?;
    Ok(row.and_then(principal_of))
}

/// A row of `t.id, t.role, u.id, u.name`.
type PrincipalRow = (String, String, i64, String);

fn principal_row(r: &rusqlite::Row) -> rusqlite::Result<PrincipalRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

/// A role this version does not know grants nothing.
fn principal_of((token_id, role, user_id, user): PrincipalRow) -> Option<Principal> {
    Some(Principal {
        role: role.parse::<Role>().ok()?,
        user_id,
        user,
        token_id,
    })
}

pub(super) fn list_users(conn: &Connection) -> rusqlite::Result<Vec<UserRecord>> {
    let mut statement = conn.prepare_cached(
        "SELECT id, name, created_at_ms, max_concurrent FROM users ORDER BY name",
    )?;
    let rows = statement.query_map([], |r| {
        Ok(UserRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            created_at: time(r.get(2)?),
            max_concurrent: r.get::<_, Option<i64>>(3)?.map(|n| n.max(0) as u64),
        })
    })?;
    rows.collect()
}

pub(super) fn list_tokens(
    conn: &Connection,
    user: Option<UserId>,
) -> rusqlite::Result<Vec<TokenRecord>> {
    let mut statement = conn.prepare_cached(
        "SELECT t.id, u.name, t.role, t.created_at_ms, t.last_used_ms
         FROM tokens t JOIN users u ON u.id = t.user_id
         WHERE t.revoked_at_ms IS NULL AND (?1 IS NULL OR t.user_id = ?1)
         ORDER BY t.created_at_ms, t.id",
    )?;
    let rows = statement.query_map([user], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
        ))
    })?;
    let mut tokens = Vec::new();
    for row in rows {
        let (id, user, role, created, used) = row?;
        // A role this version does not know is left out, as it grants nothing.
        let Ok(role) = role.parse::<Role>() else {
            continue;
        };
        tokens.push(TokenRecord {
            id,
            user,
            role,
            created_at: time(created),
            last_used_at: used.map(time),
        });
    }
    Ok(tokens)
}

pub(super) fn record_token_use(
    w: &mut Writer,
    used: &[(String, DateTime<Utc>)],
) -> Result<(), UserError> {
    let conn = w.conn();
    let mut statement = conn
        .prepare_cached(
            "UPDATE tokens SET last_used_ms = ?2
             WHERE id = ?1 AND (last_used_ms IS NULL OR last_used_ms < ?2)",
        )
        .map_err(storage)?;
    for (id, at) in used {
        statement
            .execute(params![id, at.timestamp_millis()])
            .map_err(storage)?;
    }
    Ok(())
}

/// Whether the token with this id exists and is not revoked.
fn token_live(conn: &Connection, token_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM tokens WHERE id = ?1 AND revoked_at_ms IS NULL")?
        .exists([token_id])
}

/// Stores a login code or a session (`table` is one of the two, never input) for a live
/// token, dropping the table's expired rows first.
pub(super) fn create_secret(
    w: &mut Writer,
    table: &'static str,
    secret: NewSecret,
) -> Result<(), UserError> {
    let conn = w.conn();
    if !token_live(conn, &secret.token_id).map_err(storage)? {
        return Err(UserError::TokenNotFound);
    }
    let now = secret.now.timestamp_millis();
    conn.prepare_cached(&format!("DELETE FROM {table} WHERE expires_at_ms <= ?1"))
        .and_then(|mut s| s.execute([now]))
        .map_err(storage)?;
    conn.prepare_cached(&format!(
        "INSERT INTO {table} (hash, token_id, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            secret.hash,
            secret.token_id,
            now,
            secret.expires_at.timestamp_millis()
        ])
    })
    .map_err(storage)?;
    Ok(())
}

pub(super) fn take_login_code(
    w: &mut Writer,
    hash: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<String>, UserError> {
    w.conn()
        .prepare_cached("DELETE FROM login_codes WHERE hash = ?1 RETURNING token_id, expires_at_ms")
        .and_then(|mut s| {
            s.query_row([hash], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .optional()
        })
        .map(|row| {
            row.and_then(|(token, expires)| (expires > now.timestamp_millis()).then_some(token))
        })
        .map_err(storage)
}

pub(super) fn session(
    conn: &Connection,
    hash: &[u8],
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<Principal>> {
    let row = conn
        .prepare_cached(
            "SELECT t.id, t.role, u.id, u.name
             FROM sessions s JOIN tokens t ON t.id = s.token_id JOIN users u ON u.id = t.user_id
             WHERE s.hash = ?1 AND s.expires_at_ms > ?2 AND t.revoked_at_ms IS NULL",
        )?
        .query_row(params![hash, now.timestamp_millis()], principal_row)
        .optional()?;
    Ok(row.and_then(principal_of))
}

pub(super) fn delete_session(w: &mut Writer, hash: &[u8]) -> Result<(), UserError> {
    w.conn()
        .prepare_cached("DELETE FROM sessions WHERE hash = ?1")
        .and_then(|mut s| s.execute([hash]))
        .map_err(storage)?;
    Ok(())
}
