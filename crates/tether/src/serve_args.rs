//! The server's flags, built from the settings table (`tether_server::config::SETTINGS`) so
//! that a setting is named once: each flag takes its environment variable, has no clap
//! default (a flag not given must not hide the config file's value), and reaches the loader
//! as text with where it came from.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, FromArgMatches};
use tether_server::config::{Given, Origin, SETTINGS};
use tether_server::ServerConfig;

/// Not `TETHER_CONFIG`: that names the CLI's own file (`url`, `token`), which the server
/// would refuse.
pub const CONFIG_ENV: &str = "TETHER_SERVER_CONFIG";
const CONFIG_ID: &str = "config";

#[derive(Clone, Debug, Default)]
pub(crate) struct ServeArgs {
    config: Option<PathBuf>,
    given: Vec<Given>,
}

impl ServeArgs {
    /// The configuration to run with, validated.
    pub(crate) fn load(&self) -> anyhow::Result<ServerConfig> {
        Ok(ServerConfig::load(self.config.as_deref(), &self.given)?)
    }
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let config = matches
            .get_one::<PathBuf>(CONFIG_ID)
            .filter(|p| !p.as_os_str().is_empty())
            .cloned();
        let given = SETTINGS
            .iter()
            .filter_map(|setting| {
                let value = matches.get_one::<String>(setting.key)?.clone();
                let origin = match matches.value_source(setting.key) {
                    Some(ValueSource::EnvVariable) => Origin::Env,
                    _ => Origin::Flag,
                };
                Some(Given {
                    setting,
                    origin,
                    value,
                })
            })
            .collect();
        Ok(ServeArgs { config, given })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = ServeArgs::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for ServeArgs {
    fn augment_args(command: Command) -> Command {
        let config = Arg::new(CONFIG_ID)
            .long("config")
            .env(CONFIG_ENV)
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help(
                "A TOML file of settings (keys as in `tether config show`); \
                 variables and flags override it.",
            );
        SETTINGS
            .iter()
            .fold(command.arg(config), |command, setting| {
                command.arg(
                    Arg::new(setting.key)
                        .long(setting.flag)
                        .env(setting.env)
                        .value_name(setting.value_name)
                        .help(format!(
                            "{} [default: {}]",
                            setting.help,
                            setting.default_text()
                        )),
                )
            })
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}
