//! Users and tokens. Only token hashes are stored; the secret is shown once, by the caller.

use crate::StoreError;
use chrono::{DateTime, Utc};
use tether_types::Role;
use tokio_postgres::GenericClient;

use super::rows::{col, unsigned};
use super::Tx;
use crate::control::{NewSecret, NewToken, Principal, TokenRecord, UserError, UserId, UserRecord};
use crate::execution::time;

pub(super) async fn create_user(
    t: &mut Tx<'_>,
    name: &str,
    now: DateTime<Utc>,
) -> Result<UserRecord, UserError> {
    let now_ms = now.timestamp_millis();
    // The unique name decides between nodes creating the same user at once.
    let row = t
        .query_opt(
            "INSERT INTO users (name, created_at_ms) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING RETURNING id",
            &[&name, &now_ms],
        )
        .await?;
    let Some(row) = row else {
        return Err(UserError::Exists);
    };
    Ok(UserRecord {
        id: col(&row, 0)?,
        name: name.to_string(),
        created_at: time(now_ms),
        max_concurrent: None,
    })
}

pub(super) async fn count(c: &impl GenericClient) -> Result<u64, StoreError> {
    let row = c.query_one("SELECT count(*) FROM users", &[]).await?;
    unsigned(col(&row, 0)?, "user count")
}

pub(super) async fn user(
    c: &impl GenericClient,
    name: &str,
) -> Result<Option<UserRecord>, StoreError> {
    let row = c
        .query_opt(
            "SELECT id, name, created_at_ms, max_concurrent FROM users WHERE name = $1",
            &[&name],
        )
        .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    Ok(Some(UserRecord {
        id: col(&r, 0)?,
        name: col(&r, 1)?,
        created_at: time(col(&r, 2)?),
        max_concurrent: col::<Option<i64>>(&r, 3)?.map(|n| n.max(0) as u64),
    }))
}

pub(super) async fn set_max_concurrent(
    t: &mut Tx<'_>,
    name: &str,
    limit: Option<u64>,
) -> Result<(), UserError> {
    let limit = limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    let changed = t
        .execute(
            "UPDATE users SET max_concurrent = $2 WHERE name = $1",
            &[&name, &limit],
        )
        .await?;
    if changed == 0 {
        return Err(UserError::NotFound);
    }
    // A raised limit may let a waiting claim take one of this user's tasks.
    t.work = true;
    Ok(())
}

pub(super) async fn create_token(t: &mut Tx<'_>, token: &NewToken) -> Result<(), UserError> {
    let user = t
        .query_opt("SELECT id FROM users WHERE name = $1", &[&token.user])
        .await?;
    let Some(user) = user else {
        return Err(UserError::NotFound);
    };
    let user_id: i64 = col(&user, 0)?;
    t.execute(
        "INSERT INTO tokens (id, user_id, role, hash, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
        &[
            &token.id,
            &user_id,
            &token.role.as_str(),
            &token.hash,
            &token.now.timestamp_millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn revoke_token(
    t: &mut Tx<'_>,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), UserError> {
    let changed = t
        .execute(
            "UPDATE tokens SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL",
            &[&id, &now.timestamp_millis()],
        )
        .await?;
    if changed == 0 {
        return Err(UserError::TokenNotFound);
    }
    Ok(())
}

pub(super) async fn principal(
    c: &impl GenericClient,
    hash: &[u8],
) -> Result<Option<Principal>, StoreError> {
    let row = c
        .query_opt(
            "SELECT t.id, t.role, u.id, u.name FROM tokens t JOIN users u ON u.id = t.user_id
             WHERE t.hash = $1 AND t.revoked_at_ms IS NULL",
            &[&hash],
        )
        .await?;
    row.map_or(Ok(None), |r| principal_of(&r))
}

/// A principal from a row of `t.id, t.role, u.id, u.name`. A role this version does not know
/// grants nothing.
fn principal_of(r: &tokio_postgres::Row) -> Result<Option<Principal>, StoreError> {
    let role: String = col(r, 1)?;
    let Ok(role) = role.parse::<Role>() else {
        return Ok(None);
    };
    Ok(Some(Principal {
        token_id: col(r, 0)?,
        role,
        user_id: col(r, 2)?,
        user: col(r, 3)?,
    }))
}

pub(super) async fn list_users(c: &impl GenericClient) -> Result<Vec<UserRecord>, StoreError> {
    let rows = c
        .query(
            "SELECT id, name, created_at_ms, max_concurrent FROM users ORDER BY name",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(UserRecord {
                id: col(r, 0)?,
                name: col(r, 1)?,
                created_at: time(col(r, 2)?),
                max_concurrent: col::<Option<i64>>(r, 3)?.map(|n| n.max(0) as u64),
            })
        })
        .collect()
}

pub(super) async fn list_tokens(
    c: &impl GenericClient,
    user: Option<UserId>,
) -> Result<Vec<TokenRecord>, StoreError> {
    let rows = c
        .query(
            "SELECT t.id, u.name, t.role, t.created_at_ms, t.last_used_ms
             FROM tokens t JOIN users u ON u.id = t.user_id
             WHERE t.revoked_at_ms IS NULL AND ($1::BIGINT IS NULL OR t.user_id = $1)
             ORDER BY t.created_at_ms, t.id",
            &[&user],
        )
        .await?;
    let mut tokens = Vec::new();
    for r in &rows {
        let role: String = col(r, 2)?;
        // A role this version does not know is left out, as it grants nothing.
        let Ok(role) = role.parse::<Role>() else {
            continue;
        };
        tokens.push(TokenRecord {
            id: col(r, 0)?,
            user: col(r, 1)?,
            role,
            created_at: time(col(r, 3)?),
            last_used_at: col::<Option<i64>>(r, 4)?.map(time),
        });
    }
    Ok(tokens)
}

pub(super) async fn record_token_use(
    c: &impl GenericClient,
    used: &[(String, DateTime<Utc>)],
) -> Result<(), StoreError> {
    let ids: Vec<&str> = used.iter().map(|(id, _)| id.as_str()).collect();
    let times: Vec<i64> = used.iter().map(|(_, at)| at.timestamp_millis()).collect();
    // One statement for the whole batch.
    c.execute(
        "UPDATE tokens t SET last_used_ms = u.at
         FROM unnest($1::TEXT[], $2::BIGINT[]) AS u(id, at)
         WHERE t.id = u.id AND (t.last_used_ms IS NULL OR t.last_used_ms < u.at)",
        &[&ids, &times],
    )
    .await?;
    Ok(())
}

/// Stores a login code or a session (`table` is one of the two, never input) for a live
/// token, dropping the table's expired rows first. The token's row is locked (`FOR SHARE`)
/// so a revocation on another node waits for this insert, then ends what it made.
pub(super) async fn create_secret(
    t: &mut Tx<'_>,
    table: &'static str,
    secret: &NewSecret,
) -> Result<(), UserError> {
    let live = t
        .query_opt(
            "SELECT 1 FROM tokens WHERE id = $1 AND revoked_at_ms IS NULL FOR SHARE",
            &[&secret.token_id],
        )
        .await?;
    if live.is_none() {
        return Err(UserError::TokenNotFound);
    }
    let now = secret.now.timestamp_millis();
    t.execute(
        &format!("DELETE FROM {table} WHERE expires_at_ms <= $1"),
        &[&now],
    )
    .await?;
    t.execute(
        &format!(
            "INSERT INTO {table} (hash, token_id, created_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, $4)"
        ),
        &[
            &secret.hash,
            &secret.token_id,
            &now,
            &secret.expires_at.timestamp_millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn take_login_code(
    c: &impl GenericClient,
    hash: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    // One statement: of two nodes taking the same code at once, one deletes the row.
    let row = c
        .query_opt(
            "DELETE FROM login_codes WHERE hash = $1 RETURNING token_id, expires_at_ms",
            &[&hash],
        )
        .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let expires: i64 = col(&r, 1)?;
    (expires > now.timestamp_millis())
        .then(|| col(&r, 0))
        .transpose()
}

pub(super) async fn session(
    c: &impl GenericClient,
    hash: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<Principal>, StoreError> {
    let row = c
        .query_opt(
            "SELECT t.id, t.role, u.id, u.name
             FROM sessions s JOIN tokens t ON t.id = s.token_id JOIN users u ON u.id = t.user_id
             WHERE s.hash = $1 AND s.expires_at_ms > $2 AND t.revoked_at_ms IS NULL",
            &[&hash, &now.timestamp_millis()],
        )
        .await?;
    row.map_or(Ok(None), |r| principal_of(&r))
}

pub(super) async fn delete_session(c: &impl GenericClient, hash: &[u8]) -> Result<(), StoreError> {
    c.execute("DELETE FROM sessions WHERE hash = $1", &[&hash])
        .await?;
    Ok(())
}
