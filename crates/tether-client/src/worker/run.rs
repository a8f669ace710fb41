//! What a runner gets for one claimed task: its parameters, steps, events, nudges, and
//! word of a stop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tether_types::event::kind;
use tether_types::task::Failure;
use tether_types::worker::{Claimed, Nudge, StepComplete};
use tether_types::Task;
use tokio::sync::mpsc::UnboundedReceiver;

use super::retry::retry;
use super::sender::EventSender;
use super::stop::{Stop, StopSignal};
use super::TaskError;
use crate::Client;

/// How a runner ended its task.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Completed(Option<Value>),
    Failed(Failure),
}

/// What `begin` decided for a step.
#[derive(Clone, Debug, PartialEq)]
pub enum StepStart {
    /// Run the step; its events are tagged with this attempt.
    Run { epoch: u32 },
    /// An earlier attempt completed it: skip it and go on from its checkpoint.
    Skip { checkpoint: Value },
}

/// Longest step name; names go into URL paths and every event of the step.
pub const MAX_STEP_CHARS: usize = 64;

/// A step name the protocol can carry: 1 to 64 of `[A-Za-z0-9_.-]`, not `.` or `..`
/// (which a URL path would swallow).
pub fn check_step_name(step: &str) -> Result<(), String> {
    let ok = !step.is_empty()
        && step.len() <= MAX_STEP_CHARS
        && step
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && step != "."
        && step != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{step:?} is not a step name: use 1 to {MAX_STEP_CHARS} letters, digits, '_', '-' or '.'"
        ))
    }
}

/// One claimed task, handed to a [`super::Runner`].
pub struct TaskRun {
    claimed: Claimed,
    client: Client,
    stop: StopSignal,
    events: Arc<EventSender>,
    nudges: Option<UnboundedReceiver<Nudge>>,
    /// The epoch of each step this attempt began, to tag the step's events with it.
    epochs: Mutex<HashMap<String, u32>>,
}

impl TaskRun {
    pub(crate) fn new(
        claimed: Claimed,
        client: Client,
        stop: StopSignal,
        events: Arc<EventSender>,
        nudges: UnboundedReceiver<Nudge>,
    ) -> TaskRun {
        TaskRun {
            claimed,
            client,
            stop,
            events,
            nudges: Some(nudges),
            epochs: Mutex::new(HashMap::new()),
        }
    }

    pub fn task(&self) -> &Task {
        &self.claimed.task
    }

    /// 1 for the first run, one more after each requeue.
    pub fn attempt(&self) -> u32 {
        self.claimed.attempt
    }

    /// Checkpoints of the steps earlier attempts completed, as the claim brought them.
    pub fn checkpoints(&self) -> &Map<String, Value> {
        &self.claimed.checkpoints
    }

    /// Begins a step and queues its `step_started` event. Events queued before it are sent
    /// first, so the stream keeps the order in which the runner did things.
    pub async fn begin(&self, step: &str) -> Result<StepStart, TaskError> {
        check_step_name(step).map_err(TaskError::Invalid)?;
        self.events.flush().await?;
        let task = &self.claimed.task.id;
        let lease = &self.claimed.lease.id;
        let begun = retry("beginning a step", &self.stop, || {
            self.client.begin_step(task, step, lease)
        })
        .await?;
        if begun.completed {
            return Ok(StepStart::Skip {
                checkpoint: begun.checkpoint.unwrap_or(Value::Null),
            });
        }
        self.lock_epochs().insert(step.to_string(), begun.epoch);
        self.emit(serde_json::json!({"type": kind::STEP_STARTED, "step": step}));
        Ok(StepStart::Run { epoch: begun.epoch })
    }

    /// Completes a step begun by this run with its checkpoint, after sending its events.
    pub async fn complete(&self, step: &str, checkpoint: Value) -> Result<(), TaskError> {
        let epoch = self.epoch(step).ok_or_else(|| {
            TaskError::Invalid(format!("step {step:?} was not begun by this attempt"))
        })?;
        self.events.flush().await?;
        let body = StepComplete {
            lease: self.claimed.lease.id.clone(),
            epoch,
            checkpoint,
        };
        let task = &self.claimed.task.id;
        retry("completing a step", &self.stop, || {
            self.client.complete_step(task, step, &body)
        })
        .await?;
        Ok(())
    }

    /// The epoch this run began `step` with.
    pub fn epoch(&self, step: &str) -> Option<u32> {
        self.lock_epochs().get(step).copied()
    }

    /// Queues an event (`{"type", "step"?, "data"?}`); it is sent shortly, in order. An event
    /// of a step this run began is tagged with that step's epoch unless it names one.
    pub fn emit(&self, mut event: Value) {
        if let Some(fields) = event.as_object_mut() {
            let step = fields.get("step").and_then(Value::as_str);
            if let Some(epoch) = step.and_then(|s| self.epoch(s)) {
                fields.entry("attempt").or_insert(Value::from(epoch));
            }
        }
        self.events.emit(event);
    }

    /// Queues an event of `kind` in `step` with `data`.
    pub fn emit_in(&self, step: &str, kind: &str, data: Value) {
        self.emit(serde_json::json!({"type": kind, "step": step, "data": data}));
    }

    /// Sends every queued event now.
    pub async fn flush(&self) -> Result<(), TaskError> {
        self.events.flush().await
    }

    /// Why the work was stopped, if it was.
    pub fn stopped(&self) -> Option<Stop> {
        self.stop.get()
    }

    /// Resolves when the work is stopped from outside.
    pub async fn until_stopped(&self) -> Stop {
        self.stop.raised().await
    }

    /// Waits `duration`, or less when the work is stopped meanwhile.
    pub async fn sleep(&self, duration: Duration) -> Result<(), TaskError> {
        tokio::select! {
            _ = tokio::time::sleep(duration) => Ok(()),
            reason = self.stop.raised() => Err(TaskError::Stopped(reason)),
        }
    }

    /// The nudges users send, each once, as heartbeats bring them; the runtime acknowledges
    /// them once they are handed over. `None` after the first call.
    pub fn take_nudges(&mut self) -> Option<UnboundedReceiver<Nudge>> {
        self.nudges.take()
    }

    fn lock_epochs(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.epochs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_must_fit_in_a_path_segment() {
        for good in ["clone", "open_pr", "agent.turn-1", "x86_64"] {
            assert!(check_step_name(good).is_ok(), "{good}");
        }
        let long = "s".repeat(MAX_STEP_CHARS + 1);
        for bad in ["", ".", "..", "a/b", "a b", "a:b", "é", long.as_str()] {
            assert!(check_step_name(bad).is_err(), "{bad:?}");
        }
    }
}
