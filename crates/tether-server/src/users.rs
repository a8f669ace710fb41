//! Users and tokens (admin only), and `whoami`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::Utc;
use tether_store::NewToken as StoredToken;
use tether_types::api::{check_user_name, IssuedToken, NewToken, NewUser, TokenInfo, User, WhoAmI};
use tether_types::Role;

use crate::auth::{hash, mint, Caller};
use crate::error::ApiError;
use crate::tasks::parse_json;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(create_user))
        .route("/v1/tokens", post(create_token))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/whoami", get(whoami))
}

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

async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin])?;
    let new: NewToken = parse_json(&body)?;
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
        },
        token: minted.secret,
    };
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Admin])?;
    state.control.revoke_token(&id, Utc::now()).await?;
    tracing::info!(token = %id, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}

async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        user: caller.0.user,
        role: caller.0.role,
    })
}
