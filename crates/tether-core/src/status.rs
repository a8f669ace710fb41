//! The status snapshot: a deterministic fold of a task's non-superseded events.
//!
//! Only the events decide the snapshot (never the clock or the task row), so it can be
//! rebuilt from the log at any time and the rebuild equals what was folded incrementally.

use serde_json::Value;
use tether_types::event::kind;
use tether_types::task::Failure;
use tether_types::{Event, Offset, TaskState, TaskStatus};

use crate::rewind::Rewinds;

/// Longest `current_activity` and `last_milestone`, in characters.
const PREVIEW_CHARS: usize = 200;

/// Folds events one at a time. It cannot take back an event a later rewind supersedes:
/// [`Projector::apply`] says when that happened, and the caller re-folds with [`project`].
#[derive(Clone, Debug, Default)]
pub struct Projector {
    status: TaskStatus,
}

/// What [`Projector::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Folded,
    /// The event was a rewind: events already folded may now be superseded.
    NeedsRebuild,
}

impl Projector {
    pub fn status(&self) -> &TaskStatus {
        &self.status
    }

    pub fn apply(&mut self, offset: Offset, event: &Event) -> Applied {
        if event.kind == kind::STREAM_REWIND {
            self.status.offset = offset;
            return Applied::NeedsRebuild;
        }
        fold(&mut self.status, event);
        self.status.events += 1;
        self.status.offset = offset;
        Applied::Folded
    }

    /// Starts from a snapshot computed elsewhere (a rebuild).
    pub fn replace(&mut self, status: TaskStatus) {
        self.status = status;
    }

    /// Moves the covered offset past events that were read but not folded (superseded).
    pub fn skip_to(&mut self, offset: Offset) {
        self.status.offset = offset;
    }
}

/// The snapshot of a whole log: superseded events are left out.
pub fn project(events: impl IntoIterator<Item = (Offset, Event)>) -> TaskStatus {
    let events: Vec<(Offset, Event)> = events.into_iter().collect();
    let rewinds = Rewinds::from_events(events.iter().map(|(o, e)| (*o, e)));
    let mut projector = Projector::default();
    for (offset, event) in &events {
        if rewinds.supersedes(*offset, event) {
            projector.skip_to(*offset);
        } else {
            projector.apply(*offset, event);
        }
    }
    projector.status
}

fn fold(s: &mut TaskStatus, e: &Event) {
    if !e.ts.is_empty() {
        s.updated_at = Some(e.ts.clone());
    }
    let ts = || (!e.ts.is_empty()).then(|| e.ts.clone());
    let attempt = e.attempt.or_else(|| {
        e.data
            .get("attempt")
            .and_then(Value::as_u64)
            .map(|a| a as u32)
    });
    match e.kind.as_str() {
        kind::TASK_CREATED => {
            s.state = Some(TaskState::Submitted);
            s.attempt = attempt.unwrap_or(1);
            s.created_at = ts();
        }
        kind::TASK_STARTED => {
            s.state = Some(TaskState::Running);
            s.attempt = attempt.unwrap_or(s.attempt);
            s.started_at = ts();
        }
        kind::TASK_FINALIZING => s.state = Some(TaskState::Finalizing),
        kind::TASK_REQUEUED => {
            s.state = Some(TaskState::Submitted);
            s.attempt = attempt.unwrap_or(s.attempt + 1);
            s.current_step = None;
        }
        kind::TASK_COMPLETED | kind::TASK_FAILED | kind::TASK_TIMED_OUT | kind::TASK_CANCELLED => {
            let (state, default_code) = match e.kind.as_str() {
                kind::TASK_COMPLETED => (TaskState::Completed, None),
                kind::TASK_FAILED => (TaskState::Failed, Some("FAILED")),
                kind::TASK_TIMED_OUT => (TaskState::TimedOut, Some("TIMED_OUT")),
                _ => (TaskState::Cancelled, Some("CANCELLED")),
            };
            s.state = Some(state);
            s.finished_at = ts();
            s.current_step = None;
            s.result = e.data.get("result").filter(|r| !r.is_null()).cloned();
            s.failure = default_code.map(|code| Failure {
                code: e.data_str("code").unwrap_or(code).to_string(),
                message: e
                    .data_str("message")
                    .or_else(|| e.data_str("reason"))
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        kind::STEP_STARTED => s.current_step = e.step.clone(),
        kind::STEP_COMPLETED if s.current_step == e.step => s.current_step = None,
        kind::AGENT_TURN => {
            s.turns = match e.data.get("turn").and_then(Value::as_u64) {
                Some(turn) => s.turns.max(turn),
                None => s.turns + 1,
            };
        }
        kind::AGENT_TOOL_CALL => {
            let tool = e.data_str("tool_name").unwrap_or("tool");
            s.current_activity = Some(match e.data_str("tool_input_preview") {
                Some(input) if !input.is_empty() => preview(&format!("{tool}: {input}")),
                _ => preview(tool),
            });
        }
        kind::AGENT_MILESTONE => {
            let text = ["milestone", "name", "message", "text"]
                .iter()
                .find_map(|k| e.data_str(k));
            if let Some(text) = text {
                s.last_milestone = Some(preview(text));
            }
        }
        kind::AGENT_COST_UPDATE => {
            let number = |k: &str| e.data.get(k).and_then(Value::as_f64);
            let count = |k: &str| e.data.get(k).and_then(Value::as_u64);
            // Producers report running totals; a bare increment is added.
            match (number("total_cost_usd"), number("cost_usd")) {
                (Some(total), _) => s.cost_usd = total,
                (None, Some(delta)) => s.cost_usd += delta,
                (None, None) => {}
            }
            s.input_tokens = count("input_tokens").unwrap_or(s.input_tokens);
            s.output_tokens = count("output_tokens").unwrap_or(s.output_tokens);
        }
        _ => {}
    }
}

fn preview(text: &str) -> String {
    let mut out: String = text.chars().take(PREVIEW_CHARS).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ev(kind: &str, step: Option<&str>, attempt: Option<u32>, data: Value) -> Event {
        let mut e = Event::new(kind, format!("ts-{kind}"), data);
        e.step = step.map(str::to_string);
        e.attempt = attempt;
        e
    }

    fn numbered(log: &[Event]) -> Vec<(Offset, Event)> {
        log.iter()
            .enumerate()
            .map(|(i, e)| (Offset(i as u64 + 1), e.clone()))
            .collect()
    }

    #[test]
    fn a_retried_step_counts_only_its_new_attempt() {
        let log = [
            ev(kind::TASK_CREATED, None, Some(1), Value::Null),
            ev(kind::TASK_STARTED, None, Some(1), Value::Null),
            ev(kind::STEP_STARTED, Some("agent"), Some(1), Value::Null),
            ev(kind::AGENT_TURN, Some("agent"), Some(1), json!({"turn": 5})),
            ev(
                kind::AGENT_TOOL_CALL,
                Some("agent"),
                Some(1),
                json!({"tool_name": "bash", "tool_input_preview": "rm -rf target"}),
            ),
            ev(kind::TASK_REQUEUED, None, Some(2), Value::Null),
            ev(kind::TASK_STARTED, None, Some(2), Value::Null),
            ev(
                kind::STREAM_REWIND,
                Some("agent"),
                None,
                json!({"new_epoch": 2}),
            ),
            ev(kind::STEP_STARTED, Some("agent"), Some(2), Value::Null),
            ev(kind::AGENT_TURN, Some("agent"), Some(2), json!({"turn": 1})),
            ev(
                kind::AGENT_COST_UPDATE,
                Some("agent"),
                Some(2),
                json!({"total_cost_usd": 0.25, "input_tokens": 100, "output_tokens": 7}),
            ),
        ];
        let s = project(numbered(&log));
        assert_eq!(s.state, Some(TaskState::Running));
        assert_eq!(s.attempt, 2);
        assert_eq!(s.turns, 1);
        assert_eq!(s.current_activity, None);
        assert_eq!(s.current_step.as_deref(), Some("agent"));
        assert_eq!(
            (s.cost_usd, s.input_tokens, s.output_tokens),
            (0.25, 100, 7)
        );
        assert_eq!(s.events, 7);
        assert_eq!(s.offset, Offset(11));
    }

    #[test]
    fn a_failure_keeps_its_code_and_message() {
        let log = [
            ev(kind::TASK_CREATED, None, Some(1), Value::Null),
            ev(
                kind::TASK_FAILED,
                None,
                Some(1),
                json!({"code": "AGENT_ERROR", "message": "exit 3"}),
            ),
        ];
        let s = project(numbered(&log));
        assert_eq!(s.state, Some(TaskState::Failed));
        assert_eq!(
            s.failure,
            Some(Failure {
                code: "AGENT_ERROR".into(),
                message: "exit 3".into()
            })
        );
        assert_eq!(s.finished_at.as_deref(), Some("ts-task_failed"));
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        let step = proptest::option::of(prop_oneof![Just("clone"), Just("agent")]);
        let attempt = proptest::option::of(1u32..4);
        let kinds = prop_oneof![
            Just(kind::AGENT_TURN),
            Just(kind::AGENT_TOOL_CALL),
            Just(kind::AGENT_MILESTONE),
            Just(kind::AGENT_COST_UPDATE),
            Just(kind::STEP_STARTED),
            Just(kind::STEP_COMPLETED),
            Just(kind::TASK_STARTED),
            Just("something_new"),
        ];
        prop_oneof![
            4 => (kinds, step.clone(), attempt, 0u64..20).prop_map(|(k, s, a, n)| ev(k, s, a, json!({
                "turn": n, "tool_name": "bash", "milestone": format!("m{n}"), "cost_usd": 0.5,
            }))),
            1 => (step, 1u32..5).prop_map(|(s, e)| ev(kind::STREAM_REWIND, s, None, json!({"new_epoch": e}))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Folding as events arrive, re-folding from the log at each rewind, ends with the
        /// same snapshot as folding the whole log at once: a rebuild changes nothing.
        #[test]
        fn incremental_folding_equals_a_rebuild(log in proptest::collection::vec(arb_event(), 0..40)) {
            let log = numbered(&log);
            let mut projector = Projector::default();
            for (i, (offset, event)) in log.iter().enumerate() {
                if projector.apply(*offset, event) == Applied::NeedsRebuild {
                    projector = Projector { status: project(log[..=i].iter().cloned()) };
                }
            }
            prop_assert_eq!(projector.status(), &project(log.iter().cloned()));
        }

        #[test]
        fn the_snapshot_depends_only_on_the_events(log in proptest::collection::vec(arb_event(), 0..40)) {
            let log = numbered(&log);
            prop_assert_eq!(project(log.clone()), project(log));
        }
    }
}
