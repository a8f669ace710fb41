//! The client commands: each parses its arguments, calls the API through `tether-client`,
//! and prints data on stdout and messages on stderr.

mod cancel;
mod config;
mod connect;
mod events;
mod exit;
mod export;
mod interrupt;
mod list;
mod nudge;
mod printer;
mod render;
mod status;
mod submit;
mod users;
mod watch;

use std::io::Write;

use clap::Subcommand;

pub use connect::ConnectArgs;
pub use exit::Exit;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit a task; prints its id (the whole task with --output json).
    Submit(submit::SubmitArgs),
    /// Submit a task and follow it until it ends (`submit --watch`).
    ///
    /// Exit code 0 when the task completed; 1 when it failed, was cancelled or timed out.
    Run(submit::SubmitArgs),
    /// Follow a task's events live until it ends.
    ///
    /// Exit code 0 when the task completed; 1 when it failed, was cancelled or timed out;
    /// 2 for usage, auth or not-found errors; 130 on Ctrl-C.
    Watch(watch::WatchArgs),
    /// Show a task's state and status snapshot.
    Status(status::StatusArgs),
    /// Print a task's events, one JSON object per line.
    Events(events::EventsArgs),
    /// List tasks, newest first.
    List(list::ListArgs),
    /// Cancel a task.
    Cancel(cancel::CancelArgs),
    /// Send a short message to a running task's agent; prints the nudge's id.
    Nudge(nudge::NudgeArgs),
    /// Run tasks: claim them from the server and run a command (or the demo) for each.
    Worker(Box<crate::worker::WorkerArgs>),
    /// Write a task and all its events as JSON lines.
    Export(export::ExportArgs),
    /// Manage users (admin).
    #[command(subcommand)]
    User(users::UserCommand),
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Token(users::TokenCommand),
    /// Show which user and role the token acts as.
    Whoami(users::WhoamiArgs),
}

/// Runs a client command and ends the process with its exit code (DESIGN of the CLI: 0 done,
/// 1 the task did not complete, 2 usage/auth/not found, 3 other failures, 130 Ctrl-C).
/// Success returns normally so the caller can shut down in order.
pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    let exit = match execute(command).await {
        Ok(exit) => exit,
        // The reader went away (`tether events ID | head`): nothing left to say to anyone.
        Err(error) if is_broken_pipe(&error) => Exit::OK,
        Err(error) => {
            eprintln!("error: {error:#}");
            Exit::for_error(&error)
        }
    };
    // Data written to a pipe must be out before the process ends.
    let _ = std::io::stdout().flush();
    if exit == Exit::OK {
        Ok(())
    } else {
        std::process::exit(exit.code())
    }
}

async fn execute(command: ClientCommand) -> anyhow::Result<Exit> {
    match command {
        ClientCommand::Submit(args) => submit::run(args).await,
        ClientCommand::Run(mut args) => {
            args.watch = true;
            submit::run(args).await
        }
        ClientCommand::Watch(args) => watch::run(args).await,
        ClientCommand::Status(args) => status::run(args).await,
        ClientCommand::Events(args) => events::run(args).await,
        ClientCommand::List(args) => list::run(args).await,
        ClientCommand::Cancel(args) => cancel::run(args).await,
        ClientCommand::Nudge(args) => nudge::run(args).await,
        ClientCommand::Worker(args) => crate::worker::run(*args).await,
        ClientCommand::Export(args) => export::run(args).await,
        ClientCommand::User(command) => users::user(command).await,
        ClientCommand::Token(command) => users::token(command).await,
        ClientCommand::Whoami(args) => users::whoami(args).await,
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
