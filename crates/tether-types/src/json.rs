//! JSON-mode message framing (protocol section 9.1).
//!
//! An append body is one JSON value. If it is an array, exactly one level is flattened: each
//! element becomes a message. Messages are kept as the exact text the client sent (no
//! re-serialisation), so a reader gets back byte for byte what each element was.

use serde_json::value::RawValue;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonBodyError {
    #[error("body is not valid JSON: {0}")]
    Invalid(String),
    #[error("an empty JSON array appends nothing")]
    EmptyArray,
    #[error("body is nested deeper than {MAX_DEPTH} arrays and objects")]
    TooDeep,
}

/// Deepest nesting of arrays and objects accepted in a JSON body: serde_json's own recursion
/// limit, which bounds every task, user and worker body. Stream messages are kept as raw
/// text, which serde_json skips over without that limit, so they are measured here instead:
/// a reader that parses them would otherwise meet a value nested 100,000 deep.
pub const MAX_DEPTH: usize = 128;

/// Whether `text` nests arrays and objects at most [`MAX_DEPTH`] deep. One pass over the
/// bytes; brackets inside strings do not count. (Only called on text serde_json then
/// validates, so it need not validate anything itself.)
fn within_depth(text: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Splits an append body into its messages. `allow_empty_array` is true for `PUT`, where `[]`
/// creates an empty stream, and false for `POST`, where it is a client bug (400).
pub fn split_messages(body: &[u8], allow_empty_array: bool) -> Result<Vec<Vec<u8>>, JsonBodyError> {
    let text = std::str::from_utf8(body).map_err(|e| JsonBodyError::Invalid(e.to_string()))?;
    if !within_depth(body) {
        return Err(JsonBodyError::TooDeep);
    }
    let starts_array = text.trim_start().starts_with('[');
    if starts_array {
        let elements: Vec<&RawValue> =
            serde_json::from_str(text).map_err(|e| JsonBodyError::Invalid(e.to_string()))?;
        if elements.is_empty() && !allow_empty_array {
            return Err(JsonBodyError::EmptyArray);
        }
        Ok(elements
            .into_iter()
            .map(|e| e.get().as_bytes().to_vec())
            .collect())
    } else {
        let value: &RawValue =
            serde_json::from_str(text).map_err(|e| JsonBodyError::Invalid(e.to_string()))?;
        Ok(vec![value.get().as_bytes().to_vec()])
    }
}

/// Frames messages as the JSON array a read returns.
pub fn frame_array<'a>(messages: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, m) in messages.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m);
    }
    out.push(b']');
}

/// Joins messages with commas: the stored form of one JSON append, which a read frames
/// with brackets (so framing several appends is one more comma between them).
pub fn join_messages(messages: &[Vec<u8>]) -> Vec<u8> {
    let size = messages.iter().map(|m| m.len() + 1).sum();
    let mut out = Vec::with_capacity(size);
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m);
    }
    out
}

/// Messages `skip..skip+take` of a stored (comma-joined) append, in the same stored form.
/// `None` if the stored text is not a valid message list.
pub fn slice_joined(joined: &[u8], skip: usize, take: usize) -> Option<Vec<u8>> {
    let mut framed = Vec::with_capacity(joined.len() + 2);
    framed.push(b'[');
    framed.extend_from_slice(joined);
    framed.push(b']');
    let text = std::str::from_utf8(&framed).ok()?;
    let messages: Vec<&RawValue> = serde_json::from_str(text).ok()?;
    let picked: Vec<Vec<u8>> = messages
        .into_iter()
        .skip(skip)
        .take(take)
        .map(|m| m.get().as_bytes().to_vec())
        .collect();
    Some(join_messages(&picked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(body: &str) -> Result<Vec<String>, JsonBodyError> {
        split_messages(body.as_bytes(), false).map(|ms| {
            ms.into_iter()
                .map(|m| String::from_utf8(m).unwrap())
                .collect()
        })
    }

    #[test]
    fn arrays_are_flattened_exactly_one_level() {
        assert_eq!(
            split(r#"{"event":"created"}"#).unwrap(),
            [r#"{"event":"created"}"#]
        );
        assert_eq!(
            split(r#"[{"a":1}, {"b":2}]"#).unwrap(),
            [r#"{"a":1}"#, r#"{"b":2}"#]
        );
        assert_eq!(split("[[1,2],[3,4]]").unwrap(), ["[1,2]", "[3,4]"]);
        assert_eq!(split("[[[1,2,3]]]").unwrap(), ["[[1,2,3]]"]);
    }

    #[test]
    fn empty_arrays_are_rejected_on_append_only() {
        assert_eq!(split("[]"), Err(JsonBodyError::EmptyArray));
        assert_eq!(split_messages(b" [ ] ", true), Ok(vec![]));
    }

    #[test]
    fn stored_appends_slice_by_message() {
        let joined = join_messages(&[b"{\"a\":1}".to_vec(), b"[1,2]".to_vec(), b"3".to_vec()]);
        assert_eq!(joined, b"{\"a\":1},[1,2],3");
        assert_eq!(slice_joined(&joined, 1, 2).unwrap(), b"[1,2],3");
        assert_eq!(slice_joined(&joined, 0, 1).unwrap(), b"{\"a\":1}");
        assert_eq!(slice_joined(&joined, 3, 1).unwrap(), b"");
    }

    #[test]
    fn nesting_is_bounded_as_serde_json_bounds_task_bodies() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(split(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(split(&nested(MAX_DEPTH + 1)), Err(JsonBodyError::TooDeep));
        assert_eq!(split(&nested(100_000)), Err(JsonBodyError::TooDeep));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        assert_eq!(split(&objects), Err(JsonBodyError::TooDeep));
        // Brackets inside strings, escaped quotes included, are text.
        let text = format!(r#"["\"{}"]"#, "[".repeat(1000));
        assert_eq!(
            split(&text).unwrap(),
            [format!(r#""\"{}""#, "[".repeat(1000))]
        );
        // The same bound serde_json puts on the bodies it parses into values.
        let value: Result<serde_json::Value, _> = serde_json::from_str(&nested(MAX_DEPTH + 1));
        assert!(value.is_err());
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(matches!(split("{"), Err(JsonBodyError::Invalid(_))));
        assert!(matches!(split("[1,"), Err(JsonBodyError::Invalid(_))));
        assert!(matches!(split(""), Err(JsonBodyError::Invalid(_))));
    }

    proptest! {
        #[test]
        fn splitting_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = split_messages(&body, false);
        }

        #[test]
        fn framing_split_messages_gives_back_the_same_values(xs in proptest::collection::vec(any::<i64>(), 1..20)) {
            let body = serde_json::to_string(&xs).unwrap();
            let messages = split_messages(body.as_bytes(), false).unwrap();
            let mut framed = Vec::new();
            frame_array(messages.iter().map(|m| m.as_slice()), &mut framed);
            let back: Vec<i64> = serde_json::from_slice(&framed).unwrap();
            prop_assert_eq!(back, xs);
        }
    }
}
