//! Request bodies in their stored form, the same for every backend.

use bytes::Bytes;

use crate::model::{Append, AppendError};

/// An append body in its stored form: the bytes, or JSON messages joined by commas.
pub(crate) struct StoredBody {
    pub data: Bytes,
    /// Positions it covers: bytes, or messages.
    pub units: u64,
}

/// An append after the parsing that can happen outside the writer (or outside the transaction).
pub(crate) struct PreparedAppend {
    pub request: Append,
    /// The stored form of a non-empty body, or why the body is invalid.
    pub body: Result<Option<StoredBody>, AppendError>,
}

/// Turns a request body into its stored form. JSON bodies are validated and flattened one
/// level; `[]` is an error on append and no content on create. `None` for no content.
pub(crate) fn stored_body(
    json: bool,
    body: &Bytes,
    allow_empty_array: bool,
) -> Result<Option<StoredBody>, tether_types::json::JsonBodyError> {
    if body.is_empty() {
        return Ok(None);
    }
    if !json {
        // A copy, not a slice: request bodies are often views into a connection's much
        // larger read buffer, which the recent-chunks cache would otherwise keep alive.
        return Ok(Some(StoredBody {
            data: Bytes::copy_from_slice(body),
            units: body.len() as u64,
        }));
    }
    let messages = tether_types::json::split_messages(body, allow_empty_array)?;
    if messages.is_empty() {
        return Ok(None);
    }
    Ok(Some(StoredBody {
        units: messages.len() as u64,
        data: Bytes::from(tether_types::json::join_messages(&messages)),
    }))
}
