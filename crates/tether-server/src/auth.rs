//! Who is calling: bearer tokens, browser sessions, roles, and the first admin token.
//!
//! Tokens are random, shown once, and stored only as a SHA-256 hash. A token looks like
//! `tether_<id>_<secret>`: the id names it (to revoke it) and is not secret.
//!
//! A browser signs in with a token or a one-time login code and gets a session: a random
//! secret in an HttpOnly, SameSite=Strict cookie, stored only as a hash, bound to the token
//! and acting as its principal. The token is looked up on every request, as for a bearer, so
//! revoking it ends its sessions at once. A request with an `Authorization` header is
//! authenticated by it alone; the cookie counts only without one. A change made with the
//! cookie (any method but GET, HEAD and OPTIONS) must also carry an `Origin` that is the
//! server's own: SameSite keeps other sites' requests from carrying the cookie in today's
//! browsers, and the `Origin` check refuses them in any browser that sends one.

use std::path::Path;
use tether_types::ErrorCode;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use chrono::Utc;
use rand::Rng;
use sha2::{Digest, Sha256};
use tether_store::{
    Access, ControlStore, NewSecret, NewToken, Principal, TaskRecord, UserError, UserRecord,
};
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
pub fn random_text(len: usize) -> String {
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

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "tether_session";
/// How long a session lasts from sign-in: fixed, not sliding, so a session never needs a
/// write on the request path. Signing in again starts a new one.
pub const SESSION_TTL: chrono::Duration = chrono::Duration::hours(12);
/// How long a one-time login code may wait to be used.
pub const LOGIN_CODE_TTL: chrono::Duration = chrono::Duration::minutes(10);

/// Mints a one-time login code for a token: the code to show (once) and when it expires.
/// Only its hash is stored.
pub async fn mint_login_code(
    control: &dyn ControlStore,
    token_id: &str,
) -> Result<(String, chrono::DateTime<Utc>), UserError> {
    // 32 characters of 32 = 160 random bits.
    let code = random_text(32);
    let now = Utc::now();
    let expires_at = now + LOGIN_CODE_TTL;
    control
        .create_login_code(NewSecret {
            hash: hash(&code),
            token_id: token_id.to_string(),
            now,
            expires_at,
        })
        .await?;
    Ok((code, expires_at))
}

/// The calling principal, resolved from `Authorization: Bearer` or the session cookie.
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
        let caller = authenticate(state, &parts.method, &parts.headers).await?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// Who a request acts as: the first admin with auth off, else the principal its credential
/// names (`method`: a session's change must come from the server's own origin).
pub async fn authenticate(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    if state.config.auth == AuthMode::Off {
        return Ok(Caller(state.local_admin.clone()));
    }
    credential(state, method, headers).await
}

/// The caller a request's bearer token or session cookie names, whatever the auth mode.
async fn credential(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    if headers.contains_key(header::AUTHORIZATION) {
        return bearer(state, headers).await;
    }
    let Some(secret) = session_cookie(headers) else {
        return Err(unauthorized(
            "this request needs `Authorization: Bearer <token>` or a session (sign in at /login)",
        ));
    };
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        same_origin(headers)?;
    }
    match state.control.session(&hash(secret), Utc::now()).await {
        Ok(Some(principal)) => {
            state.token_use.note(&principal.token_id, Utc::now());
            Ok(Caller(principal))
        }
        Ok(None) => Err(unauthorized(
            "the session is not valid (signed out, expired, or its token revoked)",
        )),
        Err(e) => Err(ApiError::from(e)),
    }
}

/// The caller a request's bearer token names, whatever the auth mode.
async fn bearer(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
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

/// The session secret of the request's cookies, if it has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Refuses a request whose `Origin` is missing or is not the origin it was sent to (its
/// `Host`): what a change made with the session cookie must show.
pub fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let Some(origin) = origin else {
        return Err(ApiError::new(
            ErrorCode::SessionOriginRefused,
            "a change made with a session cookie must carry the page's `Origin`",
        ));
    };
    if host.is_some_and(|host| origin_is_host(origin, host)) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::SessionOriginRefused,
        "a change made with a session cookie must come from this server's own pages",
    ))
}

/// Whether `origin` (`scheme://host[:port]`) names the authority `host`.
fn origin_is_host(origin: &str, host: &str) -> bool {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|authority| !authority.is_empty() && authority.eq_ignore_ascii_case(host))
}

/// The `Set-Cookie` value that holds a new session. No `Secure`: the server speaks plain
/// HTTP (on loopback by default), and a browser drops a `Secure` cookie set over it.
pub fn session_set_cookie(secret: &str) -> String {
    format!(
        "{SESSION_COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.num_seconds()
    )
}

/// The `Set-Cookie` value that clears the session cookie.
pub fn session_clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// The token of an `Authorization: Bearer <token>` value; the scheme's name is
/// case-insensitive (RFC 9110 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A caller proven by a credential (a bearer token, or a session made from one) even when
/// auth is off: what minting a token or a login code takes. With auth off any local process,
/// and any web page that gets a request through, acts as the admin; a token minted that way
/// would outlive the mode and keep working once auth is back on. A session is as good as
/// its token: someone held the token (or a code its holder minted) to make it, and the
/// session dies with it. (`tether up` mints its worker's token through the store, not over
/// HTTP.)
pub struct Proven(pub Caller);

impl FromRequestParts<AppState> for Proven {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        credential(state, &parts.method, &parts.headers)
            .await
            .map(Proven)
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
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; tether_session=s3cret ; b=2")]);
        assert_eq!(session_cookie(&h), Some("s3cret"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "tether_session=x")]);
        assert_eq!(session_cookie(&h), Some("x"));
        assert_eq!(
            session_cookie(&headers(&[("cookie", "xtether_session=y")])),
            None
        );
        assert_eq!(
            session_cookie(&headers(&[("cookie", "tether_session=")])),
            None
        );
    }

    #[test]
    fn a_change_by_session_needs_the_servers_own_origin() {
        let ok = headers(&[
            ("host", "127.0.0.1:4437"),
            ("origin", "http://127.0.0.1:4437"),
        ]);
        assert!(same_origin(&ok).is_ok());
        for bad in [
            headers(&[("host", "127.0.0.1:4437")]),
            headers(&[
                ("host", "127.0.0.1:4437"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[
                ("host", "127.0.0.1:4437"),
                ("origin", "http://127.0.0.1:4438"),
            ]),
            headers(&[("host", "127.0.0.1:4437"), ("origin", "null")]),
            headers(&[("origin", "http://127.0.0.1:4437")]),
        ] {
            let e = same_origin(&bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::SessionOriginRefused, "{bad:?}");
        }
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_not_secure() {
        let c = session_set_cookie("s");
        assert!(c.starts_with("tether_session=s;"));
        for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!c.contains("Secure"), "{c}");
    }

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
