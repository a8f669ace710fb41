//! The rewind rule (DESIGN.md, Steps, attempts and rewind).
//!
//! An event `E` is superseded when a later `stream_rewind` `R` has `R.step == E.step` and
//! `E.attempt < R.new_epoch`. Events without a step are never superseded, and neither are
//! rewinds themselves: they are how a reader learns that a step was retried. An event with a
//! step but no attempt counts as the step's first attempt.
//!
//! Everything that hides superseded events (the timeline view, the status snapshot, the CLI,
//! notifications) asks [`Rewinds`], so they cannot disagree.

use std::collections::HashMap;

use tether_types::event::kind;
use tether_types::{Event, Offset};

/// The rewinds of one stream, by step: where each was written and the epoch it began.
#[derive(Clone, Debug, Default)]
pub struct Rewinds {
    by_step: HashMap<String, Vec<(Offset, u32)>>,
}

impl Rewinds {
    /// Collects the rewinds among `events`.
    pub fn from_events<'a>(events: impl IntoIterator<Item = (Offset, &'a Event)>) -> Rewinds {
        let mut rewinds = Rewinds::default();
        for (offset, event) in events {
            rewinds.note(offset, event);
        }
        rewinds
    }

    /// Records `event` if it is a well-formed rewind; returns whether it was one.
    pub fn note(&mut self, offset: Offset, event: &Event) -> bool {
        let (Some(epoch), Some(step)) = (event.rewind_epoch(), &event.step) else {
            return false;
        };
        self.by_step
            .entry(step.clone())
            .or_default()
            .push((offset, epoch));
        true
    }

    pub fn is_empty(&self) -> bool {
        self.by_step.is_empty()
    }

    /// Whether the event at `offset` is superseded by a rewind written after it.
    pub fn supersedes(&self, offset: Offset, event: &Event) -> bool {
        if event.kind == kind::STREAM_REWIND {
            return false;
        }
        let Some(step) = &event.step else {
            return false;
        };
        let attempt = event.attempt.unwrap_or(1);
        self.by_step.get(step).is_some_and(|rewinds| {
            rewinds
                .iter()
                .any(|&(at, epoch)| at > offset && attempt < epoch)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn event(kind: &str, step: Option<&str>, attempt: Option<u32>, epoch: Option<u32>) -> Event {
        let mut e = Event::new(
            kind,
            String::new(),
            epoch.map_or(serde_json::Value::Null, |e| json!({ "new_epoch": e })),
        );
        e.step = step.map(str::to_string);
        e.attempt = attempt;
        e
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        let step = proptest::option::of(prop_oneof![Just("clone"), Just("agent")]);
        let attempt = proptest::option::of(1u32..4);
        prop_oneof![
            (step.clone(), attempt).prop_map(|(s, a)| event("log", s, a, None)),
            (step, 1u32..5).prop_map(|(s, e)| event(kind::STREAM_REWIND, s, None, Some(e))),
        ]
    }

    /// The rule, written as literally as possible, to check the indexed version against.
    fn superseded_by_definition(log: &[Event], i: usize) -> bool {
        let e = &log[i];
        if e.kind == kind::STREAM_REWIND || e.step.is_none() {
            return false;
        }
        log[i + 1..].iter().any(|r| {
            r.kind == kind::STREAM_REWIND
                && r.step == e.step
                && r.rewind_epoch()
                    .is_some_and(|epoch| e.attempt.unwrap_or(1) < epoch)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn rewinds_agree_with_the_definition(log in proptest::collection::vec(arb_event(), 0..30)) {
            let offsets: Vec<Offset> = (1..=log.len() as u64).map(Offset).collect();
            let rewinds = Rewinds::from_events(offsets.iter().copied().zip(log.iter()));
            for i in 0..log.len() {
                prop_assert_eq!(
                    rewinds.supersedes(offsets[i], &log[i]),
                    superseded_by_definition(&log, i)
                );
            }
        }

        /// Knowing more of the stream never un-supersedes an event: a live reader that
        /// applies the rule as rewinds arrive ends where a catch-up reader does.
        #[test]
        fn learning_later_rewinds_only_hides_more(log in proptest::collection::vec(arb_event(), 0..30), cut in 0usize..30) {
            let cut = cut.min(log.len());
            let offsets: Vec<Offset> = (1..=log.len() as u64).map(Offset).collect();
            let early = Rewinds::from_events(offsets[..cut].iter().copied().zip(log[..cut].iter()));
            let all = Rewinds::from_events(offsets.iter().copied().zip(log.iter()));
            for i in 0..cut {
                if early.supersedes(offsets[i], &log[i]) {
                    prop_assert!(all.supersedes(offsets[i], &log[i]));
                }
            }
        }
    }

    #[test]
    fn a_rewind_hides_only_older_attempts_of_its_step_written_before_it() {
        let log = [
            event("log", Some("clone"), Some(1), None),
            event("log", Some("agent"), Some(1), None),
            event("log", None, None, None),
            event(kind::STREAM_REWIND, Some("clone"), None, Some(2)),
            event("log", Some("clone"), Some(2), None),
            event("log", Some("clone"), Some(1), None),
        ];
        let offsets: Vec<Offset> = (1..=6).map(Offset).collect();
        let rewinds = Rewinds::from_events(offsets.iter().copied().zip(log.iter()));
        let hidden: Vec<bool> = (0..6)
            .map(|i| rewinds.supersedes(offsets[i], &log[i]))
            .collect();
        assert_eq!(hidden, [true, false, false, false, false, false]);
    }
}
