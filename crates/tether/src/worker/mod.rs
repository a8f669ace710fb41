//! The workers that ship with Tether: `--exec` runs a command per task, `--demo` a scripted
//! coding agent. Both run on the worker runtime of `tether-client`.

pub mod demo;
pub mod exec;
pub mod lines;
pub mod script;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tether_client::worker::{run_worker, Runner, WorkerConfig};

use crate::commands::{ConnectArgs, Exit};

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("kind").required(true).args(["exec", "demo"]))]
pub struct WorkerArgs {
    /// Run this shell command for each task (through `sh -c`).
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Run a scripted coding-agent simulation instead of a command.
    #[arg(long)]
    pub demo: bool,
    /// Most tasks run at once.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// On cancel, how long a command has between SIGTERM and SIGKILL.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,
    /// On Ctrl-C or SIGTERM, how long running tasks may go on before they are stopped (their
    /// leases then expire and the tasks are retried).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub drain: Duration,
    /// How long one claim waits on the server for a task.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub poll: Duration,
    /// The worker's name in the server's records [default: worker-<pid>].
    #[arg(long)]
    pub name: Option<String>,
    /// Demo pacing: the default runs a task in about a minute; 1 is eight times faster, 100
    /// finishes a task in well under a second.
    #[arg(long, conflicts_with = "exec", default_value = demo::DEFAULT_SPEED, value_parser = demo::parse_speed)]
    pub speed: f64,
    /// Demo fault: end the worker process in the middle of STEP (in task attempt ATTEMPT
    /// only, when given).
    #[arg(long, conflicts_with = "exec", value_name = "STEP[:ATTEMPT]")]
    pub crash_at: Option<demo::CrashAt>,
    /// Demo fault: fail the task with DEMO_FAILURE in STEP.
    #[arg(long, conflicts_with = "exec", value_name = "STEP", value_parser = demo::parse_fail_at)]
    pub fail_at: Option<String>,
    /// Read the token from this file (its first line) rather than from `--token`, which
    /// every local user can read in the process list. `TETHER_TOKEN` is as safe.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

impl WorkerArgs {
    fn runner(&self) -> Arc<dyn Runner> {
        match &self.exec {
            Some(command) => Arc::new(exec::ExecRunner {
                command: command.clone(),
                grace: self.grace,
            }),
            None => Arc::new(demo::DemoRunner {
                speed: self.speed,
                crash_at: self.crash_at.clone(),
                fail_at: self.fail_at.clone(),
            }),
        }
    }

    fn config(&self) -> WorkerConfig {
        let mut config = WorkerConfig {
            concurrency: usize::from(self.concurrency),
            claim_wait: self.poll,
            drain: self.drain,
            ..WorkerConfig::default()
        };
        if let Some(name) = &self.name {
            config.name = name.clone();
        }
        config
    }
}

/// Whether a token was given as `--token` on the command line, where `ps` shows it to every
/// local user (a worker runs for days, so the window is wide).
fn token_in_argv(args: impl IntoIterator<Item = OsString>) -> bool {
    args.into_iter()
        .take_while(|a| a != "--")
        .any(|a| a == "--token" || a.to_string_lossy().starts_with("--token="))
}

/// The first line of a token file, without its line ending.
fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        anyhow::bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

/// Runs the worker until Ctrl-C or SIGTERM.
pub async fn run(mut args: WorkerArgs) -> anyhow::Result<Exit> {
    if token_in_argv(std::env::args_os()) {
        tracing::warn!(
            "--token puts the secret in the process list, readable by every local user; \
             use TETHER_TOKEN or --token-file PATH instead"
        );
    }
    if let Some(path) = &args.token_file {
        args.connect.token = Some(read_token_file(path)?);
    }
    let client = args.connect.client()?;
    let config = args.config();
    eprintln!(
        "tether worker {} on {} ({} at a time); Ctrl-C to stop",
        config.name,
        client.base_url(),
        config.concurrency
    );
    run_worker(client, config, args.runner(), crate::cli::shutdown_signal()).await?;
    Ok(Exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: WorkerArgs,
    }

    fn parse(args: &[&str]) -> Result<WorkerArgs, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("worker").chain(args.iter().copied()))
            .map(|w| w.args)
    }

    #[test]
    fn a_worker_runs_either_a_command_or_the_demo() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--exec", "true", "--demo"]).is_err());
        let exec = parse(&[
            "--exec",
            "./agent.sh",
            "--concurrency",
            "4",
            "--grace",
            "2s",
        ])
        .unwrap();
        assert_eq!(exec.exec.as_deref(), Some("./agent.sh"));
        assert_eq!(exec.config().concurrency, 4);
        assert_eq!(exec.grace, Duration::from_secs(2));
        let demo = parse(&["--demo", "--speed", "100", "--crash-at", "clone:1"]).unwrap();
        assert_eq!(demo.speed, 100.0);
        assert_eq!(demo.crash_at.unwrap().attempt, Some(1));
    }

    #[test]
    fn a_token_on_the_command_line_is_noticed_and_a_token_file_is_read() {
        let argv = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(token_in_argv(argv(&[
            "tether", "worker", "--token", "tk_x"
        ])));
        assert!(token_in_argv(argv(&["tether", "worker", "--token=tk_x"])));
        assert!(!token_in_argv(argv(&[
            "tether",
            "worker",
            "--token-file",
            "t"
        ])));
        assert!(!token_in_argv(argv(&[
            "tether", "worker", "--exec", "x", "--", "--token"
        ])));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "tk_secret\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "tk_secret");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token_file(&path).is_err());
        assert!(read_token_file(&dir.path().join("missing")).is_err());
        let parsed = parse(&["--demo", "--token-file", "/run/secrets/t"]).unwrap();
        assert_eq!(parsed.token_file, Some(PathBuf::from("/run/secrets/t")));
    }

    #[test]
    fn demo_faults_need_the_demo_and_a_known_step() {
        assert!(parse(&["--exec", "x", "--crash-at", "clone"]).is_err());
        assert!(parse(&["--demo", "--fail-at", "deploy"]).is_err());
        assert!(parse(&["--demo", "--concurrency", "0"]).is_err());
        assert!(parse(&["--demo", "--fail-at", "test"]).is_ok());
    }
}
