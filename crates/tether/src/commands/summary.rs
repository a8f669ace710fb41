//! The line `watch` ends with: how the task ended, how long it ran, what it cost, its result.

use tether_types::event::kind;
use tether_types::{Event, Task};

use super::render::{compact, escape_controls};

/// `= completed in 1m 02s; cost $0.1250 (1200 in / 340 out tokens); result: {...}`, from the
/// final status snapshot and the terminal event (which carries the result).
pub fn summary(task: &Task, terminal: Option<&Event>) -> String {
    let mut parts = vec![format!("= {}", ended(task))];
    if let Some(took) = duration(task) {
        parts[0].push_str(&format!(" in {took}"));
    }
    if let Some(status) = &task.status {
        if status.cost_usd > 0.0 || status.input_tokens > 0 || status.output_tokens > 0 {
            parts.push(format!(
                "cost ${:.4} ({} in / {} out tokens)",
                status.cost_usd, status.input_tokens, status.output_tokens
            ));
        }
    }
    let result = terminal
        .filter(|e| e.kind == kind::TASK_COMPLETED)
        .and_then(|e| e.data.get("result"))
        .and_then(compact);
    if let Some(result) = result {
        parts.push(format!("result: {result}"));
    }
    escape_controls(&parts.join("; ")).into_owned()
}

fn ended(task: &Task) -> String {
    task.state.as_str().to_lowercase().replace('_', " ")
}

/// From the first start (or the submission) to the end, as `1h 02m 03s`, `2m 03s` or `4.5s`.
fn duration(task: &Task) -> Option<String> {
    let status = task.status.as_ref()?;
    let parse = |ts: &Option<String>| {
        chrono::DateTime::parse_from_rfc3339(ts.as_deref()?)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let start = parse(&status.started_at).unwrap_or(task.created_at);
    let end = parse(&status.finished_at)?;
    let ms = (end - start).num_milliseconds().max(0);
    let secs = ms / 1000;
    Some(match secs {
        0..=59 => format!("{:.1}s", ms as f64 / 1000.0),
        60..=3599 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m {:02}s", secs / 3600, secs / 60 % 60, secs % 60),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tether_types::{TaskId, TaskSpec, TaskState, TaskStatus};

    fn task(state: TaskState, status: TaskStatus) -> Task {
        let created = chrono::DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        Task {
            id: TaskId::from_random(1),
            owner: "ann".into(),
            state,
            attempt: 1,
            spec: TaskSpec::default(),
            stream_url: String::new(),
            created_at: created,
            updated_at: created,
            status: Some(status),
        }
    }

    #[test]
    fn the_summary_says_how_it_ended_how_long_it_took_what_it_cost_and_its_result() {
        let done = task(
            TaskState::Completed,
            TaskStatus {
                started_at: Some("2026-11-21T10:00:01Z".into()),
                finished_at: Some("2026-11-21T10:01:03.500Z".into()),
                cost_usd: 0.125,
                input_tokens: 1200,
                output_tokens: 340,
                ..TaskStatus::default()
            },
        );
        let terminal = Event {
            kind: kind::TASK_COMPLETED.into(),
            ts: String::new(),
            step: None,
            attempt: None,
            data: json!({"result": {"pr": "\u{1b}[2Jx"}}),
        };
        assert_eq!(
            summary(&done, Some(&terminal)),
            "= completed in 1m 02s; cost $0.1250 (1200 in / 340 out tokens); \
             result: {\"pr\":\"\\u001b[2Jx\"}"
        );
        let cancelled = task(
            TaskState::Cancelled,
            TaskStatus {
                finished_at: Some("2026-11-21T10:00:04.25Z".into()),
                ..TaskStatus::default()
            },
        );
        assert_eq!(summary(&cancelled, None), "= cancelled in 4.2s");
        let timed_out = task(TaskState::TimedOut, TaskStatus::default());
        assert_eq!(summary(&timed_out, None), "= timed out");
    }
}
