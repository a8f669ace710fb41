//! The worker protocol on the wire: claims, leases, heartbeats, steps, events, finish, and
//! the nudges that reach a running task. docs/api.md, "Workers".
//!
//! The server and the client SDK both use these types, so a field renamed here is renamed
//! for both; workers written in other languages see the JSON, so fields may be added, never
//! renamed or removed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::task::Failure;
use crate::Task;

/// Longest accepted nudge, in characters after trimming.
pub const MAX_NUDGE_CHARS: usize = 2000;

/// `POST /v1/worker/claim` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// A name for the worker, for logs and the `task_started` event.
    pub worker: String,
    /// How long to wait for a task; the server's long-poll timeout when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// The right to work on one attempt of a task until `expires_at`, extended by heartbeats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    /// Names the lease in every later call; also the `Producer-Id` of its event batches.
    pub id: String,
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/worker/claim` answer (200): a task to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Claimed {
    pub task: Task,
    /// 1 for the first run, one more after each requeue.
    pub attempt: u32,
    pub lease: Lease,
    /// The checkpoint of each step an earlier attempt completed, by step name.
    #[serde(default)]
    pub checkpoints: Map<String, Value>,
}

/// Body of the calls that need nothing but the lease: heartbeat, begin step, ack nudge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseRef {
    pub lease: String,
}

/// A message from a user to a running task, delivered through heartbeats until acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Nudge {
    pub id: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/worker/tasks/{id}/heartbeat` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    /// The lease's new expiry.
    pub expires_at: DateTime<Utc>,
    /// Stop the task: it was cancelled. Its later writes will be fenced.
    pub cancel_requested: bool,
    /// Nudges not yet acknowledged, oldest first.
    #[serde(default)]
    pub nudges: Vec<Nudge>,
}

/// `POST /v1/worker/tasks/{id}/steps/{step}/begin` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepBegun {
    /// The attempt of this step; events of the step are tagged with it.
    pub epoch: u32,
    /// An earlier attempt completed the step: skip it and use `checkpoint`.
    #[serde(default)]
    pub completed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Value>,
}

/// `POST /v1/worker/tasks/{id}/steps/{step}/complete` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StepComplete {
    pub lease: String,
    /// The epoch `begin` gave; an older one is fenced with `STALE_ATTEMPT`.
    pub epoch: u32,
    /// What a later attempt gets back instead of running the step again.
    pub checkpoint: Value,
}

/// `POST /v1/worker/tasks/{id}/steps/{step}/complete` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepCompleted {
    pub epoch: u32,
}

/// `POST /v1/worker/tasks/{id}/events` body. The answer is `Appended`, as for producers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkerEvents {
    pub lease: String,
    /// Each an object with a string `type` and optional `ts`, `step`, `attempt` and `data`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>, min_items = 1))]
    pub events: Vec<Value>,
}

/// How a worker ended a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Completed,
    Failed,
}

/// `POST /v1/worker/tasks/{id}/finish` body. The answer is the `Task`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Finish {
    pub lease: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it failed; expected with `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

/// `POST /v1/tasks/{id}/nudges` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewNudge {
    /// Not empty, and at most 2000 characters (`MAX_NUDGE_CHARS`) after trimming.
    pub message: String,
}

/// `POST /v1/tasks/{id}/nudges` answer (202).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NudgeCreated {
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outcomes_are_lowercase_on_the_wire() {
        let finish = Finish {
            lease: "lse_1".into(),
            outcome: Outcome::Failed,
            result: None,
            error: Some(Failure {
                code: "EXIT_2".into(),
                message: "exited with status 2".into(),
            }),
        };
        let wire = serde_json::to_value(&finish).unwrap();
        assert_eq!(
            wire,
            json!({"lease": "lse_1", "outcome": "failed",
                   "error": {"code": "EXIT_2", "message": "exited with status 2"}})
        );
        assert_eq!(serde_json::from_value::<Finish>(wire).unwrap(), finish);
        assert!(serde_json::from_value::<Outcome>(json!("Completed")).is_err());
    }

    #[test]
    fn a_step_begun_without_completed_is_one_to_run() {
        let begun: StepBegun = serde_json::from_value(json!({"epoch": 2})).unwrap();
        assert_eq!(
            begun,
            StepBegun {
                epoch: 2,
                completed: false,
                checkpoint: None
            }
        );
        let skip: StepBegun = serde_json::from_value(
            json!({"epoch": 1, "completed": true, "checkpoint": {"sha": "abc"}}),
        )
        .unwrap();
        assert!(skip.completed);
        assert_eq!(skip.checkpoint, Some(json!({"sha": "abc"})));
    }

    #[test]
    fn a_claim_without_wait_leaves_it_out_and_requests_refuse_unknown_fields() {
        let claim = ClaimRequest {
            worker: "w1".into(),
            wait_ms: None,
        };
        assert_eq!(
            serde_json::to_value(&claim).unwrap(),
            json!({"worker": "w1"})
        );
        assert!(serde_json::from_value::<LeaseRef>(json!({"lease": "l", "x": 1})).is_err());
        assert!(serde_json::from_value::<NewNudge>(json!({"message": "hi", "to": "a"})).is_err());
    }

    #[test]
    fn heartbeats_carry_nudges_in_order() {
        let hb: Heartbeat = serde_json::from_value(json!({
            "expires_at": "2026-01-01T00:00:30Z",
            "cancel_requested": false,
            "nudges": [
                {"id": "n1", "message": "use rg", "created_at": "2026-01-01T00:00:01Z"},
                {"id": "n2", "message": "stop", "created_at": "2026-01-01T00:00:02Z"}
            ]
        }))
        .unwrap();
        let ids: Vec<_> = hb.nudges.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["n1", "n2"]);
    }
}
