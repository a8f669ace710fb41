//! What an exec worker's command prints, line by line, and what each line becomes.

use serde_json::{json, Map, Value};
use tether_client::worker::check_step_name;
use tether_types::event::{kind, MAX_EVENT_BYTES};

/// The `type` of the line that sets the task's result. Not an event type: the value travels
/// in `task_completed`'s `result`, so it is not stored twice.
pub const RESULT: &str = "result";

/// Longest log line kept; the rest is cut (a command that prints a megabyte without a
/// newline should not make one giant event).
pub const MAX_LOG_CHARS: usize = 4096;

/// One line of the command's stdout, understood.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    /// `{"type":"step_started","step":S}`: begin step S through the API.
    StepStarted(String),
    /// `{"type":"step_completed","step":S,"data":...}`: complete S with `data` as checkpoint.
    StepCompleted { step: String, checkpoint: Value },
    /// `{"type":"result","data":...}`: the task's result if the command exits 0 (the last
    /// such line wins, so a command can refine its answer as it goes).
    Result(Value),
    /// Any other JSON object with a string `type`: an event `{type, step?, data?}`.
    Event(Value),
    /// Anything else: kept as a `log` event.
    Log(String),
}

/// Reads one stdout line. Never fails: what is not a usable event is a log line.
pub fn parse(line: &str) -> Line {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let Some(object) = json_object(line) else {
        return Line::Log(line.to_string());
    };
    let Some(kind) = object.get("type").and_then(Value::as_str) else {
        return Line::Log(line.to_string());
    };
    let step = object.get("step").and_then(Value::as_str);
    let data = object.get("data").cloned().unwrap_or(Value::Null);
    match (kind, step) {
        (kind::STEP_STARTED, Some(step)) if check_step_name(step).is_ok() => {
            return Line::StepStarted(step.to_string())
        }
        (kind::STEP_COMPLETED, Some(step)) if check_step_name(step).is_ok() => {
            return Line::StepCompleted {
                step: step.to_string(),
                checkpoint: data,
            }
        }
        // Step events without a usable step, and the server's own lifecycle types, which it
        // would refuse: the line still reaches the log.
        (kind::STEP_STARTED | kind::STEP_COMPLETED, _) => return Line::Log(line.to_string()),
        _ if kind::RESERVED.contains(&kind) => return Line::Log(line.to_string()),
        _ => {}
    }
    if line.len() > MAX_EVENT_BYTES {
        return Line::Log(line.to_string());
    }
    if kind == RESULT {
        return Line::Result(data);
    }
    let mut event = Map::new();
    event.insert("type".into(), Value::from(kind));
    if let Some(step) = step.filter(|s| check_step_name(s).is_ok()) {
        event.insert("step".into(), Value::from(step));
    }
    if !data.is_null() {
        event.insert("data".into(), data);
    }
    Line::Event(Value::Object(event))
}

fn json_object(line: &str) -> Option<Map<String, Value>> {
    if !line.trim_start().starts_with('{') {
        return None;
    }
    match serde_json::from_str(line) {
        Ok(Value::Object(object)) => Some(object),
        _ => None,
    }
}

/// A `log` event for a line of output; `stderr` says which stream it came from, `step` tags
/// it with the step the command is in (so a retried step's old output is superseded).
pub fn log_event(line: &str, stderr: bool, step: Option<&str>) -> Value {
    let mut data = json!({ "line": cut(line) });
    if stderr {
        data["stream"] = Value::from("stderr");
    }
    let mut event = json!({ "type": kind::LOG, "data": data });
    if let Some(step) = step {
        event["step"] = Value::from(step);
    }
    event
}

fn cut(line: &str) -> String {
    match line.char_indices().nth(MAX_LOG_CHARS) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_lines_with_a_type_become_events_with_only_step_and_data() {
        let line =
            r#"{"type":"agent_tool_call","step":"agent","data":{"tool_name":"bash"},"extra":1}"#;
        assert_eq!(
            parse(line),
            Line::Event(
                json!({"type":"agent_tool_call","step":"agent","data":{"tool_name":"bash"}})
            )
        );
        assert_eq!(
            parse(r#"{"type":"custom"}"#),
            Line::Event(json!({"type":"custom"}))
        );
    }

    #[test]
    fn step_lines_begin_and_complete_steps() {
        assert_eq!(
            parse(r#"{"type":"step_started","step":"clone"}"#),
            Line::StepStarted("clone".into())
        );
        assert_eq!(
            parse(r#"{"type":"step_completed","step":"clone","data":{"sha":"abc"}}"#),
            Line::StepCompleted {
                step: "clone".into(),
                checkpoint: json!({"sha":"abc"})
            }
        );
        assert_eq!(
            parse(r#"{"type":"step_completed","step":"clone"}"#),
            Line::StepCompleted {
                step: "clone".into(),
                checkpoint: Value::Null
            }
        );
    }

    #[test]
    fn a_result_line_carries_the_task_result() {
        assert_eq!(
            parse(r#"{"type":"result","data":{"pr":"https://x/1","files":2}}"#),
            Line::Result(json!({"pr":"https://x/1","files":2}))
        );
        assert_eq!(parse(r#"{"type":"result"}"#), Line::Result(Value::Null));
    }

    #[test]
    fn anything_else_is_a_log_line() {
        for line in [
            "cargo test",
            "",
            "{not json",
            "[1,2]",
            r#"{"no_type":1}"#,
            r#"{"type":3}"#,
            r#"{"type":"step_started"}"#,
            r#"{"type":"step_started","step":"../x"}"#,
            r#"{"type":"task_completed"}"#,
            r#"{"type":"stream_rewind","step":"a"}"#,
        ] {
            assert_eq!(parse(line), Line::Log(line.to_string()), "{line}");
        }
        assert_eq!(parse("plain\r"), Line::Log("plain".into()));
    }

    #[test]
    fn log_events_say_their_stream_and_step_and_cut_long_lines() {
        assert_eq!(
            log_event("hi", false, None),
            json!({"type":"log","data":{"line":"hi"}})
        );
        assert_eq!(
            log_event("oops", true, Some("test")),
            json!({"type":"log","step":"test","data":{"line":"oops","stream":"stderr"}})
        );
        let long = "é".repeat(MAX_LOG_CHARS + 10);
        let event = log_event(&long, false, None);
        let kept = event["data"]["line"].as_str().unwrap();
        assert_eq!(kept.chars().count(), MAX_LOG_CHARS + 1);
    }

    proptest! {
        #[test]
        fn every_line_becomes_something_sendable(line in ".{0,200}") {
            match parse(&line) {
                Line::Event(event) => {
                    let kind = event["type"].as_str().unwrap();
                    prop_assert!(!kind::RESERVED.contains(&kind));
                }
                Line::StepStarted(step) | Line::StepCompleted { step, .. } => {
                    prop_assert!(check_step_name(&step).is_ok());
                }
                Line::Result(_) | Line::Log(_) => {}
            }
        }
    }
}
