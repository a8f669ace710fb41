//! A batch of events as a producer sends it (`POST /v1/tasks/{id}/events`, or a worker's
//! event batch): each event checked and stamped before any is stored.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tether_types::event::{kind, MAX_EVENT_BYTES};
use tether_types::{ErrorCode, Event};

use crate::error::ApiError;

/// Longest accepted event type.
const MAX_TYPE_CHARS: usize = 128;

/// An event as a producer sends it: the envelope, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    ts: Option<String>,
    #[serde(default)]
    step: Option<String>,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(default)]
    data: Value,
}

/// A batch's events checked and stamped, in order: each the envelope only, of a known size,
/// not one of the server's own lifecycle types, with `ts` filled in. One bad event refuses
/// the whole batch.
pub fn accept_batch(events: &[Box<RawValue>], now: &str) -> Result<Vec<Event>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::bad_request("events must not be empty"));
    }
    events
        .iter()
        .enumerate()
        .map(|(index, raw)| accept_event(index, raw, now))
        .collect()
}

fn accept_event(index: usize, raw: &RawValue, now: &str) -> Result<Event, ApiError> {
    let size = raw.get().len();
    if size > MAX_EVENT_BYTES {
        return Err(ApiError::new(
            ErrorCode::EventTooLarge,
            format!("event {index} is {size} bytes; at most {MAX_EVENT_BYTES} are allowed"),
        ));
    }
    let bad = |msg: String| ApiError::bad_request(format!("event {index}: {msg}"));
    let incoming: Incoming = serde_json::from_str(raw.get()).map_err(|e| bad(e.to_string()))?;
    if incoming.kind.is_empty() || incoming.kind.chars().count() > MAX_TYPE_CHARS {
        return Err(bad(format!(
            "type must be 1 to {MAX_TYPE_CHARS} characters"
        )));
    }
    tether_types::text::check_text("type", &incoming.kind).map_err(bad)?;
    if let Some(step) = &incoming.step {
        tether_types::text::check_text("step", step).map_err(bad)?;
    }
    if kind::RESERVED.contains(&incoming.kind.as_str()) {
        return Err(bad(format!(
            "{} is written by the server itself, as part of a state change",
            incoming.kind
        )));
    }
    if let Some(ts) = &incoming.ts {
        chrono::DateTime::parse_from_rfc3339(ts)
            .map_err(|e| bad(format!("ts {ts:?} is not an RFC 3339 time: {e}")))?;
    }
    Ok(Event {
        kind: incoming.kind,
        ts: incoming.ts.unwrap_or_else(|| now.to_string()),
        step: incoming.step,
        attempt: incoming.attempt,
        data: incoming.data,
    })
}
