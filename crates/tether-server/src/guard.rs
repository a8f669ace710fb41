//! What every request must satisfy before it is routed, checked the same way by the router's
//! middleware and by the direct append path (`streams::direct`), so both answer alike.
//!
//! Each check is a few comparisons on the parsed head: this runs on every append.

use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN};
use axum::http::header::{IF_NONE_MATCH, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderName, Method, Uri};
use tether_types::ErrorCode;

use crate::config::AuthMode;
use crate::error::ApiError;
use crate::headers as h;
use crate::AppState;

/// Longest request target answered with the JSON 414 (hyper refuses past 64 KiB by itself,
/// with an empty answer).
pub const MAX_URI_BYTES: usize = 16 << 10;
/// Most bytes of header names and values answered with the JSON 431 (hyper refuses heads
/// past about 400 KiB, or with more than 100 headers, by itself, with an empty answer).
pub const MAX_HEADER_BYTES: usize = 64 << 10;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Headers whose meaning a second copy would make ambiguous: with two, which one holds?
const SINGLE: [HeaderName; 17] = [
    AUTHORIZATION,
    CONTENT_TYPE,
    HOST,
    ORIGIN,
    IF_NONE_MATCH,
    IDEMPOTENCY_KEY,
    h::PRODUCER_ID,
    h::PRODUCER_EPOCH,
    h::PRODUCER_SEQ,
    h::STREAM_SEQ,
    h::STREAM_CLOSED,
    h::STREAM_TTL,
    h::STREAM_EXPIRES_AT,
    h::STREAM_FORKED_FROM,
    h::STREAM_FORK_OFFSET,
    h::STREAM_FORK_SUB_OFFSET,
    h::LAST_EVENT_ID,
];

/// Refuses a request that no route should see: too large a head, a repeated header that
/// carries meaning, with auth off a foreign `Host` or `Origin`, and outside the stream routes
/// a body that is not JSON.
pub fn check(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    stream: bool,
) -> Result<(), ApiError> {
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return Err(ApiError::new(
            ErrorCode::UriTooLong,
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        ));
    }
    let head: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if head > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!("the request's headers hold more than {MAX_HEADER_BYTES} bytes"),
        ));
    }
    // Repeated names of any kind are rare: one comparison settles the usual case.
    if headers.len() != headers.keys_len() {
        if let Some(name) = SINGLE
            .iter()
            .find(|n| headers.get_all(*n).iter().nth(1).is_some())
        {
            return Err(ApiError::new(
                ErrorCode::DuplicateHeader,
                format!("header {} may appear only once", name.as_str()),
            ));
        }
    }
    if state.config.auth == AuthMode::Off {
        // The protocol lets pages of any origin read streams (12.7); acting is for this
        // machine's own clients.
        let reads = stream && matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        local_only(headers, !reads)?;
    }
    if !stream {
        json_only(method, headers)?;
    }
    Ok(())
}

/// With auth off every request acts as the admin, so only this machine may send them: a web
/// page could otherwise reach the server through the browser, by a cross-origin request
/// (`Origin`, checked when `check_origin`) or by pointing a name it controls at 127.0.0.1
/// (DNS rebinding: `Host`).
fn local_only(headers: &HeaderMap, check_origin: bool) -> Result<(), ApiError> {
    if let Some(host) = headers.get(HOST) {
        let local = host
            .to_str()
            .ok()
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
            .is_some_and(|a| is_loopback_name(a.host()));
        if !local {
            return Err(ApiError::new(
                ErrorCode::HostNotAllowed,
                "with --auth off the server answers only requests addressed to a loopback \
                 name (localhost, 127.0.0.1, [::1])",
            ));
        }
    }
    if let Some(origin) = headers.get(ORIGIN).filter(|_| check_origin) {
        let local = origin
            .to_str()
            .ok()
            .and_then(|o| o.parse::<Uri>().ok())
            .is_some_and(|o| o.host().is_some_and(is_loopback_name));
        if !local {
            return Err(ApiError::new(
                ErrorCode::OriginNotAllowed,
                "with --auth off the server refuses requests from web pages of other origins",
            ));
        }
    }
    Ok(())
}

fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The task, user, token and worker routes take JSON. Anything else is refused rather than
/// parsed anyway: a browser sends `text/plain` (or no type) cross-origin without asking
/// first, and a body it may send that way must not act.
fn json_only(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return Ok(());
    }
    let acceptable = match headers.get(CONTENT_TYPE) {
        Some(value) => value.to_str().is_ok_and(is_json_type),
        // No type: only for no body.
        None => {
            !headers.contains_key(TRANSFER_ENCODING)
                && headers
                    .get(CONTENT_LENGTH)
                    .is_none_or(|length| length.as_bytes() == b"0")
        }
    };
    if acceptable {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::UnsupportedMediaType,
        "this route takes a JSON body: send `Content-Type: application/json`",
    ))
}

/// `application/json` or a `+json` type, with any parameters.
fn is_json_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_types_are_recognised_with_their_parameters() {
        assert!(is_json_type("application/json"));
        assert!(is_json_type("Application/JSON; charset=utf-8"));
        assert!(is_json_type("application/problem+json"));
        assert!(!is_json_type("text/plain"));
        assert!(!is_json_type("application/x-www-form-urlencoded"));
        assert!(!is_json_type("multipart/form-data; boundary=x"));
        assert!(!is_json_type("application/+json"));
        assert!(!is_json_type("json"));
    }

    #[test]
    fn loopback_names_are_the_only_local_ones() {
        for local in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback_name(local), "{local}");
        }
        for foreign in [
            "evil.example",
            "localhost.evil.example",
            "10.0.0.1",
            "0.0.0.0",
            "",
        ] {
            assert!(!is_loopback_name(foreign), "{foreign}");
        }
    }
}
