//! `tether status`: a task's state and status snapshot.

use clap::Args;
use futures::StreamExt;
use tether_client::{Client, Item, Transport};
use tether_types::{Task, TaskId};

use super::connect::{ConnectArgs, Output};
use super::exit::Exit;
use super::interrupt::{on_ctrl_c, Interrupt};
use super::render::{escape_controls, preview, timestamp, timestamp_text};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The task id (tsk_...).
    pub id: TaskId,
    /// Wait until the task has ended, then print; exit code as for `watch`.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<Exit> {
    let interrupt = on_ctrl_c();
    let client = args.connect.client()?;
    let mut task = client.task(&args.id).await?;
    let exit = if args.wait {
        if !task.state.is_terminal() {
            match wait_for_end(&client, &task, interrupt).await? {
                Some(exit) => return Ok(exit),
                None => task = client.task(&args.id).await?,
            }
        }
        Exit::for_state(task.state)
    } else {
        Exit::OK
    };
    match args.connect.output {
        Output::Text => print!("{}", describe(&task)),
        Output::Json => println!("{}", serde_json::to_string(&task)?),
    }
    Ok(exit)
}

/// Long-polls the task's events from where its snapshot ends until the stream closes, so the
/// status printed afterwards includes the terminal event. `Some` is an early exit (Ctrl-C).
async fn wait_for_end(
    client: &Client,
    task: &Task,
    mut interrupt: Interrupt,
) -> anyhow::Result<Option<Exit>> {
    let after = task.status.as_ref().map(|s| s.offset);
    let mut events = client.subscribe_with(&task.id, after, true, Transport::LongPoll);
    loop {
        let item = tokio::select! {
            biased;
            _ = &mut interrupt => return Ok(Some(Exit::INTERRUPTED)),
            item = events.next() => item,
        };
        match item {
            None => return Ok(None),
            Some(Ok(Item::Reconnecting {
                attempt: 1, cause, ..
            })) => {
                eprintln!("connection lost ({cause}); retrying");
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
        }
    }
}

/// The readable form: a headline, then one `name: value` line per known fact.
fn describe(task: &Task) -> String {
    let mut out = format!("{} {} (attempt {})\n", task.id, task.state, task.attempt);
    // Every value may come from a user or an agent: escaped, as on every human line.
    let mut field = |name: &str, value: String| {
        out.push_str(&format!("  {name:<12}{}\n", escape_controls(&value)))
    };
    field("description", preview(&task.spec.description));
    if let Some(repo) = &task.spec.repository {
        field("repository", repo.clone());
    }
    field("owner", task.owner.clone());
    field("created", timestamp(&task.created_at));
    let Some(status) = &task.status else {
        return out;
    };
    if let Some(step) = &status.current_step {
        field("step", step.clone());
    }
    if status.turns > 0 {
        field("turns", status.turns.to_string());
    }
    if let Some(activity) = &status.current_activity {
        field("activity", preview(activity));
    }
    if let Some(milestone) = &status.last_milestone {
        field("milestone", preview(milestone));
    }
    if status.cost_usd > 0.0 || status.input_tokens > 0 || status.output_tokens > 0 {
        field(
            "cost",
            format!(
                "${:.4} ({} in / {} out tokens)",
                status.cost_usd, status.input_tokens, status.output_tokens
            ),
        );
    }
    if let Some(failure) = &status.failure {
        let failure = if failure.message.is_empty() {
            failure.code.clone()
        } else {
            format!("{}: {}", failure.code, failure.message)
        };
        field("failure", failure);
    }
    if let Some(result) = &status.result {
        field("result", super::render::result_text(result));
    }
    for (name, value) in [
        ("started", &status.started_at),
        ("finished", &status.finished_at),
        ("updated", &status.updated_at),
    ] {
        if let Some(value) = value {
            field(name, timestamp_text(value));
        }
    }
    field("events", status.events.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_types::task::Failure;
    use tether_types::{TaskSpec, TaskState, TaskStatus};

    #[test]
    fn the_readable_status_shows_state_step_cost_failure_and_times_in_one_format() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let task = Task {
            id: TaskId::from_random(7),
            owner: "alice".into(),
            state: TaskState::Failed,
            attempt: 2,
            spec: TaskSpec {
                description: "fix the flaky test".into(),
                ..TaskSpec::default()
            },
            stream_url: "/v1/stream/tasks/x".into(),
            created_at: now,
            updated_at: now,
            status: Some(TaskStatus {
                current_step: Some("agent".into()),
                turns: 7,
                cost_usd: 0.5,
                input_tokens: 10,
                output_tokens: 20,
                failure: Some(Failure {
                    code: "AGENT_CRASHED".into(),
                    message: "exit 1".into(),
                }),
                events: 12,
                // As the server writes event times, with another offset for good measure.
                started_at: Some("2026-11-21T10:00:01.250Z".into()),
                finished_at: Some("2026-11-21T11:00:02+01:00".into()),
                ..TaskStatus::default()
            }),
        };
        let text = describe(&task);
        assert!(
            text.starts_with(&format!("{} FAILED (attempt 2)\n", task.id)),
            "{text}"
        );
        for want in [
            "  created     2026-11-21 10:00:00 UTC\n",
            "  started     2026-11-21 10:00:01 UTC\n",
            "  finished    2026-11-21 10:00:02 UTC\n",
            "  step        agent\n",
            "  turns       7\n",
            "  cost        $0.5000 (10 in / 20 out tokens)\n",
            "  failure     AGENT_CRASHED: exit 1\n",
            "  events      12\n",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
    }
}
