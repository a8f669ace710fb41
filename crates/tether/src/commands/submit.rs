//! `tether submit`: create a task, optionally watch it.

use clap::Args;
use serde_json::{Map, Value};
use tether_types::TaskSpec;

use super::connect::{ConnectArgs, Output};
use super::exit::Exit;
use super::watch;

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// What the task should do.
    pub description: String,
    /// Repository the task works on.
    #[arg(long = "repo", value_name = "R")]
    pub repository: Option<String>,
    /// Task type, for workers that run several kinds.
    #[arg(long = "type", value_name = "T")]
    pub task_type: Option<String>,
    /// Most agent turns (1-500).
    #[arg(long, value_name = "N")]
    pub max_turns: Option<u32>,
    /// Most spend in US dollars (0.01-100).
    #[arg(long = "max-budget", value_name = "USD")]
    pub max_budget_usd: Option<f64>,
    /// How many times the task may run when workers lose it (1-10; default 3).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Keep longer previews of tool input and output in the events.
    #[arg(long)]
    pub trace: bool,
    /// Repeating a submit with the same key gives back the first task instead of a second.
    #[arg(long, value_name = "K")]
    pub idempotency_key: Option<String>,
    /// Free-form metadata, `key=value`; repeatable.
    #[arg(long = "meta", value_name = "K=V", value_parser = parse_meta)]
    pub metadata: Vec<(String, String)>,
    /// Follow the task after submitting it, as `tether watch` does.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

impl SubmitArgs {
    fn spec(&self) -> TaskSpec {
        let metadata: Map<String, Value> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        TaskSpec {
            description: self.description.clone(),
            repository: self.repository.clone(),
            task_type: self.task_type.clone(),
            max_turns: self.max_turns,
            max_budget_usd: self.max_budget_usd,
            max_attempts: self.max_attempts,
            trace: self.trace,
            metadata,
        }
    }
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<Exit> {
    let client = args.connect.client()?;
    let (task, replayed) = client
        .submit(&args.spec(), args.idempotency_key.as_deref())
        .await?;
    if replayed {
        eprintln!(
            "this idempotency key was used before: {} is the task it created",
            task.id
        );
    }
    if args.watch {
        // Watch prints the timeline on stdout; the id goes to stderr so stdout stays one kind
        // of data.
        eprintln!("submitted {}", task.id);
        return watch::follow(&client, &task.id, None, args.connect.output).await;
    }
    match args.connect.output {
        Output::Text => println!("{}", task.id),
        Output::Json => println!("{}", serde_json::to_string(&task)?),
    }
    Ok(Exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SubmitArgs,
    }

    #[test]
    fn flags_fill_the_spec_and_meta_pairs_become_metadata() {
        let parsed = Wrapper::try_parse_from([
            "submit",
            "fix the test",
            "--repo",
            "org/r",
            "--type",
            "bugfix",
            "--max-turns",
            "9",
            "--max-budget",
            "1.5",
            "--trace",
            "--meta",
            "team=infra",
            "--meta",
            "ticket=a=b",
        ])
        .unwrap();
        let spec = parsed.args.spec();
        assert_eq!(spec.description, "fix the test");
        assert_eq!(spec.repository.as_deref(), Some("org/r"));
        assert_eq!(spec.task_type.as_deref(), Some("bugfix"));
        assert_eq!(spec.max_turns, Some(9));
        assert_eq!(spec.max_budget_usd, Some(1.5));
        assert!(spec.trace);
        assert_eq!(spec.metadata["team"], "infra");
        assert_eq!(spec.metadata["ticket"], "a=b");
    }

    #[test]
    fn a_meta_without_an_equals_sign_is_a_usage_error() {
        assert!(Wrapper::try_parse_from(["submit", "d", "--meta", "novalue"]).is_err());
    }
}
