//! `tether cancel`.

use clap::Args;
use tether_types::{TaskId, TaskState};

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
    let task = match client.cancel(&args.id).await {
        Ok(task) => task,
        // Cancelling twice gets what was asked for: say so, and succeed.
        Err(error) if ended(&error) => {
            let task = client.task(&args.id).await?;
            if task.state != TaskState::Cancelled {
                return Err(error.into());
            }
            eprintln!("{} was already cancelled", task.id);
            task
        }
        Err(error) => return Err(error.into()),
    };
    match args.connect.output {
        Output::Text => println!("{} {}", task.id, task.state),
        Output::Json => println!("{}", serde_json::to_string(&task)?),
    }
    Ok(Exit::OK)
}

fn ended(error: &tether_client::Error) -> bool {
    matches!(
        error,
        tether_client::Error::Api {
            status: 409,
            code: tether_types::ErrorCode::TaskAlreadyTerminal,
            ..
        }
    )
}
