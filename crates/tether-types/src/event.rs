//! Task events: one JSON message each in the task's stream.
//!
//! PERSISTED: the envelope below is the stored form of every event and what every reader
//! (Tether's API, any Durable Streams client) sees; fields may be added, never renamed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Offset;

/// Largest accepted single event, serialized, in bytes.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// The one timestamp format of Tether's wire: RFC 3339 in UTC with milliseconds
/// (`2026-11-21T10:00:00.123Z`), as every event's `ts` is stored and every time the API
/// shows beside events (such as `Stream-Expires-At`) is written.
pub fn format_timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Event types the server itself writes; producers may not send them, because each stands
/// for a state change that happens once, in the transaction that makes it (G5).
pub mod kind {
    pub const TASK_CREATED: &str = "task_created";
    pub const TASK_STARTED: &str = "task_started";
    pub const TASK_FINALIZING: &str = "task_finalizing";
    pub const TASK_REQUEUED: &str = "task_requeued";
    pub const TASK_COMPLETED: &str = "task_completed";
    pub const TASK_FAILED: &str = "task_failed";
    pub const TASK_TIMED_OUT: &str = "task_timed_out";
    pub const TASK_CANCELLED: &str = "task_cancelled";
    pub const STREAM_REWIND: &str = "stream_rewind";

    pub const STEP_STARTED: &str = "step_started";
    pub const STEP_COMPLETED: &str = "step_completed";
    pub const AGENT_TURN: &str = "agent_turn";
    pub const AGENT_TOOL_CALL: &str = "agent_tool_call";
    pub const AGENT_TOOL_RESULT: &str = "agent_tool_result";
    pub const AGENT_MILESTONE: &str = "agent_milestone";
    pub const AGENT_COST_UPDATE: &str = "agent_cost_update";
    pub const AGENT_ERROR: &str = "agent_error";
    pub const LOG: &str = "log";
    pub const NUDGE_ACKNOWLEDGED: &str = "nudge_acknowledged";
    /// A nudge was accepted: `{nudge_id, message, author}`, the audit record of who said what.
    pub const NUDGE_SENT: &str = "nudge_sent";

    /// Written only by the server, as part of a state change (a nudge's record included: a
    /// producer must not put words in a user's mouth).
    pub const RESERVED: [&str; 10] = [
        TASK_CREATED,
        TASK_STARTED,
        TASK_FINALIZING,
        TASK_REQUEUED,
        TASK_COMPLETED,
        TASK_FAILED,
        TASK_TIMED_OUT,
        TASK_CANCELLED,
        STREAM_REWIND,
        NUDGE_SENT,
    ];

    pub const TERMINAL: [&str; 4] = [TASK_COMPLETED, TASK_FAILED, TASK_TIMED_OUT, TASK_CANCELLED];

    pub fn is_terminal(kind: &str) -> bool {
        TERMINAL.contains(&kind)
    }
}

/// One event as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339 with milliseconds, UTC, set by the server when the producer left it out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Free-form, as the producer sent it.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

impl Event {
    pub fn new(kind: &str, ts: String, data: Value) -> Event {
        Event {
            kind: kind.to_string(),
            ts,
            step: None,
            attempt: None,
            data,
        }
    }

    /// A string field of `data`, if present.
    pub fn data_str(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }

    /// The `new_epoch` of a `stream_rewind`, if this is a well-formed one.
    pub fn rewind_epoch(&self) -> Option<u32> {
        if self.kind != kind::STREAM_REWIND {
            return None;
        }
        self.data
            .get("new_epoch")
            .and_then(Value::as_u64)
            .and_then(|e| u32::try_from(e).ok())
    }
}

/// An event with its offset: the stream position right after it, so `after=<offset>` (or a
/// Durable Streams read from `offset`) continues with the next event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventAt {
    pub offset: Offset,
    #[serde(flatten)]
    pub event: Event,
}

/// A page of `GET /v1/tasks/{id}/events`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventPage {
    pub data: Vec<EventAt>,
    /// Where the next page starts (`after=`); for `desc=true`, the `before=` of the next page.
    pub next_after: Offset,
    pub has_more: bool,
    /// The task has ended and this page reaches the end of its stream.
    #[serde(default)]
    pub closed: bool,
}

/// `POST /v1/tasks/{id}/events` body: events from a producer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    /// Each an object with a string `type` and optional `ts`, `step`, `attempt` and `data`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>, min_items = 1))]
    pub events: Vec<Value>,
}

/// Answer to an event batch.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Appended {
    /// Offset after the last event of the batch.
    pub next_after: Offset,
    /// False when an idempotent producer repeated a batch that was already stored.
    pub appended: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            "[a-z_]{1,20}",
            "[0-9TZ:.-]{0,24}",
            proptest::option::of("[a-z]{1,8}"),
            proptest::option::of(0u32..10),
            proptest::option::of(".{0,30}"),
        )
            .prop_map(|(kind, ts, step, attempt, text)| Event {
                kind,
                ts,
                step,
                attempt,
                data: text.map_or(Value::Null, |t| serde_json::json!({ "text": t })),
            })
    }

    proptest! {
        #[test]
        fn events_round_trip_through_json(event in arb_event(), pos in 0u64..1 << 40) {
            let at = EventAt { offset: Offset(pos), event };
            let json = serde_json::to_string(&at).unwrap();
            let back: EventAt = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, at);
        }
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let at = chrono::DateTime::from_timestamp_millis(1_795_255_200_123).unwrap();
        assert_eq!(format_timestamp(at), "2026-11-21T10:00:00.123Z");
    }

    #[test]
    fn rewind_epoch_needs_the_right_type_and_a_number() {
        let mut e = Event::new(
            kind::STREAM_REWIND,
            String::new(),
            serde_json::json!({"new_epoch": 2}),
        );
        assert_eq!(e.rewind_epoch(), Some(2));
        e.data = serde_json::json!({"new_epoch": "2"});
        assert_eq!(e.rewind_epoch(), None);
        e.kind = "log".into();
        e.data = serde_json::json!({"new_epoch": 2});
        assert_eq!(e.rewind_epoch(), None);
    }
}
