//! `tether user`, `tether token`, `tether whoami`.

use clap::{Args, Subcommand};
use tether_types::api::{TokenInfo, User};
use tether_types::Role;

use super::connect::{ConnectArgs, Output};
use super::exit::Exit;
use super::render::{escape_controls, timestamp};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create {
        /// 1 to 64 of letters, digits, '_', '-', '.'.
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List users, by name.
    List {
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
    /// List live tokens (every user's for an admin, your own otherwise); never their secrets.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

impl UserCommand {
    pub fn connect(&self) -> &ConnectArgs {
        match self {
            UserCommand::Create { connect, .. } | UserCommand::List { connect } => connect,
        }
    }
}

impl TokenCommand {
    pub fn connect(&self) -> &ConnectArgs {
        match self {
            TokenCommand::Create { connect, .. }
            | TokenCommand::Revoke { connect, .. }
            | TokenCommand::List { connect } => connect,
        }
    }
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
        UserCommand::List { connect } => {
            let users = connect.client()?.list_users().await?.data;
            match connect.output {
                Output::Text => print!("{}", user_table(&users)),
                Output::Json => {
                    for user in &users {
                        println!("{}", serde_json::to_string(user)?);
                    }
                }
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
            eprintln!("revoked token {}", escape_controls(&id));
        }
        TokenCommand::List { connect } => {
            let tokens = connect.client()?.list_tokens().await?.data;
            match connect.output {
                Output::Text => print!("{}", token_table(&tokens)),
                Output::Json => {
                    for token in &tokens {
                        println!("{}", serde_json::to_string(token)?);
                    }
                }
            }
        }
    }
    Ok(Exit::OK)
}

fn user_table(users: &[User]) -> String {
    let mut out = format!("{:<24}  CREATED\n", "NAME");
    for user in users {
        out.push_str(&format!(
            "{:<24}  {}\n",
            escape_controls(&user.name),
            timestamp(&user.created_at)
        ));
    }
    out
}

fn token_table(tokens: &[TokenInfo]) -> String {
    let mut out = format!(
        "{:<14}  {:<16}  {:<6}  {:<23}  LAST USED\n",
        "ID", "USER", "ROLE", "CREATED"
    );
    for token in tokens {
        out.push_str(&format!(
            "{:<14}  {:<16}  {:<6}  {:<23}  {}\n",
            escape_controls(&token.id),
            escape_controls(&token.user),
            token.role.as_str(),
            timestamp(&token.created_at),
            token
                .last_used_at
                .map_or_else(|| "never".to_string(), |t| timestamp(&t))
        ));
    }
    out
}

pub async fn whoami(args: WhoamiArgs) -> anyhow::Result<Exit> {
    let me = args.connect.client()?.whoami().await?;
    match args.connect.output {
        Output::Text => println!("{} ({})", escape_controls(&me.user), me.role),
        Output::Json => println!("{}", serde_json::to_string(&me)?),
    }
    Ok(Exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_table_aligns_its_columns_and_says_never_for_an_unused_token() {
        let at = chrono::DateTime::from_timestamp_millis(1_764_000_000_000).unwrap();
        let token = |id: &str, role, used| TokenInfo {
            id: id.into(),
            user: "ann".into(),
            role,
            created_at: at,
            last_used_at: used,
        };
        let text = token_table(&[
            token("aaaaaaaaaaaa", Role::User, None),
            token("bbbbbbbbbbbb", Role::Worker, Some(at)),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        let column = lines[0].find("LAST USED").unwrap();
        assert_eq!(&lines[1][column..], "never");
        assert_eq!(&lines[2][column..], "2025-11-24 16:00:00 UTC");
        assert_eq!(lines[1].find("2025"), lines[0].find("CREATED"));
        assert_eq!(lines[2].find("2025"), lines[0].find("CREATED"));
    }
}
