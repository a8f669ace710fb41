//! `POST /v1/stream/{path}`, the append path, answered straight from the connection.
//!
//! Through the router an append paid for machinery it does not use: the route's boxed service
//! cloned per request, a boxed future per layer, the middleware's task-local and extensions,
//! and a copy of the request's headers for the handler. Under callgrind (100 streams, 16
//! connections) a server spent 59,000 instructions and 57 allocator calls per append that
//! way, and 48,000 and 22 this way. Here the transport hands an append to [`answer`] (the
//! router registers this module with it as `crate::router::DirectAppend`), which runs the
//! handler's own code ([`super::write::answer_post`]) on the request as hyper parsed
//! it and stamps the response as the middleware would.
//!
//! A request is taken only when the answer is certain to be the router's: the path decodes to
//! UTF-8 and hyper knows the body's length, within the append limit. Anything else (a chunked
//! body, an oversized one, a path the router would reject) goes to the router, which gives its
//! usual answer. The router's middleware checks every request with [`crate::guard::check`]
//! before routing it; [`answer`] does too, first.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use axum::http::{Method, Request};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as _;
use percent_encoding::percent_decode_str;

use crate::error::ApiError;
use crate::guard;
use crate::headers::PREFIX;
use crate::request_id::{new_request_id, RequestId};
use crate::timed_body::TimedBody;
use crate::AppState;
use crate::{metrics, stamp};

/// An answer being worked out.
pub type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;

/// The stream path of `req` if it is an append this module answers; `None` leaves it to the
/// router.
pub fn takes(state: &AppState, req: &Request<TimedBody>) -> Option<String> {
    let length = req.body().size_hint().exact();
    let limit = state.config.max_append_bytes;
    append_path(req.method(), req.uri().path(), length, limit)
}

/// Answers an append that [`takes`] took, at `path`.
pub fn answer(state: &AppState, path: String, req: Request<TimedBody>) -> Answer {
    let state = state.clone();
    Box::pin(async move {
        let started = Instant::now();
        let rid = RequestId(new_request_id());
        let (parts, body) = req.into_parts();
        let limit = state.config.max_append_bytes;
        let checked = guard::check(&state, &parts.method, &parts.uri, &parts.headers, true);
        let mut response = match checked {
            Ok(()) => match Limited::new(body, limit).collect().await {
                Ok(body) => {
                    let body = body.to_bytes();
                    let headers = &parts.headers;
                    super::write::answer_post(state.clone(), &rid, &path, headers, body).await
                }
                // As the router's body extractor words it (its length is known and within the
                // limit, so only a failed read is left).
                Err(e) => ApiError::bad_request(format!("Failed to buffer the request body: {e}"))
                    .for_request(&rid)
                    .into_response(),
            },
            Err(e) => e.for_request(&rid).into_response(),
        };
        metrics::observe_stream(&state, &Method::POST, &response, started);
        stamp::stamp(response.headers_mut(), &rid.0, true);
        response
    })
}

/// The stream path of an append this module may answer: a POST under [`PREFIX`] whose path
/// decodes as the router's `{*path}` would, with a body whose length hyper knows from the
/// request's framing (`Content-Length`, or no body at all) and which is within `limit`.
fn append_path(
    method: &Method,
    uri_path: &str,
    length: Option<u64>,
    limit: usize,
) -> Option<String> {
    if method != Method::POST || length? > limit as u64 {
        return None;
    }
    let raw = uri_path.strip_prefix(PREFIX).filter(|p| !p.is_empty())?;
    let path = percent_decode_str(raw).decode_utf8().ok()?;
    Some(path.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_with_a_known_length_is_taken_with_its_path_decoded() {
        let path = append_path(&Method::POST, "/v1/stream/a%20b/c", Some(5), 10);
        assert_eq!(path.as_deref(), Some("a b/c"));
    }

    #[test]
    fn what_the_router_answers_differently_is_left_to_it() {
        let sized = Some(5);
        // Not an append.
        assert_eq!(append_path(&Method::GET, "/v1/stream/a", sized, 10), None);
        assert_eq!(append_path(&Method::PUT, "/v1/stream/a", sized, 10), None);
        // No stream path, or not under the prefix.
        assert_eq!(append_path(&Method::POST, "/v1/stream/", sized, 10), None);
        assert_eq!(append_path(&Method::POST, "/v1/tasks", sized, 10), None);
        // A path that is not UTF-8 once decoded: the router's rejection.
        assert_eq!(
            append_path(&Method::POST, "/v1/stream/%FF", sized, 10),
            None
        );
        // Bodies the router's limit handles: too long, or of a length not known in advance
        // (chunked).
        assert_eq!(append_path(&Method::POST, "/v1/stream/a", sized, 4), None);
        assert_eq!(append_path(&Method::POST, "/v1/stream/a", None, 10), None);
    }
}
