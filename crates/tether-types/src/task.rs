//! Tasks on the wire: what `POST /v1/tasks` takes and what the tasks API answers.
//!
//! PERSISTED: [`TaskState`] names and [`TaskSpec`] fields are stored in the database and sent
//! to clients; renaming one breaks existing data dirs and clients.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Offset;

/// Longest accepted task description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;
/// Bounds of `max_turns`.
pub const MAX_TURNS_RANGE: std::ops::RangeInclusive<u32> = 1..=500;
/// Bounds of `max_budget_usd`.
pub const BUDGET_RANGE_USD: std::ops::RangeInclusive<f64> = 0.01..=100.0;
/// Bounds of `max_attempts`.
pub const MAX_ATTEMPTS_RANGE: std::ops::RangeInclusive<u32> = 1..=10;
/// Attempts a task gets when its spec does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Largest accepted `metadata` object, serialized, in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest accepted repository and task type, in characters.
pub const MAX_LABEL_CHARS: usize = 512;

/// Where a task is in its life. DESIGN.md, Tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    Submitted,
    Running,
    Finalizing,
    Completed,
    Failed,
    TimedOut,
    Cancelled,
}

impl TaskState {
    pub const ALL: [TaskState; 7] = [
        TaskState::Submitted,
        TaskState::Running,
        TaskState::Finalizing,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::TimedOut,
        TaskState::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::TimedOut | TaskState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Submitted => "SUBMITTED",
            TaskState::Running => "RUNNING",
            TaskState::Finalizing => "FINALIZING",
            TaskState::Completed => "COMPLETED",
            TaskState::Failed => "FAILED",
            TaskState::TimedOut => "TIMED_OUT",
            TaskState::Cancelled => "CANCELLED",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown task state {s:?}; expected one of {}",
                    TaskState::ALL.map(|s| s.as_str()).join(", ")
                )
            })
    }
}

/// What a task is asked to do: the body of `POST /v1/tasks` and `POST /v1/tasks/validate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 10_000))]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 512))]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 512))]
    pub task_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 500))]
    pub max_turns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.01, maximum = 100.0))]
    pub max_budget_usd: Option<f64>,
    /// How many times the task may run before a lost lease times it out (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10))]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub trace: bool,
    /// Free-form, at most 16 KiB serialized.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// One problem with a request field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl TaskSpec {
    /// Every reason the spec cannot be accepted, in field order; empty when it is valid.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let chars = self.description.chars().count();
        if self.description.trim().is_empty() {
            errors.push(FieldError::new("description", "is required"));
        } else if chars > MAX_DESCRIPTION_CHARS {
            errors.push(FieldError::new(
                "description",
                format!("has {chars} characters; at most {MAX_DESCRIPTION_CHARS} are allowed"),
            ));
        }
        for (field, value) in [
            ("repository", &self.repository),
            ("task_type", &self.task_type),
        ] {
            if let Some(v) = value {
                if v.trim().is_empty() {
                    errors.push(FieldError::new(field, "must not be empty when given"));
                } else if v.chars().count() > MAX_LABEL_CHARS {
                    errors.push(FieldError::new(
                        field,
                        format!("is longer than {MAX_LABEL_CHARS} characters"),
                    ));
                }
            }
        }
        if let Some(turns) = self.max_turns {
            if !MAX_TURNS_RANGE.contains(&turns) {
                errors.push(FieldError::new(
                    "max_turns",
                    format!(
                        "must be between {} and {}",
                        MAX_TURNS_RANGE.start(),
                        MAX_TURNS_RANGE.end()
                    ),
                ));
            }
        }
        if let Some(attempts) = self.max_attempts {
            if !MAX_ATTEMPTS_RANGE.contains(&attempts) {
                errors.push(FieldError::new(
                    "max_attempts",
                    format!(
                        "must be between {} and {}",
                        MAX_ATTEMPTS_RANGE.start(),
                        MAX_ATTEMPTS_RANGE.end()
                    ),
                ));
            }
        }
        if let Some(budget) = self.max_budget_usd {
            if !budget.is_finite() || !BUDGET_RANGE_USD.contains(&budget) {
                errors.push(FieldError::new(
                    "max_budget_usd",
                    format!(
                        "must be between {} and {}",
                        BUDGET_RANGE_USD.start(),
                        BUDGET_RANGE_USD.end()
                    ),
                ));
            }
        }
        // After the checks above, so a field gets one complaint: its first.
        let texts = [
            ("description", Some(&self.description)),
            ("repository", self.repository.as_ref()),
            ("task_type", self.task_type.as_ref()),
        ];
        for (field, value) in texts {
            if let Some(Err(message)) = value.map(|v| crate::text::check_text(field, v)) {
                if !errors.iter().any(|e| e.field == field) {
                    let message = message.trim_start_matches(field).trim_start();
                    errors.push(FieldError::new(field, message));
                }
            }
        }
        if self
            .metadata
            .iter()
            .any(|(k, v)| k.contains('\0') || crate::text::json_holds_nul(v))
        {
            errors.push(FieldError::new(
                "metadata",
                "must not contain a NUL character (\\u0000) in a key or a string",
            ));
        }
        let metadata_bytes = serde_json::to_vec(&self.metadata).map_or(0, |v| v.len());
        if metadata_bytes > MAX_METADATA_BYTES {
            errors.push(FieldError::new(
                "metadata",
                format!("is {metadata_bytes} bytes; at most {MAX_METADATA_BYTES} are allowed"),
            ));
        }
        errors
    }
}

/// A task's identity: `tsk_` and 20 lowercase base-32 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(value_type = String, example = "tsk_0123456789abcdefghjk")
)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

pub const TASK_ID_PREFIX: &str = "tsk_";
const TASK_ID_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const TASK_ID_LEN: usize = 20;

impl TaskId {
    /// A fresh id from 100 random bits supplied by the caller (this crate does no I/O).
    pub fn from_random(random: u128) -> TaskId {
        let mut s = String::with_capacity(TASK_ID_PREFIX.len() + TASK_ID_LEN);
        s.push_str(TASK_ID_PREFIX);
        for i in 0..TASK_ID_LEN {
            let digit = (random >> (5 * i)) & 31;
            s.push(TASK_ID_ALPHABET[digit as usize] as char);
        }
        TaskId(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The task's stream path, under `/v1/stream/`.
    pub fn stream_path(&self) -> String {
        format!("{TASK_STREAM_PREFIX}{}", self.0)
    }

    /// The task id a stream path belongs to, if it is a task stream.
    pub fn from_stream_path(path: &str) -> Option<TaskId> {
        path.strip_prefix(TASK_STREAM_PREFIX)?.parse().ok()
    }
}

/// Task streams live under this stream path prefix; the prefix is reserved for them.
pub const TASK_STREAM_PREFIX: &str = "tasks/";

impl FromStr for TaskId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.strip_prefix(TASK_ID_PREFIX).is_some_and(|rest| {
            rest.len() == TASK_ID_LEN && rest.bytes().all(|b| TASK_ID_ALPHABET.contains(&b))
        });
        if valid {
            Ok(TaskId(s.to_string()))
        } else {
            Err(format!("{s:?} is not a task id"))
        }
    }
}

impl TryFrom<String> for TaskId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> String {
        id.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Task {
    pub id: TaskId,
    /// The owning user's name.
    pub owner: String,
    pub state: TaskState,
    pub attempt: u32,
    #[serde(flatten)]
    pub spec: TaskSpec,
    /// The task's event stream, readable by any Durable Streams client.
    pub stream_url: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The status snapshot; present on single-task reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
}

/// Why a task failed or timed out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Failure {
    pub code: String,
    pub message: String,
}

/// The deterministic snapshot of a task derived from its non-superseded events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskStatus {
    /// `None` only before the first lifecycle event is seen.
    pub state: Option<TaskState>,
    pub attempt: u32,
    /// The step most recently started and not yet completed.
    pub current_step: Option<String>,
    pub turns: u64,
    pub last_milestone: Option<String>,
    /// The most recent tool call, e.g. `bash: cargo test`.
    pub current_activity: Option<String>,
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub failure: Option<Failure>,
    /// What the worker returned with `task_completed` (absent when it returned nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Timestamp of the last event folded in.
    pub updated_at: Option<String>,
    /// Non-superseded events folded in.
    pub events: u64,
    /// The offset after the last event of the log this snapshot covers.
    pub offset: Offset,
}

/// `GET /v1/tasks` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskList {
    pub data: Vec<Task>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /v1/tasks/validate` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Validation {
    pub valid: bool,
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn task_ids_round_trip(random in any::<u128>()) {
            let id = TaskId::from_random(random);
            prop_assert_eq!(id.as_str().parse::<TaskId>().unwrap(), id.clone());
            prop_assert_eq!(TaskId::from_stream_path(&id.stream_path()), Some(id));
        }

        #[test]
        fn task_id_parsing_never_panics(s in ".{0,40}") {
            let _ = s.parse::<TaskId>();
        }
    }

    #[test]
    fn states_parse_case_insensitively_and_reject_others() {
        assert_eq!("timed_out".parse::<TaskState>(), Ok(TaskState::TimedOut));
        assert!("DONE".parse::<TaskState>().is_err());
        assert!(TaskState::Cancelled.is_terminal());
        assert!(!TaskState::Finalizing.is_terminal());
    }

    #[test]
    fn spec_problems_name_each_bad_field() {
        let spec = TaskSpec {
            description: "x".repeat(MAX_DESCRIPTION_CHARS + 1),
            max_turns: Some(0),
            max_budget_usd: Some(f64::NAN),
            repository: Some(" ".into()),
            ..TaskSpec::default()
        };
        let fields: Vec<_> = spec.problems().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["description", "repository", "max_turns", "max_budget_usd"]
        );
        let ok = TaskSpec {
            description: "fix the flaky test".into(),
            max_turns: Some(500),
            max_budget_usd: Some(0.01),
            ..TaskSpec::default()
        };
        assert!(ok.problems().is_empty());
    }
}
