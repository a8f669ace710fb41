//! Steps and their attempts: the write side of the rewind rule (DESIGN.md, Steps, attempts and
//! rewind).
//!
//! Beginning a step gives it an attempt (epoch) one past its last; when an earlier attempt
//! wrote events, the new one first appends a `stream_rewind` whose `new_epoch` is the new
//! attempt, and from then on writes tagged with an older attempt are refused (G6). The read
//! side, hiding what a rewind superseded, is [`crate::rewind`]; the property test below checks
//! that the two agree.
//!
//! Each store loads a step's row in its own transaction, asks these functions what to do, and
//! writes what they answer; they hold no state and do no I/O.

use std::collections::HashMap;

use serde_json::{json, Value};
use tether_types::event::kind;
use tether_types::{Event, Offset};

use crate::lease::{self, Fenced};

/// What a store knows of one step of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepAttempts<'a> {
    /// The newest attempt begun.
    pub epoch: u32,
    /// The lease that began it.
    pub lease_id: &'a str,
    /// The attempt that completed the step, if one did.
    pub completed_epoch: Option<u32>,
    /// The stream position of the first event any attempt of the step wrote.
    pub first_event_pos: Option<u64>,
}

/// What beginning a step does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// The step is done: the worker skips it, with the checkpoint of attempt `epoch`.
    Completed { epoch: u32 },
    /// The same lease asked again (a retried request): it keeps its attempt, nothing is written.
    Again { epoch: u32 },
    /// Attempt `epoch` begins: append `rewind` first when there is one (an earlier attempt
    /// wrote events, superseded from here on), then record `epoch` as the step's attempt.
    New { epoch: u32, rewind: Option<Rewind> },
}

/// The `stream_rewind` a new attempt writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewind {
    pub new_epoch: u32,
    /// The offset before the first event an earlier attempt wrote.
    pub superseded_after: Offset,
}

impl Rewind {
    /// The event as it is appended, stamped `ts`.
    pub fn event(&self, step: &str, ts: String) -> Event {
        let data = json!({
            "new_epoch": self.new_epoch,
            "superseded_after": self.superseded_after,
        });
        let mut event = Event::new(kind::STREAM_REWIND, ts, data);
        event.step = Some(step.to_string());
        event
    }
}

/// What beginning a step with `lease` does, given the step's row (`None`: never begun).
pub fn begin(row: Option<StepAttempts<'_>>, lease: &str) -> Begin {
    if let Some(row) = row {
        if let Some(epoch) = row.completed_epoch {
            return Begin::Completed { epoch };
        }
        if row.lease_id == lease {
            return Begin::Again { epoch: row.epoch };
        }
    }
    let epoch = row.map_or(1, |r| r.epoch + 1);
    let rewind = row.and_then(|r| r.first_event_pos).map(|first| Rewind {
        new_epoch: epoch,
        superseded_after: Offset(first.saturating_sub(1)),
    });
    Begin::New { epoch, rewind }
}

/// Completing attempt `epoch` of `step`: `Ok(None)` when it already is (a repeat writes
/// nothing), else the `step_completed` event to append, stamped `ts`; a stale attempt is fenced.
pub fn complete(
    row: Option<StepAttempts<'_>>,
    step: &str,
    epoch: u32,
    ts: String,
) -> Result<Option<Event>, Fenced> {
    if row.and_then(|r| r.completed_epoch) == Some(epoch) {
        return Ok(None);
    }
    lease::check_attempt(step, row.map(|r| r.epoch), epoch)?;
    let mut event = Event::new(kind::STEP_COMPLETED, ts, Value::Null);
    event.step = Some(step.to_string());
    event.attempt = Some(epoch);
    Ok(Some(event))
}

/// The steps a batch of worker events names, each once, in first-seen order.
pub fn steps_of(events: &[Event]) -> Vec<String> {
    let mut steps: Vec<String> = Vec::new();
    for step in events.iter().filter_map(|e| e.step.as_ref()) {
        if !steps.contains(step) {
            steps.push(step.clone());
        }
    }
    steps
}

/// Stamps each step event of a batch with its step's current attempt when it carries none,
/// and refuses the whole batch when any event is for another attempt (G6): every check comes
/// before any write. `epochs` maps each step of [`steps_of`] to its current attempt.
pub fn stamp(events: &mut [Event], epochs: &HashMap<String, Option<u32>>) -> Result<(), Fenced> {
    for event in events.iter_mut() {
        if let Some(step) = &event.step {
            let current = epochs.get(step).copied().flatten();
            let given = event.attempt.or(current).unwrap_or(1);
            lease::check_attempt(step, current, given)?;
            event.attempt = Some(given);
        }
    }
    Ok(())
}

/// Where each step of a stored batch first appears: only a step's first event in a batch can
/// be its first event ever, which a later attempt's rewind points before. `next` is the
/// offset after the batch.
pub fn first_step_events(events: &[Event], next: Offset) -> Vec<(String, u64)> {
    let first = next.0 - events.len() as u64;
    let mut seen = Vec::new();
    let mut out: Vec<(String, u64)> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if let Some(step) = &event.step {
            if !seen.contains(&step) {
                seen.push(step);
                out.push((step.clone(), first + i as u64 + 1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rewinds;
    use proptest::prelude::*;

    fn ev(step: Option<&str>, attempt: Option<u32>) -> Event {
        let mut e = Event::new(kind::LOG, String::new(), Value::Null);
        e.step = step.map(str::to_string);
        e.attempt = attempt;
        e
    }

    #[test]
    fn first_step_events_name_each_steps_first_position_in_the_batch() {
        let batch = [
            ev(None, None),
            ev(Some("clone"), None),
            ev(Some("agent"), None),
            ev(Some("clone"), None),
        ];
        // The batch took positions 11..=14.
        assert_eq!(
            first_step_events(&batch, Offset(14)),
            [("clone".to_string(), 12), ("agent".to_string(), 13)]
        );
        assert_eq!(steps_of(&batch), ["clone", "agent"]);
    }

    #[test]
    fn one_stale_event_refuses_the_batch_and_unstamped_ones_take_the_current_attempt() {
        let epochs = HashMap::from([("clone".to_string(), Some(2))]);
        let mut ok = [ev(Some("clone"), None), ev(None, None)];
        stamp(&mut ok, &epochs).unwrap();
        assert_eq!((ok[0].attempt, ok[1].attempt), (Some(2), None));
        let mut stale = [ev(Some("clone"), None), ev(Some("clone"), Some(1))];
        assert!(stamp(&mut stale, &epochs).is_err());
    }

    #[test]
    fn a_new_attempt_rewinds_only_when_an_earlier_one_wrote_events() {
        let quiet = StepAttempts {
            epoch: 1,
            lease_id: "a",
            completed_epoch: None,
            first_event_pos: None,
        };
        assert_eq!(
            begin(Some(quiet), "b"),
            Begin::New {
                epoch: 2,
                rewind: None
            }
        );
        let wrote = StepAttempts {
            first_event_pos: Some(7),
            ..quiet
        };
        assert_eq!(
            begin(Some(wrote), "b"),
            Begin::New {
                epoch: 2,
                rewind: Some(Rewind {
                    new_epoch: 2,
                    superseded_after: Offset(6)
                })
            }
        );
        assert_eq!(begin(Some(wrote), "a"), Begin::Again { epoch: 1 });
        assert_eq!(
            begin(None, "a"),
            Begin::New {
                epoch: 1,
                rewind: None
            }
        );
    }

    /// What a worker does in the simulation below.
    #[derive(Clone, Debug)]
    enum Op {
        /// A worker holding lease `lease` begins `step`.
        Begin { step: usize, lease: u8 },
        /// A batch of events for `step` tagged with `attempt` (`None`: the current one); the
        /// tag may be stale.
        Write {
            step: usize,
            attempt: Option<u32>,
            count: usize,
        },
        /// An event of no step.
        Plain,
        /// The current attempt of `step` completes (when there is one).
        Complete { step: usize },
    }

    const STEPS: [&str; 2] = ["clone", "agent"];

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..STEPS.len(), 0u8..3).prop_map(|(step, lease)| Op::Begin { step, lease }),
            6 => (0..STEPS.len(), proptest::option::of(1u32..5), 1usize..4)
                .prop_map(|(step, attempt, count)| Op::Write { step, attempt, count }),
            1 => Just(Op::Plain),
            1 => (0..STEPS.len()).prop_map(|step| Op::Complete { step }),
        ]
    }

    /// A step's row as a store keeps it.
    #[derive(Clone, Debug)]
    struct Row {
        epoch: u32,
        lease: String,
        completed_epoch: Option<u32>,
        first_event_pos: Option<u64>,
    }

    impl Row {
        fn attempts(&self) -> StepAttempts<'_> {
            StepAttempts {
                epoch: self.epoch,
                lease_id: &self.lease,
                completed_epoch: self.completed_epoch,
                first_event_pos: self.first_event_pos,
            }
        }
    }

    /// Runs `ops` against a store that does just what the write rule says (the functions of
    /// this module), and returns the log it wrote, with, for each event, the attempts of its
    /// step that had begun when it was written and how many begun in all by the end: the
    /// simple model says an event of a step is superseded exactly when a newer attempt of its
    /// step began after it was written.
    fn simulate(ops: &[Op]) -> (Vec<Event>, Vec<bool>) {
        let mut rows: HashMap<String, Row> = HashMap::new();
        let mut log: Vec<Event> = Vec::new();
        // For each event: its step and the attempt it was written for.
        let mut written: Vec<Option<(String, u32)>> = Vec::new();
        let append = |log: &mut Vec<Event>,
                      written: &mut Vec<Option<(String, u32)>>,
                      e: Event,
                      tag: Option<(String, u32)>| {
            log.push(e);
            written.push(tag);
        };
        for op in ops {
            match op {
                Op::Begin { step, lease } => {
                    let step = STEPS[*step];
                    let lease = format!("lease-{lease}");
                    let row = rows.get(step).cloned();
                    match begin(row.as_ref().map(Row::attempts), &lease) {
                        Begin::Completed { .. } | Begin::Again { .. } => {}
                        Begin::New { epoch, rewind } => {
                            if let Some(rewind) = rewind {
                                append(
                                    &mut log,
                                    &mut written,
                                    rewind.event(step, String::new()),
                                    None,
                                );
                            }
                            let first_event_pos = row.and_then(|r| r.first_event_pos);
                            rows.insert(
                                step.to_string(),
                                Row {
                                    epoch,
                                    lease,
                                    completed_epoch: None,
                                    first_event_pos,
                                },
                            );
                        }
                    }
                }
                Op::Write {
                    step,
                    attempt,
                    count,
                } => {
                    let step = STEPS[*step];
                    let mut batch: Vec<Event> =
                        (0..*count).map(|_| ev(Some(step), *attempt)).collect();
                    let epochs: HashMap<String, Option<u32>> = steps_of(&batch)
                        .into_iter()
                        .map(|s| {
                            let current = rows.get(&s).map(|r| r.epoch);
                            (s, current)
                        })
                        .collect();
                    if stamp(&mut batch, &epochs).is_err() {
                        continue;
                    }
                    let next = Offset((log.len() + batch.len()) as u64);
                    let firsts = first_step_events(&batch, next);
                    for e in batch {
                        let tag = e.step.clone().zip(e.attempt);
                        append(&mut log, &mut written, e, tag);
                    }
                    for (s, pos) in firsts {
                        if let Some(row) = rows.get_mut(&s) {
                            row.first_event_pos.get_or_insert(pos);
                        }
                    }
                }
                Op::Plain => append(&mut log, &mut written, ev(None, None), None),
                Op::Complete { step } => {
                    let step = STEPS[*step];
                    let Some(row) = rows.get(step).cloned() else {
                        continue;
                    };
                    if let Ok(Some(e)) =
                        complete(Some(row.attempts()), step, row.epoch, String::new())
                    {
                        let pos = log.len() as u64 + 1;
                        append(
                            &mut log,
                            &mut written,
                            e,
                            Some((step.to_string(), row.epoch)),
                        );
                        let row = rows.get_mut(step).expect("the row read above");
                        row.first_event_pos.get_or_insert(pos);
                        row.completed_epoch = Some(row.epoch);
                    }
                }
            }
        }
        // The model: superseded exactly when its step's last attempt is newer than its own.
        let superseded = written
            .iter()
            .map(|tag| {
                tag.as_ref()
                    .is_some_and(|(step, attempt)| rows[step].epoch > *attempt)
            })
            .collect();
        (log, superseded)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Writing rewinds (this module) and hiding superseded events ([`Rewinds`]) agree: a
        /// reader of the log the write rule produced hides exactly the events of attempts that
        /// a newer attempt of their step replaced, and nothing else.
        #[test]
        fn the_log_the_write_rule_produces_hides_exactly_the_replaced_attempts(
            ops in proptest::collection::vec(arb_op(), 0..40)
        ) {
            let (log, superseded) = simulate(&ops);
            // An event's offset is the position right after it.
            let offsets: Vec<Offset> = (1..=log.len() as u64).map(Offset).collect();
            let rewinds = Rewinds::from_events(offsets.iter().copied().zip(log.iter()));
            for (i, event) in log.iter().enumerate() {
                prop_assert_eq!(
                    rewinds.supersedes(offsets[i], event),
                    superseded[i],
                    "event {} of {:?}", i, log
                );
            }
        }
    }
}
