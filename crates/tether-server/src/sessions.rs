//! Signing a browser in and out: one-time login codes and sessions.
//!
//! `tether up` and `tether ui` print a login link with a code minted here for their token.
//! The link's page posts the code to `POST /v1/sessions`, so opening (or prefetching) the
//! link changes nothing; only the page's POST uses the code, once. The same route takes a
//! pasted API token. Either way the answer sets the session cookie (see `auth`).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::Utc;
use tether_store::NewSecret;
use tether_types::api::{LoginCode, NewSession, WhoAmI};
use tether_types::ErrorCode;

use crate::auth::{self, hash, random_text, Proven};
use crate::error::ApiError;
use crate::extract::parse_json;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/login-codes", post(create_code))
        .route("/v1/sessions", post(create_session))
        .route("/v1/sessions/logout", post(logout))
}

#[utoipa::path(
    post,
    path = "/v1/login-codes",
    tag = "sessions",
    operation_id = "create_login_code",
    summary = "Mint a one-time login code for the caller's token",
    description = "The code signs one browser in as the caller's token, once, within ten \
        minutes (`POST /v1/sessions`). `url` is the login page with the code, on the address \
        this request came to. Takes a real credential even with `--auth off`.",
    responses(
        (status = 201, description = "The code", body = tether_types::api::LoginCode),
        (status = 401, description = "`UNAUTHORIZED`", body = tether_types::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn create_code(
    State(state): State<AppState>,
    Proven(caller): Proven,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (code, expires_at) =
        auth::mint_login_code(state.control.as_ref(), &caller.0.token_id).await?;
    let url = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|host| format!("http://{host}/login?code={code}"));
    let body = LoginCode {
        code,
        url,
        expires_at,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "sessions",
    operation_id = "create_session",
    summary = "Sign a browser in with a login code or an API token",
    description = "Exactly one of `code` (from `POST /v1/login-codes`; it works once) or \
        `token`. Sets the `tether_session` cookie (HttpOnly, SameSite=Strict, Path=/), which \
        acts as the token for twelve hours or until it is revoked or the browser signs out.",
    request_body = tether_types::api::NewSession,
    responses(
        (status = 201, description = "Signed in: who the session acts as", body = tether_types::api::WhoAmI),
        (status = 400, description = "`VALIDATION_ERROR`: neither or both", body = tether_types::ErrorBody),
        (status = 401, description = "`LOGIN_CODE_INVALID`: unknown, used or expired; \
            `UNAUTHORIZED`: an unknown or revoked token", body = tether_types::ErrorBody),
    )
)]
async fn create_session(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let new: NewSession = parse_json(&body)?;
    let now = Utc::now();
    let token_id = match (new.code, new.token) {
        (Some(code), None) => state
            .control
            .take_login_code(&hash(code.trim()), now)
            .await?
            .ok_or_else(code_invalid)?,
        (None, Some(token)) => match state.control.principal(&hash(token.trim())).await? {
            Some(principal) => principal.token_id,
            None => {
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "the token is not valid (unknown or revoked)",
                ))
            }
        },
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `code` or `token`",
            ))
        }
    };
    let secret = random_text(40);
    let created = state
        .control
        .create_session(NewSecret {
            hash: hash(&secret),
            token_id,
            now,
            expires_at: now + auth::SESSION_TTL,
        })
        .await;
    match created {
        Ok(()) => {}
        // Revoked since the code was minted.
        Err(tether_store::UserError::TokenNotFound) => return Err(code_invalid()),
        Err(e) => return Err(e.into()),
    }
    let principal = state
        .control
        .session(&hash(&secret), now)
        .await?
        .ok_or_else(code_invalid)?;
    tracing::info!(token = %principal.token_id, user = %principal.user, "signed in");
    let who = WhoAmI {
        user: principal.user,
        role: principal.role,
    };
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, auth::session_set_cookie(&secret))],
        Json(who),
    )
        .into_response())
}

fn code_invalid() -> ApiError {
    ApiError::new(
        ErrorCode::LoginCodeInvalid,
        "this login code is not valid: it was used already, has expired, or its token was \
         revoked; get a new link with `tether ui`",
    )
}

#[utoipa::path(
    post,
    path = "/v1/sessions/logout",
    tag = "sessions",
    operation_id = "logout",
    summary = "Sign the browser out",
    description = "Ends the session of the request's cookie and clears the cookie. As every \
        change made with the cookie, it needs the server's own `Origin`.",
    responses(
        (status = 204, description = "Signed out"),
        (status = 403, description = "`SESSION_ORIGIN_REFUSED`", body = tether_types::ErrorBody),
    )
)]
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(secret) = auth::session_cookie(&headers) {
        auth::same_origin(&headers)?;
        state.control.delete_session(&hash(secret)).await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, auth::session_clear_cookie())],
    )
        .into_response())
}
