//! Users and tokens (admin only), and `whoami`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::Utc;
use tether_store::NewToken as StoredToken;
use tether_types::api::{
    check_user_name, IssuedToken, NewToken, NewUser, TokenInfo, TokenList, User, UserList, WhoAmI,
};
use tether_types::Role;

use crate::auth::{hash, mint, Caller, Proven};
use crate::error::ApiError;
use crate::extract::{parse_json, text_field};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(create_user).get(list_users))
        .route("/v1/users/{name}", axum::routing::patch(update_user))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/whoami", get(whoami))
}

#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    operation_id = "create_user",
    summary = "Create a user (admin)",
    request_body = tether_types::api::NewUser,
    responses(
        (status = 201, description = "The user, created", body = tether_types::api::User),
        (status = 400, description = "`VALIDATION_ERROR`: a bad body or name", body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin token", body = tether_types::ErrorBody),
        (status = 409, description = "`USER_EXISTS`", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin])?;
    let new: NewUser = parse_json(&body)?;
    check_user_name(&new.name).map_err(ApiError::bad_request)?;
    let user = state.control.create_user(&new.name, Utc::now()).await?;
    let body = User {
        name: user.name,
        created_at: user.created_at,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `PATCH /v1/users/{name}` body and answer: the user's own admission limit (`null`: the
/// server's `--max-concurrent`).
#[derive(serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserLimits {
    #[schema(minimum = 1)]
    max_concurrent: Option<u64>,
}

#[utoipa::path(
    patch,
    path = "/v1/users/{name}",
    tag = "users",
    operation_id = "update_user",
    summary = "Set a user's admission limit (admin)",
    params(("name" = String, Path, description = "The user's name")),
    request_body = UserLimits,
    responses(
        (status = 200, description = "The user's name and limit", body = serde_json::Value),
        (status = 400, description = "`VALIDATION_ERROR`: a bad body, or a limit of 0", body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin token", body = tether_types::ErrorBody),
        (status = 404, description = "`USER_NOT_FOUND`", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    text_field("name", &name)?;
    let limits: UserLimits = parse_json(&body)?;
    if limits.max_concurrent == Some(0) {
        return Err(ApiError::bad_request("max_concurrent must be at least 1"));
    }
    state
        .control
        .set_max_concurrent(&name, limits.max_concurrent)
        .await?;
    Ok(Json(
        serde_json::json!({ "name": name, "max_concurrent": limits.max_concurrent }),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "users",
    operation_id = "create_token",
    summary = "Issue a token for a user (admin)",
    request_body = tether_types::api::NewToken,
    responses(
        (status = 201, description = "The token: the only time its secret is shown",
            body = tether_types::api::IssuedToken),
        (status = 400, description = "`VALIDATION_ERROR`: a bad body", body = tether_types::ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin token", body = tether_types::ErrorBody),
        (status = 404, description = "`USER_NOT_FOUND`", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn create_token(
    State(state): State<AppState>,
    Proven(caller): Proven,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin])?;
    let new: NewToken = parse_json(&body)?;
    text_field("user", &new.user)?;
    let minted = mint();
    let now = Utc::now();
    state
        .control
        .create_token(StoredToken {
            id: minted.id.clone(),
            user: new.user.clone(),
            role: new.role,
            hash: hash(&minted.secret),
            now,
        })
        .await?;
    tracing::info!(token = %minted.id, user = %new.user, role = %new.role, "token created");
    let issued = IssuedToken {
        info: TokenInfo {
            id: minted.id,
            user: new.user,
            role: new.role,
            created_at: now,
            last_used_at: None,
        },
        token: minted.secret,
    };
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    tag = "users",
    operation_id = "revoke_token",
    summary = "Revoke a token (admin)",
    params(("id" = String, Path, description = "The token's id (not its secret)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin token", body = tether_types::ErrorBody),
        (status = 404, description = "`TOKEN_NOT_FOUND`", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Admin])?;
    text_field("id", &id)?;
    state.control.revoke_token(&id, Utc::now()).await?;
    tracing::info!(token = %id, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    operation_id = "list_users",
    summary = "List users, by name (admin)",
    responses(
        (status = 200, description = "Every user", body = tether_types::api::UserList),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin token", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<UserList>, ApiError> {
    caller.require(&[Role::Admin])?;
    let users = state.control.list_users().await?;
    let data = users
        .into_iter()
        .map(|u| User {
            name: u.name,
            created_at: u.created_at,
        })
        .collect();
    Ok(Json(UserList { data }))
}

#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "users",
    operation_id = "list_tokens",
    summary = "List live tokens: every user's for an admin, one's own otherwise",
    description = "Unrevoked tokens, oldest first: id, user, role, when created and when last \
        used (noted per request, stored about once a minute). Never a secret or a hash.",
    responses(
        (status = 200, description = "The tokens", body = tether_types::api::TokenList),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TokenList>, ApiError> {
    let owner = match caller.0.role {
        Role::Admin => None,
        Role::User | Role::Worker => Some(caller.0.user_id),
    };
    let tokens = state.control.list_tokens(owner).await?;
    let data = tokens
        .into_iter()
        .map(|t| {
            // What this node noted since its last flush is newer than what is stored.
            let last_used_at = t.last_used_at.max(state.token_use.pending(&t.id));
            TokenInfo {
                id: t.id,
                user: t.user,
                role: t.role,
                created_at: t.created_at,
                last_used_at,
            }
        })
        .collect();
    Ok(Json(TokenList { data }))
}

#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "users",
    operation_id = "whoami",
    summary = "Who the token belongs to",
    responses(
        (status = 200, description = "The caller", body = tether_types::api::WhoAmI),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        user: caller.0.user,
        role: caller.0.role,
    })
}
