//! One readable line per event, for people watching a terminal.
//!
//! Producers are free in what they put in `data`, so each renderer looks for the few field
//! names a producer is likely to use and falls back to a compact dump: a line may be terse,
//! but nothing an event carries is hidden behind an error.

use std::borrow::Cow;

use serde_json::Value;
use tether_types::event::kind;
use tether_types::{Event, EventAt};

/// Longest preview of free text on a line, in characters.
const PREVIEW_CHARS: usize = 120;

/// Text from outside (a task's description, an agent's output, a user's name) made safe for a
/// terminal: control characters (ESC, NUL, CR, DEL, the C1 range with its one-byte CSI...) are
/// shown escaped as `\u{1b}`, `\n`, `\t`, so nobody who can submit a task or print an event
/// can move an admin's cursor, recolour the screen or hide text. Every human printer passes
/// what it shows through this; JSON output stays exact.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One event as one line, control characters escaped.
pub fn line(at: &EventAt) -> String {
    escape_controls(&raw_line(at)).into_owned()
}

fn raw_line(at: &EventAt) -> String {
    let event = &at.event;
    let mut out = String::new();
    if let Some(time) = time_of_day(&event.ts) {
        out.push_str(time);
        out.push(' ');
    }
    if let Some(step) = &event.step {
        if event.kind != kind::STREAM_REWIND {
            out.push('[');
            out.push_str(step);
            if let Some(attempt) = event.attempt {
                out.push_str(&format!("#{attempt}"));
            }
            out.push_str("] ");
        }
    }
    out.push_str(&body(event));
    out
}

fn body(event: &Event) -> String {
    let data = &event.data;
    match event.kind.as_str() {
        kind::TASK_CREATED => join("● task created", text(data, &["description"])),
        kind::TASK_STARTED => format!(
            "▶ task started{}",
            attempt_suffix(
                event
                    .attempt
                    .or(number(data, &["attempt"]).map(|n| n as u32))
            )
        ),
        kind::TASK_REQUEUED => join(
            &format!(
                "↻ task requeued{}",
                attempt_suffix(number(data, &["attempt"]).map(|n| n as u32))
            ),
            text(data, &["reason", "message"]),
        ),
        kind::TASK_FINALIZING => "… task finalizing".to_string(),
        kind::TASK_COMPLETED => join(
            "✔ task completed",
            text(data, &["message", "summary"]).or_else(|| {
                let result = data.get("result").filter(|r| !r.is_null())?;
                Some(format!("result {}", result_text(result)))
            }),
        ),
        kind::TASK_FAILED => join("✘ task failed", failure(data)),
        kind::TASK_TIMED_OUT => join("✘ task timed out", failure(data)),
        kind::TASK_CANCELLED => join("✘ task cancelled", cancelled(data)),
        kind::STREAM_REWIND => format!(
            "↺ step {} retried (attempt {}); earlier output of that step is superseded",
            event.step.as_deref().unwrap_or("?"),
            event
                .rewind_epoch()
                .map_or_else(|| "?".to_string(), |e| e.to_string()),
        ),
        kind::STEP_STARTED => format!("→ step {} started", step_name(event)),
        kind::STEP_COMPLETED => format!("✓ step {} completed", step_name(event)),
        kind::AGENT_TURN => join(
            &match number(data, &["turn"]) {
                Some(turn) => format!("turn {turn}"),
                None => "turn".to_string(),
            },
            text(data, &["text", "message", "content", "preview", "summary"]),
        ),
        kind::AGENT_TOOL_CALL => format!(
            "tool {}{}",
            text(data, &["tool_name", "tool", "name"]).unwrap_or_else(|| "?".into()),
            text(
                data,
                &["tool_input_preview", "input_preview", "input", "command"]
            )
            .map(|input| format!(": {input}"))
            .unwrap_or_default(),
        ),
        kind::AGENT_TOOL_RESULT => {
            let failed = ["is_error", "error"]
                .iter()
                .any(|key| data.get(key).and_then(Value::as_bool) == Some(true));
            join(
                &format!(
                    "result {}{}",
                    text(data, &["tool_name", "tool", "name"]).unwrap_or_else(|| "?".into()),
                    if failed { " (error)" } else { "" }
                ),
                text(
                    data,
                    &[
                        "tool_output_preview",
                        "output_preview",
                        "result_preview",
                        "output",
                        "preview",
                    ],
                ),
            )
        }
        kind::AGENT_MILESTONE => join(
            "★ milestone",
            text(data, &["milestone", "name", "message", "title"]),
        ),
        kind::AGENT_COST_UPDATE => cost(data),
        kind::AGENT_ERROR => join("! agent error", failure(data)),
        kind::LOG => {
            let level = text(data, &["level"])
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            join(
                &format!("log{level}"),
                text(data, &["message", "line", "text"]),
            )
        }
        kind::NUDGE_SENT => join(
            &format!(
                "✉ nudge from {}",
                text(data, &["author"]).unwrap_or_else(|| "?".into())
            ),
            text(data, &["message"]),
        ),
        kind::NUDGE_ACKNOWLEDGED => join(
            "✉ nudge acknowledged",
            text(data, &["message", "text", "nudge"]),
        ),
        other => join(other, compact(data)),
    }
}

/// `head: tail`, or `head` alone.
fn join(head: &str, tail: Option<String>) -> String {
    match tail {
        Some(tail) if !tail.is_empty() => format!("{head}: {tail}"),
        _ => head.to_string(),
    }
}

fn attempt_suffix(attempt: Option<u32>) -> String {
    attempt
        .map(|a| format!(" (attempt {a})"))
        .unwrap_or_default()
}

fn step_name(event: &Event) -> String {
    event
        .step
        .clone()
        .or_else(|| text(&event.data, &["step", "name"]))
        .unwrap_or_else(|| "?".into())
}

/// `CODE: message`, from whichever of the usual names are present.
/// The server writes `{"by": user, "reason": text or null}`.
fn cancelled(data: &Value) -> Option<String> {
    let by = text(data, &["by"]).map(|by| format!("by {by}"));
    match (by, text(data, &["reason"])) {
        (Some(by), Some(reason)) => Some(format!("{by}: {reason}")),
        (by, reason) => by.or(reason),
    }
}

fn failure(data: &Value) -> Option<String> {
    let code = text(data, &["code", "error_code"]);
    let message = text(data, &["message", "error", "reason"]);
    match (code, message) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (code, message) => code.or(message),
    }
}

fn cost(data: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(usd) = data
        .get("total_cost_usd")
        .or_else(|| data.get("cost_usd"))
        .and_then(Value::as_f64)
    {
        parts.push(format!("${usd:.4}"));
    }
    let tokens_in = number(data, &["input_tokens"]);
    let tokens_out = number(data, &["output_tokens"]);
    if tokens_in.is_some() || tokens_out.is_some() {
        parts.push(format!(
            "{} in / {} out tokens",
            tokens_in.unwrap_or(0),
            tokens_out.unwrap_or(0)
        ));
    }
    if parts.is_empty() {
        return join("$ cost", compact(data));
    }
    format!("$ cost {}", parts.join(", "))
}

/// The first of `keys` that holds a string (or a number, shown as such), as a one-line
/// preview.
fn text(data: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| match data.get(key)? {
        Value::String(s) => Some(preview(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn number(data: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|key| data.get(key)?.as_u64())
}

/// A task's result on one line: a string as it is, anything else as compact JSON.
pub fn result_text(result: &Value) -> String {
    match result {
        Value::String(s) => preview(s),
        other => preview(&other.to_string()),
    }
}

/// Data of an event type this CLI does not know, as compact JSON.
pub fn compact(data: &Value) -> Option<String> {
    match data {
        Value::Null => None,
        other => Some(preview(&other.to_string())),
    }
}

/// Free text squeezed onto one line and cut to [`PREVIEW_CHARS`].
pub fn preview(s: &str) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = one_line.chars();
    let cut: String = chars.by_ref().take(PREVIEW_CHARS).collect();
    if chars.next().is_some() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// How the CLI shows a point in time wherever it shows one in full (status, summaries,
/// lists of users and tokens): UTC, to the second, the same as the `HH:MM:SS` that starts
/// each event line (event times are UTC).
pub fn timestamp(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// An RFC 3339 time from the server in the form of [`timestamp`]; kept as sent if it does
/// not parse.
pub fn timestamp_text(ts: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(ts).map_or_else(
        |_| ts.to_string(),
        |t| timestamp(&t.with_timezone(&chrono::Utc)),
    )
}

/// `10:00:00.123` out of `2026-11-21T10:00:00.123Z`.
fn time_of_day(ts: &str) -> Option<&str> {
    let rest = ts.split_once('T')?.1;
    let end = rest.find(['Z', '+', '-']).unwrap_or(rest.len());
    let time = &rest[..end];
    // Whole seconds are enough on a terminal line.
    Some(time.get(..8).unwrap_or(time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tether_types::Offset;

    fn at(kind: &str, step: Option<&str>, attempt: Option<u32>, data: Value) -> EventAt {
        EventAt {
            offset: Offset(1),
            event: Event {
                kind: kind.into(),
                ts: "2026-11-21T10:00:00.123Z".into(),
                step: step.map(str::to_string),
                attempt,
                data,
            },
        }
    }

    fn check(kind: &str, step: Option<&str>, attempt: Option<u32>, data: Value, want: &str) {
        assert_eq!(line(&at(kind, step, attempt, data)), want, "{kind}");
    }

    #[test]
    fn lifecycle_events_show_what_happened_to_the_task() {
        check(
            "task_created",
            None,
            None,
            json!({"description": "fix it"}),
            "10:00:00 ● task created: fix it",
        );
        check(
            "task_started",
            None,
            Some(2),
            json!({}),
            "10:00:00 ▶ task started (attempt 2)",
        );
        check(
            "task_requeued",
            None,
            None,
            json!({"attempt": 3, "reason": "lease expired"}),
            "10:00:00 ↻ task requeued (attempt 3): lease expired",
        );
        check(
            "task_completed",
            None,
            None,
            json!({}),
            "10:00:00 ✔ task completed",
        );
        check(
            "task_failed",
            None,
            None,
            json!({"code": "AGENT_CRASHED", "message": "exit 1"}),
            "10:00:00 ✘ task failed: AGENT_CRASHED: exit 1",
        );
        check(
            "task_timed_out",
            None,
            None,
            json!({"code": "LEASE_EXPIRED"}),
            "10:00:00 ✘ task timed out: LEASE_EXPIRED",
        );
        check(
            "task_cancelled",
            None,
            None,
            json!({"by": "alice", "reason": null}),
            "10:00:00 ✘ task cancelled: by alice",
        );
        check(
            "task_cancelled",
            None,
            None,
            json!({"by": "alice", "reason": "wrong repo"}),
            "10:00:00 ✘ task cancelled: by alice: wrong repo",
        );
    }

    #[test]
    fn steps_and_rewinds_name_their_step_and_attempt() {
        check(
            "step_started",
            Some("clone"),
            Some(1),
            json!({}),
            "10:00:00 [clone#1] → step clone started",
        );
        check(
            "step_completed",
            Some("clone"),
            Some(1),
            json!({}),
            "10:00:00 [clone#1] ✓ step clone completed",
        );
        check(
            "stream_rewind",
            Some("clone"),
            None,
            json!({"new_epoch": 2, "superseded_after": "0000000000000000_0000000000000004"}),
            "10:00:00 ↺ step clone retried (attempt 2); earlier output of that step is superseded",
        );
    }

    #[test]
    fn agent_progress_shows_tools_turns_milestones_and_cost() {
        check(
            "agent_turn",
            Some("agent"),
            Some(1),
            json!({"turn": 7, "text": "Looking at\nthe test"}),
            "10:00:00 [agent#1] turn 7: Looking at the test",
        );
        check(
            "agent_tool_call",
            Some("agent"),
            Some(1),
            json!({"tool_name": "bash", "tool_input_preview": "cargo test", "turn": 7}),
            "10:00:00 [agent#1] tool bash: cargo test",
        );
        check(
            "agent_tool_result",
            None,
            None,
            json!({"tool_name": "bash", "output_preview": "ok", "is_error": true}),
            "10:00:00 result bash (error): ok",
        );
        check(
            "agent_milestone",
            None,
            None,
            json!({"milestone": "tests pass"}),
            "10:00:00 ★ milestone: tests pass",
        );
        check(
            "agent_cost_update",
            None,
            None,
            json!({"cost_usd": 0.125, "input_tokens": 1200, "output_tokens": 340}),
            "10:00:00 $ cost $0.1250, 1200 in / 340 out tokens",
        );
        check(
            "agent_error",
            None,
            None,
            json!({"code": "RATE_LIMITED", "message": "slow down"}),
            "10:00:00 ! agent error: RATE_LIMITED: slow down",
        );
        check(
            "log",
            None,
            None,
            json!({"level": "warn", "message": "disk low"}),
            "10:00:00 log warn: disk low",
        );
        check(
            "nudge_acknowledged",
            None,
            None,
            json!({"message": "try again"}),
            "10:00:00 ✉ nudge acknowledged: try again",
        );
        check(
            "nudge_sent",
            None,
            None,
            json!({"nudge_id": "ndg_1", "message": "try again", "author": "ann"}),
            "10:00:00 ✉ nudge from ann: try again",
        );
    }

    #[test]
    fn unknown_types_show_their_type_and_compact_data() {
        check(
            "deploy_preview",
            None,
            None,
            json!({"url": "http://x"}),
            "10:00:00 deploy_preview: {\"url\":\"http://x\"}",
        );
        check("bare", None, None, Value::Null, "10:00:00 bare");
    }

    #[test]
    fn long_text_is_cut_to_one_short_line() {
        let long = "word ".repeat(100);
        let shown = line(&at("log", None, None, json!({ "message": long })));
        assert!(!shown.contains('\n'));
        assert!(shown.ends_with('…'));
        assert!(shown.chars().count() < PREVIEW_CHARS + 30);
    }

    #[test]
    fn control_characters_from_events_are_shown_escaped_never_sent_to_the_terminal() {
        let shown = line(&at(
            "agent_turn",
            Some("st\u{1b}]0;x\u{7}ep"),
            Some(1),
            json!({"text": "\u{1b}[31mred\u{0}\u{9b}2J"}),
        ));
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(
            shown,
            "10:00:00 [st\\u{1b}]0;x\\u{7}ep#1] turn: \\u{1b}[31mred\\u{0}\\u{9b}2J"
        );
        let unknown = line(&at("x\u{1b}[2J", None, None, Value::Null));
        assert_eq!(unknown, "10:00:00 x\\u{1b}[2J");
        assert_eq!(escape_controls("a\tb\r\n"), "a\\tb\\r\\n");
        assert!(matches!(escape_controls("plain ünïcode"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_missing_or_odd_timestamp_is_left_out_or_kept_short() {
        let mut event = at("log", None, None, json!({"message": "m"}));
        event.event.ts = String::new();
        assert_eq!(line(&event), "log: m");
        event.event.ts = "2026-11-21T10:00:00+02:00".into();
        assert_eq!(line(&event), "10:00:00 log: m");
    }
}
