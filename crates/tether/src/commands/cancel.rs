//! `tether cancel`.

use clap::Args;
use tether_types::TaskId;

use super::connect::{ConnectArgs, Output};
use super::exit::Exit;

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The task id (tsk_...).
    pub id: TaskId,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(args: CancelArgs) -> anyhow::Result<Exit> {
    let client = args.connect.client()?;
    let task = client.cancel(&args.id).await?;
    match args.connect.output {
        Output::Text => println!("{} {}", task.id, task.state),
        Output::Json => println!("{}", serde_json::to_string(&task)?),
    }
    Ok(Exit::OK)
}
