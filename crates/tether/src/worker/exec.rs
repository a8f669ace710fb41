//! `tether worker --exec CMD`: each claimed task runs CMD through `sh -c`.
//!
//! The task arrives as one JSON line on stdin and in `TETHER_TASK_*` variables; stdout lines
//! become events ([`super::lines`]), stderr lines `log` events, each tagged with the step the
//! command is in (an implicit one outside declared steps, so a retry supersedes them all); nudges go to stdin as JSON
//! lines; a cancel sends SIGTERM and, after the grace period, SIGKILL; the exit status
//! finishes the task. The command runs in its own process group so that signals reach
//! everything it started, not only the shell.

use std::collections::HashSet;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tether_client::worker::{Outcome, Runner, StepStart, Stop, TaskError, TaskRun};
use tether_types::task::Failure;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;

use super::lines::{self, Line};

/// After the command exits, how long output still held open by its children may keep
/// arriving before they are killed.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

pub struct ExecRunner {
    pub command: String,
    /// Between SIGTERM and SIGKILL.
    pub grace: Duration,
}

#[async_trait::async_trait]
impl Runner for ExecRunner {
    async fn run(&self, mut run: TaskRun) -> Result<Outcome, TaskError> {
        let mut child = match self.spawn(&run) {
            Ok(child) => child,
            Err(error) => {
                return Ok(Outcome::Failed(Failure {
                    code: "EXEC_SPAWN_FAILED".into(),
                    message: format!("cannot run `sh -c {:?}`: {error}", self.command),
                }))
            }
        };
        let pid = child.id();
        let mut stdin = child.stdin.take();
        let task_line = serde_json::to_string(run.task()).unwrap_or_default();
        write_line(&mut stdin, &task_line).await;
        let mut stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
        let mut stderr = child.stderr.take().map(|s| BufReader::new(s).lines());
        let mut nudges = run.take_nudges();
        let mut steps = Steps::default();
        let mut status: Option<ExitStatus> = None;
        let mut stopping: Option<Stop> = None;
        let mut kill_at: Option<Instant> = None;
        let mut drain_until: Option<Instant> = None;

        loop {
            if status.is_some() && stdout.is_none() && stderr.is_none() {
                break;
            }
            tokio::select! {
                line = next_line(&mut stdout) => match line {
                    Some(line) => steps.handle(&run, &mut stdin, lines::parse(&line)).await,
                    None => stdout = None,
                },
                line = next_line(&mut stderr) => match line {
                    Some(line) => steps.log(&run, &line, true).await,
                    None => stderr = None,
                },
                Some(nudge) = recv(&mut nudges) => {
                    let line = json!({"type": "nudge", "id": nudge.id, "message": nudge.message});
                    write_line(&mut stdin, &line.to_string()).await;
                }
                reason = run.until_stopped(), if stopping.is_none() => {
                    stopping = Some(reason);
                    // Nothing more reaches the server now; what is left is to end the process.
                    if reason == Stop::Fenced {
                        signal_group(pid, Signal::Kill);
                    } else {
                        signal_group(pid, Signal::Term);
                        kill_at = Some(Instant::now() + self.grace);
                    }
                }
                _ = sleep_until(kill_at), if status.is_none() => {
                    tracing::warn!(task = %run.task().id, grace = ?self.grace,
                        "the command outlived its grace period; killing it");
                    signal_group(pid, Signal::Kill);
                    kill_at = None;
                }
                exited = child.wait(), if status.is_none() => {
                    status = Some(exited.map_err(|e| TaskError::Invalid(format!("waiting for the command: {e}")))?);
                    drain_until = Some(Instant::now() + OUTPUT_DRAIN);
                }
                _ = sleep_until(drain_until) => {
                    // Something the command started still holds its output open.
                    signal_group(pid, Signal::Kill);
                    break;
                }
            }
        }
        if let Some(reason) = stopping.or(run.stopped()) {
            return Err(TaskError::Stopped(reason));
        }
        Ok(outcome(status, steps.result))
    }
}

impl ExecRunner {
    fn spawn(&self, run: &TaskRun) -> std::io::Result<Child> {
        let task = run.task();
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&self.command)
            .env("TETHER_TASK_ID", task.id.as_str())
            .env("TETHER_TASK_DESCRIPTION", &task.spec.description)
            .env("TETHER_TASK_ATTEMPT", run.attempt().to_string())
            .env(
                "TETHER_TASK_REPOSITORY",
                task.spec.repository.as_deref().unwrap_or(""),
            )
            .env(
                "TETHER_TASK_TYPE",
                task.spec.task_type.as_deref().unwrap_or(""),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        command.spawn()
    }
}

/// The step that holds whatever a command prints outside a step it declared (all of its
/// output when it declares none). It is begun on first use and never completed, so a retried
/// task begins it again and the dead attempt's output is superseded like any step's.
pub const IMPLICIT_STEP: &str = "run";

/// The steps the command declared, as this attempt sees them, and the result it gave.
#[derive(Default)]
struct Steps {
    /// The step begun last and not yet completed: what the command prints is tagged with it.
    current: Option<String>,
    /// Steps an earlier attempt completed: the command was told to skip them, and whatever
    /// it prints for them anyway is dropped, so the timeline shows each step once.
    skipped: HashSet<String>,
    /// Whether this attempt began [`IMPLICIT_STEP`]: `None` until output first needs it.
    implicit: Option<bool>,
    /// The last `{"type":"result"}` line's data.
    result: Option<Value>,
}

impl Steps {
    /// The step output printed now belongs to: the declared step the command is in, else the
    /// implicit one.
    async fn step_for_output(&mut self, run: &TaskRun) -> Option<String> {
        if let Some(step) = &self.current {
            return Some(step.clone());
        }
        if self.implicit.is_none() {
            let begun = match run.begin(IMPLICIT_STEP).await {
                Ok(StepStart::Run { .. }) => true,
                // Only a command that declared and completed a step named like the implicit
                // one gets here; its output then goes untagged rather than dropped.
                Ok(StepStart::Skip { .. }) => false,
                Err(error) => {
                    if run.stopped().is_none() {
                        tracing::warn!(task = %run.task().id, %error, "cannot begin the implicit step");
                    }
                    false
                }
            };
            self.implicit = Some(begun);
        }
        (self.implicit == Some(true)).then(|| IMPLICIT_STEP.to_string())
    }

    /// A plain line of output, from stdout or stderr, as a `log` event of the current step.
    async fn log(&mut self, run: &TaskRun, line: &str, stderr: bool) {
        let step = self.step_for_output(run).await;
        run.emit(lines::log_event(line, stderr, step.as_deref()));
    }

    async fn handle(&mut self, run: &TaskRun, stdin: &mut Option<ChildStdin>, line: Line) {
        let task = &run.task().id;
        match line {
            Line::Log(text) => self.log(run, &text, false).await,
            Line::Result(data) => self.result = Some(data),
            Line::Event(mut event) => {
                let named = event.get("step").and_then(Value::as_str);
                if named.is_some_and(|s| self.skipped.contains(s)) {
                    return;
                }
                if named.is_none() {
                    if let Some(step) = self.step_for_output(run).await {
                        event["step"] = Value::from(step);
                    }
                }
                run.emit(event);
            }
            Line::StepStarted(step) => match run.begin(&step).await {
                Ok(StepStart::Run { .. }) => self.current = Some(step),
                Ok(StepStart::Skip { checkpoint }) => {
                    let line =
                        json!({"type": "step_skipped", "step": step, "checkpoint": checkpoint});
                    write_line(stdin, &line.to_string()).await;
                    self.skipped.insert(step);
                }
                Err(error) => tracing::warn!(%task, %step, %error, "cannot begin the step"),
            },
            Line::StepCompleted { step, checkpoint } => {
                if self.skipped.contains(&step) {
                    return;
                }
                if run.epoch(&step).is_none() {
                    // Completed without being started: begin it first, as the protocol wants.
                    match run.begin(&step).await {
                        Ok(StepStart::Run { .. }) => {}
                        Ok(StepStart::Skip { .. }) => return,
                        Err(error) => {
                            tracing::warn!(%task, %step, %error, "cannot begin the step");
                            return;
                        }
                    }
                }
                if let Err(error) = run.complete(&step, checkpoint).await {
                    tracing::warn!(%task, %step, %error, "cannot complete the step");
                }
                if self.current.as_deref() == Some(step.as_str()) {
                    self.current = None;
                }
            }
        }
    }
}

/// Exit 0 completes the task with the command's result; anything else fails it with a code
/// scripts can match (a result printed before a failure is not kept).
pub fn outcome(status: Option<ExitStatus>, result: Option<Value>) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let Some(status) = status else {
        return failed("EXEC_LOST", "the command's exit status is unknown".into());
    };
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome::Completed(result),
        (Some(code), _) => failed(
            &format!("EXIT_{code}"),
            format!("the command exited with status {code}"),
        ),
        (None, Some(signal)) => failed(
            &format!("SIGNAL_{signal}"),
            format!("the command was killed by signal {signal}"),
        ),
        (None, None) => failed("EXEC_LOST", "the command ended without a status".into()),
    }
}

fn failed(code: &str, message: String) -> Outcome {
    Outcome::Failed(Failure {
        code: code.to_string(),
        message,
    })
}

async fn next_line<R>(lines: &mut Option<tokio::io::Lines<R>>) -> Option<String>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    match lines {
        // A read error (invalid UTF-8 is one) ends that stream like an end of file.
        Some(lines) => lines.next_line().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

async fn recv<T>(rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Writes a line to the command's stdin. A command that closed its stdin does not want
/// more; that is not an error of the task.
async fn write_line(stdin: &mut Option<ChildStdin>, line: &str) {
    if let Some(pipe) = stdin {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        if pipe.write_all(&bytes).await.is_err() || pipe.flush().await.is_err() {
            *stdin = None;
        }
    }
}

enum Signal {
    Term,
    Kill,
}

/// Signals the command's whole process group (its id is the shell's pid).
fn signal_group(pid: Option<u32>, signal: Signal) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    let signal = match signal {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. A negative pid
    // names the process group the child leads (spawned with process_group(0)); an ESRCH
    // for a group already gone is fine.
    unsafe {
        libc::kill(-pid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_statuses_become_outcomes() {
        assert_eq!(
            outcome(Some(ExitStatus::from_raw(0)), None),
            Outcome::Completed(None)
        );
        assert_eq!(
            outcome(Some(ExitStatus::from_raw(0)), Some(json!({"pr": 7}))),
            Outcome::Completed(Some(json!({"pr": 7})))
        );
        // Raw wait statuses: exit code in the high byte, signal number in the low bits.
        match outcome(Some(ExitStatus::from_raw(3 << 8)), Some(json!(1))) {
            Outcome::Failed(f) => assert_eq!(f.code, "EXIT_3"),
            other => panic!("{other:?}"),
        }
        match outcome(Some(ExitStatus::from_raw(libc::SIGTERM)), None) {
            Outcome::Failed(f) => assert_eq!(f.code, format!("SIGNAL_{}", libc::SIGTERM)),
            other => panic!("{other:?}"),
        }
        match outcome(None, None) {
            Outcome::Failed(f) => assert_eq!(f.code, "EXEC_LOST"),
            other => panic!("{other:?}"),
        }
    }
}
