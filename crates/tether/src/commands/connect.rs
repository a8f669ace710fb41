//! The options every client command shares: which server, which token, which output.

use clap::{Args, ValueEnum};
use tether_client::Client;

use super::config;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Readable lines.
    #[default]
    Text,
    /// JSON: one object per line where a command prints several.
    Json,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Server URL [default: `url` in the config file, else http://127.0.0.1:4437].
    #[arg(long, env = "TETHER_URL", value_name = "URL")]
    pub server: Option<String>,
    /// API token [default: `token` in the config file, else $TETHER_DATA_DIR/admin.token].
    #[arg(
        long,
        env = "TETHER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// How to print data.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

impl ConnectArgs {
    /// A client for the resolved server and token.
    pub fn client(&self) -> anyhow::Result<Client> {
        let resolved = config::resolve(
            self.server.clone(),
            self.token.clone(),
            &config::process_env,
        )?;
        Ok(Client::new(&resolved.url, resolved.token.as_deref())?)
    }

    /// The server URL the client uses.
    pub fn resolved_url(&self) -> anyhow::Result<String> {
        let resolved = config::resolve(
            self.server.clone(),
            self.token.clone(),
            &config::process_env,
        )?;
        Ok(resolved.url)
    }
}
