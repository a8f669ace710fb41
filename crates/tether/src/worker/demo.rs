//! `tether worker --demo`: a scripted coding agent run through the step API, with faults on
//! demand: `--crash-at STEP[:ATTEMPT]` ends the whole worker process in the middle of a
//! step (so its lease expires and a retry rewinds the step), `--fail-at STEP` fails the task.

use std::str::FromStr;

use serde_json::{json, Value};
use tether_client::worker::{Outcome, Runner, StepStart, TaskError, TaskRun};
use tether_types::event::kind;
use tether_types::task::Failure;

use super::script::{self, Action, ScriptStep};

/// Where to crash the worker process: a step, and the task attempt to do it in (every
/// attempt when none is given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashAt {
    pub step: String,
    pub attempt: Option<u32>,
}

impl FromStr for CrashAt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (step, attempt) = match s.split_once(':') {
            Some((step, attempt)) => {
                let attempt = attempt
                    .parse::<u32>()
                    .ok()
                    .filter(|a| *a >= 1)
                    .ok_or_else(|| format!("{attempt:?} is not an attempt number (1, 2, ...)"))?;
                (step, Some(attempt))
            }
            None => (s, None),
        };
        check_demo_step(step)?;
        Ok(CrashAt {
            step: step.to_string(),
            attempt,
        })
    }
}

/// A step the demo runs.
pub fn check_demo_step(step: &str) -> Result<(), String> {
    if script::STEPS.contains(&step) {
        Ok(())
    } else {
        Err(format!(
            "{step:?} is not a demo step; expected one of {}",
            script::STEPS.join(", ")
        ))
    }
}

pub fn parse_fail_at(s: &str) -> Result<String, String> {
    check_demo_step(s).map(|()| s.to_string())
}

/// The pace of `tether up` and `tether worker --demo` unless `--speed` says otherwise: a task
/// takes about a minute, long enough for a person to watch, nudge and cancel it. Tests pass a
/// high speed (100 finishes a task in well under a second).
pub const DEFAULT_SPEED: &str = "0.12";

/// `--speed`: a positive, finite factor.
pub fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(speed) if speed.is_finite() && speed > 0.0 => Ok(speed),
        _ => Err(format!(
            "{s:?} is not a speed; use a positive number such as 1 or 100"
        )),
    }
}

pub struct DemoRunner {
    /// Pauses are divided by this.
    pub speed: f64,
    pub crash_at: Option<CrashAt>,
    pub fail_at: Option<String>,
}

#[async_trait::async_trait]
impl Runner for DemoRunner {
    async fn run(&self, mut run: TaskRun) -> Result<Outcome, TaskError> {
        let mut nudges = run.take_nudges();
        let mut result = Value::Null;
        for step in script::script(run.task()) {
            let checkpoint = match run.begin(step.name).await? {
                StepStart::Skip { checkpoint } => checkpoint,
                StepStart::Run { .. } => {
                    if let Some(failure) = self.run_step(&run, &step, &mut nudges).await? {
                        return Ok(Outcome::Failed(failure));
                    }
                    run.complete(step.name, step.checkpoint.clone()).await?;
                    step.checkpoint
                }
            };
            if step.name == "open_pr" {
                result = checkpoint;
            }
        }
        Ok(Outcome::Completed(Some(result)))
    }
}

type Nudges = Option<tokio::sync::mpsc::UnboundedReceiver<tether_types::worker::Nudge>>;

impl DemoRunner {
    /// Plays one step; the crash and the failure come halfway through its actions.
    async fn run_step(
        &self,
        run: &TaskRun,
        step: &ScriptStep,
        nudges: &mut Nudges,
    ) -> Result<Option<Failure>, TaskError> {
        let fault_at = step.actions.len() / 2;
        for (i, action) in step.actions.iter().enumerate() {
            if i == fault_at {
                if self.crashes_here(step.name, run.attempt()) {
                    // What was emitted so far reaches the server, so the retry has output to
                    // supersede; then the process ends as a crash would, finishing nothing.
                    run.flush().await?;
                    eprintln!(
                        "demo: crashing in step {} of {} (attempt {}), as --crash-at asked",
                        step.name,
                        run.task().id,
                        run.attempt()
                    );
                    std::process::abort();
                }
                if self.fail_at.as_deref() == Some(step.name) {
                    let message =
                        format!("the demo failed in step {}, as --fail-at asked", step.name);
                    run.emit_in(
                        step.name,
                        kind::AGENT_ERROR,
                        json!({"code": "DEMO_FAILURE", "message": message}),
                    );
                    return Ok(Some(Failure {
                        code: "DEMO_FAILURE".into(),
                        message,
                    }));
                }
            }
            match action {
                Action::Pause(pause) => run.sleep(pause.div_f64(self.speed)).await?,
                Action::Emit { kind, data } => run.emit_in(step.name, kind, data.clone()),
            }
            while let Some(nudge) = nudges.as_mut().and_then(|n| n.try_recv().ok()) {
                run.emit_in(
                    step.name,
                    kind::LOG,
                    json!({"line": format!("nudge received: {}", nudge.message)}),
                );
            }
        }
        Ok(None)
    }

    fn crashes_here(&self, step: &str, attempt: u32) -> bool {
        self.crash_at
            .as_ref()
            .is_some_and(|c| c.step == step && c.attempt.is_none_or(|a| a == attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_at_takes_a_step_and_an_optional_attempt() {
        assert_eq!(
            "clone:1".parse::<CrashAt>(),
            Ok(CrashAt {
                step: "clone".into(),
                attempt: Some(1)
            })
        );
        assert_eq!(
            "agent".parse::<CrashAt>(),
            Ok(CrashAt {
                step: "agent".into(),
                attempt: None
            })
        );
        for bad in ["clone:0", "clone:x", "clone:", "nope:1", "", ":1"] {
            assert!(bad.parse::<CrashAt>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_crash_without_an_attempt_happens_in_every_attempt() {
        let demo = |crash: &str| DemoRunner {
            speed: 1.0,
            crash_at: Some(crash.parse().unwrap()),
            fail_at: None,
        };
        assert!(demo("clone:1").crashes_here("clone", 1));
        assert!(!demo("clone:1").crashes_here("clone", 2));
        assert!(!demo("clone:1").crashes_here("agent", 1));
        assert!(demo("clone").crashes_here("clone", 3));
    }

    #[test]
    fn speeds_must_be_positive_and_finite() {
        assert_eq!(parse_speed("100"), Ok(100.0));
        assert_eq!(parse_speed("0.5"), Ok(0.5));
        for bad in ["0", "-1", "inf", "NaN", "fast"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
        assert!(parse_fail_at("test").is_ok());
        assert!(parse_fail_at("deploy").is_err());
    }
}
