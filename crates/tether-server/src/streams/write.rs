//! PUT (create, fork), POST (append, close) and DELETE.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, HOST, LOCATION};
use axum::http::Method;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use tether_store::{Access, Append, AppendStatus, CreateStream, ForkFrom};
use tether_types::headers::{is_true, parse_expires_at, parse_strict_u64, parse_ttl};
use tether_types::Offset;

use super::response::ResponseHeaders;
use super::Admitted;
use crate::error::ApiError;
use crate::extract::text;
use crate::headers as h;
use crate::request_id::RequestId;
use crate::shared::producer_stamp;
use crate::AppState;

pub async fn put(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admitted = match super::admit(&state, &headers, &path, &Method::PUT).await {
        Ok(admitted) => admitted,
        Err(e) => return e.for_request(&rid).into_response(),
    };
    create(state, &admitted, &path, &headers, body)
        .await
        .unwrap_or_else(|e| e.for_request(&rid).into_response())
}

async fn create(
    state: AppState,
    admitted: &Admitted,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut request = create_request(headers, body)?;
    request.owner = Some(admitted.caller.0.user_id);
    request.access = admitted.access;
    if let Some(fork) = &request.fork {
        request.source_access =
            super::source_access(&state, &admitted.caller, &fork.source).await?;
    }
    let created = state.store.create(path, request).await?;
    let info = created.info;
    let mut out = ResponseHeaders::new();
    out.content_type(&info.config.content_type)
        .next_offset(info.next)
        .closed(info.closed);
    let status = if created.created {
        let host = text(headers, &HOST)?.unwrap_or("localhost");
        out.set(LOCATION, &format!("http://{host}{}{path}", super::PREFIX));
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, out.into_map()).into_response())
}

fn create_request(headers: &HeaderMap, body: Bytes) -> Result<CreateStream, ApiError> {
    let ttl = text(headers, &h::STREAM_TTL)?
        .map(parse_ttl)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let expires_at = text(headers, &h::STREAM_EXPIRES_AT)?
        .map(parse_expires_at)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if ttl.is_some() && expires_at.is_some() {
        return Err(ApiError::bad_request(
            "Stream-TTL and Stream-Expires-At cannot both be set",
        ));
    }
    let fork_source = text(headers, &h::STREAM_FORKED_FROM)?;
    let fork_offset = text(headers, &h::STREAM_FORK_OFFSET)?;
    let sub_offset = text(headers, &h::STREAM_FORK_SUB_OFFSET)?;
    let fork = match fork_source {
        Some(source) => Some(ForkFrom {
            source: super::source_path(source).to_string(),
            offset: fork_offset
                .map(|o| o.parse::<Offset>())
                .transpose()
                .map_err(|e| ApiError::bad_request(format!("invalid Stream-Fork-Offset: {e}")))?,
            sub_offset: sub_offset
                .map(|s| parse_strict_u64("Stream-Fork-Sub-Offset", s))
                .transpose()
                .map_err(|e| ApiError::bad_request(e.to_string()))?
                .unwrap_or(0),
        }),
        None if fork_offset.is_some() || sub_offset.is_some() => {
            return Err(ApiError::bad_request(
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
            ))
        }
        None => None,
    };
    Ok(CreateStream {
        content_type: text(headers, &CONTENT_TYPE)?.map(str::to_string),
        ttl_secs: ttl,
        expires_at,
        closed: is_true(text(headers, &h::STREAM_CLOSED)?),
        fork,
        body,
        ..CreateStream::default()
    })
}

pub async fn post(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer_post(state, &rid, &path, &headers, body).await
}

/// What `POST /v1/stream/{path}` answers, whether the router or [`super::direct`] took the
/// request.
pub(super) async fn answer_post(
    state: AppState,
    rid: &RequestId,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let access = match super::admit(&state, headers, path, &Method::POST).await {
        Ok(admitted) => admitted.access,
        Err(e) => return e.for_request(rid).into_response(),
    };
    append(state, access, path, headers, body)
        .await
        .unwrap_or_else(|e| e.for_request(rid).into_response())
}

async fn append(
    state: AppState,
    access: Access,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let close = is_true(text(headers, &h::STREAM_CLOSED)?);
    let content_type = text(headers, &CONTENT_TYPE)?.map(str::to_string);
    if !body.is_empty() && content_type.is_none() {
        return Err(ApiError::bad_request(
            "an append with a body needs a Content-Type",
        ));
    }
    let body_empty = body.is_empty();
    let bytes = body.len();
    let request = Append {
        content_type,
        body,
        close,
        producer: producer_stamp(headers)?,
        stream_seq: text(headers, &h::STREAM_SEQ)?.map(str::to_string),
        access,
    };
    let appended = state.store.append(path, request).await?;
    if appended.status == AppendStatus::Appended {
        state.metrics.appended(bytes);
    }
    let mut out = ResponseHeaders::new();
    out.next_offset(appended.next).closed(appended.closed);
    if let Some((epoch, seq)) = appended.producer {
        out.set(h::PRODUCER_EPOCH, &epoch.to_string())
            .set(h::PRODUCER_SEQ, &seq.to_string());
    }
    // New data from a producer is 200; everything else that succeeds, including a producer's
    // close-only request, is 204 (protocol 5.2.1).
    let status = match (appended.status, appended.producer.is_some() && !body_empty) {
        (AppendStatus::Appended, true) => StatusCode::OK,
        (AppendStatus::Appended, false)
        | (AppendStatus::Duplicate, _)
        | (AppendStatus::AlreadyClosed, _) => StatusCode::NO_CONTENT,
    };
    Ok((status, out.into_map()).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let access = match super::admit(&state, &headers, &path, &Method::DELETE).await {
        Ok(admitted) => admitted.access,
        Err(e) => return e.for_request(&rid).into_response(),
    };
    match state.store.delete_as(access, &path).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => ApiError::from(e).for_request(&rid).into_response(),
    }
}
