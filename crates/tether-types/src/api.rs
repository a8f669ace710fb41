//! The rest of the wire: errors, users and tokens.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `{"error":{"code","message","request_id"}}`, the body of every non-protocol error.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, machine-readable: `TASK_NOT_FOUND`, `VALIDATION_ERROR`, ... Clients keep a
    /// code they do not know as it was sent.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub code: crate::ErrorCode,
    pub message: String,
    pub request_id: Option<String>,
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including users, tokens and every task.
    Admin,
    /// Submits tasks and sees only its own.
    User,
    /// Runs tasks: reads any task and appends events.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Worker => "worker",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            "worker" => Ok(Role::Worker),
            other => Err(format!(
                "unknown role {other:?}; expected admin, user or worker"
            )),
        }
    }
}

/// `POST /v1/users` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/tokens` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub user: String,
    pub role: Role,
}

/// A token as listed: never the secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// When a request last authenticated with it; `null` if never. Recorded in memory and
    /// stored about once a minute, so it may lag by that much after a server restart.
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// `GET /v1/users` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserList {
    pub data: Vec<User>,
}

/// `GET /v1/tokens` answer: live (unrevoked) tokens, never their secrets.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    pub data: Vec<TokenInfo>,
}

/// `POST /v1/tokens` answer: the only time the secret is shown.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("info", &self.info)
            .field("token", &"<hidden>")
            .finish()
    }
}

/// `GET /v1/whoami` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    pub user: String,
    pub role: Role,
}

/// `POST /v1/login-codes` answer: a one-time code that signs a browser in as the caller's
/// token. Wire format: stable.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginCode {
    pub code: String,
    /// The login page with the code, on the address the request came to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/sessions` body: exactly one of a login code or an API token. Wire format: stable.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A user name: 1 to 64 of `[A-Za-z0-9_.-]`.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid user name: use 1 to 64 letters, digits, '_', '-' or '.'"
        ))
    }
}

/// An `Idempotency-Key`: 1 to 128 of `[A-Za-z0-9_-]`.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("Idempotency-Key must be 1 to 128 characters of A-Z, a-z, 0-9, '_' or '-'".into())
    }
}
