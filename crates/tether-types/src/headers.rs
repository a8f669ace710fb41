//! Parsing of Durable Streams header values.
//!
//! The protocol is strict about number syntax (no signs, no leading zeros, no exponents), and a
//! malformed value must become a 400, never a panic. Each parser here takes the raw header text
//! and returns a typed value or a [`HeaderError`] that names the header.

use chrono::{DateTime, Utc};

/// `Producer-Epoch` and `Producer-Seq` must fit in a JavaScript number.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {header}: {reason}")]
pub struct HeaderError {
    pub header: &'static str,
    pub reason: &'static str,
}

impl HeaderError {
    fn new(header: &'static str, reason: &'static str) -> Self {
        HeaderError { header, reason }
    }
}

/// A non-negative decimal integer without sign, leading zeros, fraction or exponent.
pub fn parse_strict_u64(header: &'static str, value: &str) -> Result<u64, HeaderError> {
    let digits_only = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    if !digits_only {
        return Err(HeaderError::new(
            header,
            "expected a non-negative decimal integer",
        ));
    }
    if value.len() > 1 && value.starts_with('0') {
        return Err(HeaderError::new(header, "leading zeros are not allowed"));
    }
    value
        .parse()
        .map_err(|_| HeaderError::new(header, "number is too large"))
}

/// `Stream-TTL`: seconds of idleness after which the stream expires.
pub fn parse_ttl(value: &str) -> Result<u64, HeaderError> {
    let ttl = parse_strict_u64("Stream-TTL", value)?;
    // Beyond a century the deadline arithmetic stops meaning anything.
    if ttl > 100 * 365 * 24 * 3600 {
        return Err(HeaderError::new("Stream-TTL", "TTL is too large"));
    }
    Ok(ttl)
}

/// `Stream-Expires-At`: an RFC 3339 timestamp.
pub fn parse_expires_at(value: &str) -> Result<DateTime<Utc>, HeaderError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| HeaderError::new("Stream-Expires-At", "expected an RFC 3339 timestamp"))
}

/// `Producer-Epoch` / `Producer-Seq`: integers in `0..=2^53-1`.
pub fn parse_producer_number(header: &'static str, value: &str) -> Result<u64, HeaderError> {
    let trimmed = value.trim();
    let n: u64 = if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        trimmed
            .parse()
            .map_err(|_| HeaderError::new(header, "number is too large"))?
    } else {
        return Err(HeaderError::new(header, "expected a non-negative integer"));
    };
    if n > MAX_SAFE_INTEGER {
        return Err(HeaderError::new(header, "must be at most 2^53-1"));
    }
    Ok(n)
}

/// `Stream-Closed`: present only when exactly `true`, ignoring case. Any other value is as if
/// the header were absent (protocol section 4.1).
pub fn is_true(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
/// `Application/JSON; charset=utf-8` and `application/json` name the same stream type.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether two `Content-Type` values name the same media type (case and parameters aside).
/// Allocation-free: the writer checks it on every append.
pub fn same_media_type(a: &str, b: &str) -> bool {
    fn essence(ct: &str) -> &str {
        ct.split(';').next().unwrap_or("").trim()
    }
    essence(a).eq_ignore_ascii_case(essence(b))
}

/// Whether a content type puts a stream in JSON mode (message boundaries, array flattening).
pub fn is_json(content_type: &str) -> bool {
    media_type(content_type) == "application/json"
}

/// Whether SSE can carry the stream's bytes as text; everything else is sent base64-encoded.
pub fn is_sse_text(content_type: &str) -> bool {
    let media = media_type(content_type);
    media.starts_with("text/") || media == "application/json"
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ttl_accepts_only_plain_decimals() {
        assert_eq!(parse_ttl("3600"), Ok(3600));
        assert_eq!(parse_ttl("0"), Ok(0));
        for bad in ["", "+3600", "03600", "3600.0", "3.6e3", "-1", "abc", " 1"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn producer_numbers_stop_at_the_javascript_limit() {
        assert_eq!(parse_producer_number("Producer-Seq", "0"), Ok(0));
        assert_eq!(
            parse_producer_number("Producer-Seq", "9007199254740991"),
            Ok(MAX_SAFE_INTEGER)
        );
        assert!(parse_producer_number("Producer-Seq", "9007199254740992").is_err());
        assert!(parse_producer_number("Producer-Seq", "-1").is_err());
        assert!(parse_producer_number("Producer-Seq", "1.5").is_err());
    }

    #[test]
    fn stream_closed_is_true_only_for_true() {
        assert!(is_true(Some("true")));
        assert!(is_true(Some("TRUE")));
        for other in [None, Some("false"), Some("yes"), Some("1"), Some("")] {
            assert!(!is_true(other));
        }
    }

    #[test]
    fn media_types_compare_without_case_or_parameters() {
        assert_eq!(
            media_type("Application/JSON; charset=utf-8"),
            "application/json"
        );
        assert!(is_json("APPLICATION/JSON"));
        assert!(same_media_type("Text/Plain; charset=utf-8", " text/plain"));
        assert!(!same_media_type("text/plain", "text/html"));
        assert!(is_sse_text("text/plain"));
        assert!(!is_sse_text("application/octet-stream"));
    }

    proptest! {
        #[test]
        fn header_parsers_never_panic(s in "\\PC*") {
            let _ = parse_ttl(&s);
            let _ = parse_expires_at(&s);
            let _ = parse_producer_number("Producer-Seq", &s);
            let _ = parse_strict_u64("Stream-Fork-Sub-Offset", &s);
            let _ = media_type(&s);
            prop_assert_eq!(same_media_type(&s, "text/plain"), media_type(&s) == "text/plain");
        }

        #[test]
        fn strict_integers_round_trip(n in any::<u64>()) {
            prop_assert_eq!(parse_strict_u64("x", &n.to_string()), Ok(n));
        }
    }
}
