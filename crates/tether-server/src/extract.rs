//! Reading a request's parts, each failure a 400 in the API's error shape: header text, JSON
//! bodies, text fields and numeric query parameters. Above [`crate::error`], below every
//! resource.

use axum::http::{HeaderMap, HeaderName};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A header as text; a value that is not visible ASCII is a client error, not something to
/// guess about.
pub fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            ApiError::bad_request(format!("header {} is not valid text", name.as_str()))
        }),
    }
}

/// A JSON body, or a 400 that says what is wrong with it.
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

/// `value` of `field` if it holds no NUL character ([`tether_types::text`]), else a 400
/// naming the field: for names, ids and messages read from a request.
pub fn text_field<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    tether_types::text::check_text(field, value).map_err(ApiError::bad_request)?;
    Ok(value)
}

/// A `limit`-like query parameter: a number in `1..=max`, `default` when absent.
pub fn limit_param(
    q: &std::collections::HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be a number from 1 to {max}"))
            }),
    }
}
