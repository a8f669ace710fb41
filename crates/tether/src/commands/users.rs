//! `tether user`, `tether token`, `tether whoami`.

use clap::{Args, Subcommand};
use tether_types::Role;

use super::connect::{ConnectArgs, Output};
use super::exit::Exit;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create {
        /// 1 to 64 of letters, digits, '_', '-', '.'.
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token; prints only its secret on stdout, which is shown this once.
    Create {
        #[arg(long, value_name = "NAME")]
        user: String,
        /// admin, user or worker.
        #[arg(long, value_name = "ROLE")]
        role: Role,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Revoke a token by its id (not its secret).
    Revoke {
        id: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(Debug, Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn user(command: UserCommand) -> anyhow::Result<Exit> {
    match command {
        UserCommand::Create { name, connect } => {
            let user = connect.client()?.create_user(&name).await?;
            match connect.output {
                Output::Text => println!("{}", user.name),
                Output::Json => println!("{}", serde_json::to_string(&user)?),
            }
        }
    }
    Ok(Exit::OK)
}

pub async fn token(command: TokenCommand) -> anyhow::Result<Exit> {
    match command {
        TokenCommand::Create {
            user,
            role,
            connect,
        } => {
            let issued = connect.client()?.create_token(&user, role).await?;
            match connect.output {
                Output::Text => {
                    eprintln!(
                        "token {} for user {} with role {}; this is the only time its secret is shown",
                        issued.info.id, issued.info.user, issued.info.role
                    );
                    println!("{}", issued.token);
                }
                Output::Json => println!("{}", serde_json::to_string(&issued)?),
            }
        }
        TokenCommand::Revoke { id, connect } => {
            connect.client()?.revoke_token(&id).await?;
            eprintln!("revoked token {id}");
        }
    }
    Ok(Exit::OK)
}

pub async fn whoami(args: WhoamiArgs) -> anyhow::Result<Exit> {
    let me = args.connect.client()?.whoami().await?;
    match args.connect.output {
        Output::Text => println!("{} ({})", me.user, me.role),
        Output::Json => println!("{}", serde_json::to_string(&me)?),
    }
    Ok(Exit::OK)
}
