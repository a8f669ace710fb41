//! Who is calling: bearer tokens, roles, and the first admin token.
//!
//! Tokens are random, shown once, and stored only as a SHA-256 hash. A token looks like
//! `tether_<id>_<secret>`: the id names it (to revoke it) and is not secret.

use std::path::Path;
use tether_types::ErrorCode;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use chrono::Utc;
use rand::Rng;
use sha2::{Digest, Sha256};
use tether_store::{Access, ControlStore, NewToken, Principal, TaskRecord, UserError, UserRecord};
use tether_types::Role;

use crate::config::AuthMode;
use crate::error::ApiError;
use crate::AppState;

/// The user every request acts as when auth is off, and the first admin.
pub const ADMIN_USER: &str = "admin";
/// Where the first admin token is written, inside the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// `len` random characters of lowercase base 32 (ids of tokens, leases, nudges).
pub(crate) fn random_text(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..32)] as char)
        .collect()
}

pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new token: its id and the secret to show once.
pub struct Minted {
    pub id: String,
    pub secret: String,
}

pub fn mint() -> Minted {
    let id = random_text(12);
    // 40 characters of 32 = 200 random bits.
    let secret = format!("tether_{id}_{}", random_text(40));
    Minted { id, secret }
}

/// The calling principal, resolved from `Authorization: Bearer`.
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

impl Caller {
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("a {} token may not do this", self.0.role),
            ))
        }
    }

    /// Users see their own tasks; admins and workers see every task.
    pub fn can_see(&self, task: &TaskRecord) -> bool {
        match self.0.role {
            Role::Admin | Role::Worker => true,
            Role::User => task.owner_id == self.0.user_id,
        }
    }

    /// Which plain streams the caller sees: admins every stream, users and workers those
    /// their user created. (Workers see every task, because they run them; plain streams
    /// are not work, so a worker token is treated like its user's.)
    pub fn stream_access(&self) -> Access {
        match self.0.role {
            Role::Admin => Access::All,
            Role::User | Role::Worker => Access::Owner(self.0.user_id),
        }
    }

    /// The owner filter for listing: `None` means everyone's, as [`Caller::can_see`] allows.
    pub fn owner_filter(&self) -> Option<i64> {
        match self.0.role {
            Role::Admin | Role::Worker => None,
            Role::User => Some(self.0.user_id),
        }
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message).with_header(header::WWW_AUTHENTICATE, "Bearer")
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let caller = authenticate(state, &parts.headers).await?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

pub async fn authenticate(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Caller, ApiError> {
    if state.config.auth == AuthMode::Off {
        return Ok(Caller(state.local_admin.clone()));
    }
    bearer(state, headers).await
}

/// The caller a request's bearer token names, whatever the auth mode.
async fn bearer(state: &AppState, headers: &axum::http::HeaderMap) -> Result<Caller, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "this request needs `Authorization: Bearer <token>`",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(bearer_token)
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
    match state.control.principal(&hash(token)).await {
        Ok(Some(principal)) => {
            state.token_use.note(&principal.token_id, Utc::now());
            Ok(Caller(principal))
        }
        Ok(None) => Err(unauthorized("the token is not valid (unknown or revoked)")),
        Err(e) => Err(ApiError::from(e)),
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme's name is
/// case-insensitive (RFC 9110 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A caller proven by a token even when auth is off: what minting a token takes. With auth
/// off any local process, and any web page that gets a request through, acts as the admin;
/// a token minted that way would outlive the mode and keep working once auth is back on.
/// (`tether up` mints its worker's token through the store, not over HTTP.)
pub struct Bearer(pub Caller);

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        bearer(state, &parts.headers).await.map(Bearer)
    }
}

/// On a fresh database: creates the admin user and an admin token, written to
/// `<data-dir>/admin.token` (mode 0600) so the CLI on this machine finds it. Returns the
/// admin principal every request acts as when auth is off.
pub async fn bootstrap(control: &dyn ControlStore, data_dir: &Path) -> anyhow::Result<Principal> {
    if control.user_count().await.map_err(anyhow::Error::msg)? == 0 {
        let user = match control.create_user(ADMIN_USER, Utc::now()).await {
            Ok(user) => Some(user),
            // Another node sharing the database got there first; its data dir has the token.
            Err(UserError::Exists) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(user) = user {
            mint_first_admin_token(control, user, data_dir).await?;
        }
    }
    let admin = control
        .user(ADMIN_USER)
        .await
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| anyhow::anyhow!("the database has users but no `{ADMIN_USER}`"))?;
    let principal = Principal {
        user_id: admin.id,
        user: admin.name,
        role: Role::Admin,
        token_id: String::new(),
    };
    Ok(principal)
}

/// The first admin's token: stored hashed, its secret written to `<data_dir>/admin.token`.
async fn mint_first_admin_token(
    control: &dyn ControlStore,
    user: UserRecord,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let minted = mint();
    control
        .create_token(NewToken {
            id: minted.id,
            user: user.name,
            role: Role::Admin,
            hash: hash(&minted.secret),
            now: Utc::now(),
        })
        .await?;
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    write_private(&path, &format!("{}\n", minted.secret))?;
    tracing::info!(path = %path.display(), "created the first admin token");
    Ok(())
}

/// Writes a file only its owner can read, atomically: written beside it, then renamed, so a
/// reader sees the whole secret or no file, never an empty or partial one, and others never
/// can read it, even briefly.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&partial)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer t", "bearer t", "BEARER t", "BeArEr   t  "] {
            assert_eq!(bearer_token(value), Some("t"), "{value}");
        }
        for value in ["Basic t", "Bearer", "Bearer  ", "Bearert", "t"] {
            assert_eq!(bearer_token(value), None, "{value}");
        }
    }
}
