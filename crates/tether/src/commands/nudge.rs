//! `tether nudge`: a short message to a running task's agent.

use clap::Args;
use tether_types::TaskId;

use super::connect::{ConnectArgs, Output};
use super::exit::Exit;

#[derive(Debug, Args)]
pub struct NudgeArgs {
    /// The task id (tsk_...).
    pub id: TaskId,
    /// What to tell the agent (at most 2000 characters).
    pub message: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(args: NudgeArgs) -> anyhow::Result<Exit> {
    let client = args.connect.client()?;
    let created = client.nudge(&args.id, &args.message).await?;
    match args.connect.output {
        Output::Text => println!("{}", created.id),
        Output::Json => println!("{}", serde_json::to_string(&created)?),
    }
    Ok(Exit::OK)
}
