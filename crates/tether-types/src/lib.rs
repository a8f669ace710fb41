//! Wire types shared by the Tether server, its stores and its clients.
//!
//! Everything here is pure: parsing and formatting of the values that cross the wire
//! (offsets, Durable Streams header values, JSON message framing, tasks and their events).
//! Nothing here may panic on input, whatever the input is; the property tests in each module
//! hold that line.

pub mod api;
pub mod code;
pub mod event;
pub mod headers;
pub mod json;
pub mod offset;
pub mod task;
pub mod text;
pub mod worker;

pub use api::{ErrorBody, ErrorDetail, Role};
pub use code::ErrorCode;
pub use event::{Event, EventAt, EventPage};
pub use offset::{Offset, OffsetError, ReadFrom};
pub use task::{Task, TaskId, TaskSpec, TaskState, TaskStatus};

/// Percent-encodes everything but RFC 3986's unreserved characters, for a path segment or a
/// query value: an id typed by a person, or an opaque offset, cannot change the URL's shape.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
