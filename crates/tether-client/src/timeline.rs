//! The rewind rule applied to a live stream, on the client.
//!
//! DESIGN.md, "Steps, attempts and rewind": an event is superseded when a later
//! `stream_rewind` names its step with a `new_epoch` above the event's attempt. A catch-up read
//! with `view=timeline` leaves such events out on the server, but a live stream cannot take
//! back what it already sent: it passes the `stream_rewind` on, and whoever shows the stream
//! must drop the dead attempt's events that still arrive after it. (The server fences such
//! writes (G6), so this is a second line of defence; tether-core's `Rewinds` is the same rule
//! over a whole log, where the rewind comes after the events it supersedes.)

use std::collections::HashMap;

use tether_types::Event;

/// Remembers, per step, the newest attempt a rewind announced.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    epochs: HashMap<String, u32>,
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// True when `event` belongs in the timeline; false when an earlier rewind superseded it.
    /// A `stream_rewind` itself is always shown: the reader should see that output was retried.
    pub fn admit(&mut self, event: &Event) -> bool {
        if let (Some(epoch), Some(step)) = (event.rewind_epoch(), &event.step) {
            let known = self.epochs.entry(step.clone()).or_insert(epoch);
            *known = (*known).max(epoch);
            return true;
        }
        !self.is_superseded(event)
    }

    /// Events without a step are never superseded; a step event without an attempt counts as
    /// the step's first attempt, as in the server's rule (tether-core's `Rewinds`).
    pub fn is_superseded(&self, event: &Event) -> bool {
        let Some(step) = &event.step else {
            return false;
        };
        let attempt = event.attempt.unwrap_or(1);
        self.epochs.get(step).is_some_and(|&epoch| attempt < epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tether_types::event::kind;

    fn event(kind: &str, step: Option<&str>, attempt: Option<u32>) -> Event {
        Event {
            kind: kind.into(),
            ts: String::new(),
            step: step.map(str::to_string),
            attempt,
            data: json!({}),
        }
    }

    fn rewind(step: &str, epoch: u32) -> Event {
        Event {
            step: Some(step.into()),
            data: json!({"new_epoch": epoch, "superseded_after": "0000000000000000_0000000000000003"}),
            ..event(kind::STREAM_REWIND, None, None)
        }
    }

    #[test]
    fn events_of_an_older_attempt_after_a_rewind_are_skipped() {
        let mut timeline = Timeline::new();
        assert!(timeline.admit(&event("log", Some("clone"), Some(1))));
        assert!(timeline.admit(&rewind("clone", 2)));
        assert!(!timeline.admit(&event("log", Some("clone"), Some(1))));
        assert!(timeline.admit(&event("log", Some("clone"), Some(2))));
    }

    #[test]
    fn a_rewind_leaves_other_steps_and_stepless_events_alone() {
        let mut timeline = Timeline::new();
        timeline.admit(&rewind("clone", 3));
        assert!(timeline.admit(&event("log", Some("agent"), Some(1))));
        assert!(timeline.admit(&event("log", None, Some(1))));
    }

    #[test]
    fn a_step_event_without_an_attempt_counts_as_the_first_attempt() {
        let mut timeline = Timeline::new();
        timeline.admit(&rewind("clone", 2));
        assert!(!timeline.admit(&event("log", Some("clone"), None)));
    }

    #[test]
    fn an_older_rewind_arriving_late_does_not_lower_the_epoch() {
        let mut timeline = Timeline::new();
        timeline.admit(&rewind("clone", 3));
        timeline.admit(&rewind("clone", 2));
        assert!(!timeline.admit(&event("log", Some("clone"), Some(2))));
    }
}
