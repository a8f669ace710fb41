//! The client commands: each parses its arguments, calls the API through `tether-client`,
//! and prints data on stdout and messages on stderr.

mod cancel;
pub mod config;
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
mod summary;
mod ui;
mod users;
mod watch;

use std::io::Write;

use clap::Subcommand;

pub use connect::{ConnectArgs, Output};
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
    /// Print a one-time login link to the web UI (and open it with --open).
    Ui(ui::UiArgs),
}

/// Runs a client command and ends the process with its exit code (DESIGN of the CLI: 0 done,
/// 1 the task did not complete, 2 usage/auth/not found, 3 other failures, 130 Ctrl-C).
/// Success returns normally so the caller can shut down in order.
pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    let output = command.connect().map_or(Output::Text, |c| c.output);
    let given = command
        .connect()
        .map(|c| (c.server.clone(), c.token.clone()));
    let exit = match execute(command).await {
        Ok(exit) => exit,
        // The reader went away (`tether events ID | head`): nothing left to say to anyone.
        Err(error) if is_broken_pipe(&error) => Exit::OK,
        Err(error) => {
            let hint = unauthorized_hint(&error, given);
            report_error(&error, hint.as_deref(), output);
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
        ClientCommand::Ui(args) => ui::run(args).await,
    }
}

impl ClientCommand {
    /// The connection options, which say how to print an error too.
    fn connect(&self) -> Option<&ConnectArgs> {
        Some(match self {
            ClientCommand::Submit(a) | ClientCommand::Run(a) => &a.connect,
            ClientCommand::Watch(a) => &a.connect,
            ClientCommand::Status(a) => &a.connect,
            ClientCommand::Events(a) => &a.connect,
            ClientCommand::List(a) => &a.connect,
            ClientCommand::Cancel(a) => &a.connect,
            ClientCommand::Nudge(a) => &a.connect,
            ClientCommand::Worker(a) => &a.connect,
            ClientCommand::Export(a) => &a.connect,
            ClientCommand::User(c) => c.connect(),
            ClientCommand::Token(c) => c.connect(),
            ClientCommand::Whoami(a) => &a.connect,
            ClientCommand::Ui(a) => &a.connect,
        })
    }
}

/// Prints an error on stderr: `error: ...` for people, or with `--output json` the API's own
/// error shape, `{"error":{"code","message","request_id"}}`, so a script reads one format
/// whatever failed. Text from the server may quote input: control characters are escaped.
fn report_error(error: &anyhow::Error, hint: Option<&str>, output: Output) {
    // Each part escaped on its own, so the line between them stays a line break.
    let text = std::iter::once(format!("{error:#}"))
        .chain(hint.map(str::to_string))
        .map(|part| render::escape_controls(&part).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    match output {
        Output::Text => eprintln!("error: {text}"),
        Output::Json => {
            let (code, request_id) = match error.downcast_ref::<tether_client::Error>() {
                Some(
                    tether_client::Error::Api {
                        code, request_id, ..
                    }
                    | tether_client::Error::Stream {
                        code, request_id, ..
                    },
                ) => (code.to_string(), request_id.clone()),
                Some(tether_client::Error::Network(_) | tether_client::Error::Interrupted(_)) => {
                    ("UNREACHABLE".to_string(), None)
                }
                _ if Exit::for_error(error) == Exit::USAGE => ("USAGE_ERROR".to_string(), None),
                _ => ("CLI_ERROR".to_string(), None),
            };
            let body = serde_json::json!({
                "error": { "code": code, "message": text, "request_id": request_id }
            });
            eprintln!("{body}");
        }
    }
}

/// After a 401: which token was refused, or where the CLI looked and found none.
fn unauthorized_hint(
    error: &anyhow::Error,
    given: Option<(Option<String>, Option<String>)>,
) -> Option<String> {
    let refused = matches!(
        error.downcast_ref::<tether_client::Error>(),
        Some(tether_client::Error::Api { status: 401, .. })
    );
    if !refused {
        return None;
    }
    let env = config::process_env;
    let places = config::token_places(&env).join(", ");
    let (server, token) = given.unwrap_or_default();
    let resolved = config::resolve(server, token, &env).ok();
    Some(match resolved.and_then(|r| r.token_source) {
        Some(source) => format!("the token came from {source}; the CLI looks for one in: {places}"),
        None => format!("no token found; the CLI looked in: {places}"),
    })
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
