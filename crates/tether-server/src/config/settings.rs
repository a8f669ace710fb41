//! Every server setting, named once: its key in the config file, its flag, its environment
//! variable and its help. The CLI builds its flags from [`SETTINGS`], the loader checks file
//! keys against it, and a test holds docs/configuration.md to it.

use std::path::{Path, PathBuf};

use super::units::redact_url;
use super::ServerConfig;

/// One setting of [`ServerConfig`].
#[derive(Debug)]
pub struct Setting {
    /// The key in a config file, and the field's serde name.
    pub key: &'static str,
    /// The long flag, without `--`.
    pub flag: &'static str,
    pub env: &'static str,
    /// What `--help` shows after the flag.
    pub value_name: &'static str,
    pub kind: Kind,
    /// One line for `--help` and `tether config show`.
    pub help: &'static str,
}

/// How a value given as text (a flag or an environment variable) becomes a config value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// Like [`Kind::Text`], but never shown whole: see [`redact_url`].
    SecretUrl,
    Count,
    Bool,
    /// `"30s"`, `"500ms"`.
    Duration,
    /// Bytes: `16777216` or `"16MiB"`.
    Size,
}

const fn setting(
    key: &'static str,
    flag: &'static str,
    env: &'static str,
    value_name: &'static str,
    kind: Kind,
    help: &'static str,
) -> Setting {
    Setting {
        key,
        flag,
        env,
        value_name,
        kind,
        help,
    }
}

use Kind::*;

/// In the order `tether config show` and the docs list them.
#[rustfmt::skip]
pub const SETTINGS: &[Setting] = &[
    setting("listen", "listen", "TETHER_LISTEN", "ADDR", Text,
        "Address to listen on; port 0 picks a free port (printed at start)."),
    setting("data_dir", "data-dir", "TETHER_DATA_DIR", "DIR", Text,
        "Where the embedded database (and the first admin's token file) lives; created if missing."),
    setting("database", "database", "TETHER_DATABASE_URL", "URL", SecretUrl,
        "A PostgreSQL URL (postgres://user:password@host:port/db) to share with other nodes, instead of the embedded database."),
    setting("database_pool", "database-pool", "TETHER_DATABASE_POOL", "N", Count,
        "Connections to PostgreSQL each node keeps open at most."),
    setting("long_poll_timeout", "long-poll-timeout", "TETHER_LONG_POLL_TIMEOUT", "DURATION", Duration,
        "How long a long-poll read waits for data, e.g. 30s or 500ms."),
    setting("auth", "auth", "TETHER_AUTH", "MODE", Text,
        "Authentication: `token` (bearer tokens) or `off` (only on a loopback address)."),
    setting("max_append_bytes", "max-append-bytes", "TETHER_MAX_APPEND_BYTES", "BYTES", Size,
        "Largest accepted append body (larger gets 413), e.g. 16777216 or 16MiB."),
    setting("max_read_bytes", "max-read-bytes", "TETHER_MAX_READ_BYTES", "BYTES", Size,
        "Roughly the most bytes one read returns."),
    setting("lease", "lease", "TETHER_LEASE", "DURATION", Duration,
        "How long a worker's lease lasts without a heartbeat, e.g. 30s or 2s."),
    setting("reconcile_interval", "reconcile-interval", "TETHER_RECONCILE_INTERVAL", "DURATION", Duration,
        "How often the reconciler looks for expired leases."),
    setting("max_concurrent", "max-concurrent", "TETHER_MAX_CONCURRENT", "N", Count,
        "Running tasks per user (admission), unless set per user."),
    setting("header_read_timeout", "header-read-timeout", "TETHER_HEADER_READ_TIMEOUT", "DURATION", Duration,
        "How long a request's head may take to arrive (and a keep-alive connection may idle)."),
    setting("body_read_timeout", "body-read-timeout", "TETHER_BODY_READ_TIMEOUT", "DURATION", Duration,
        "How long a request's body may take to arrive once it has to wait for the network."),
    setting("max_connections", "max-connections", "TETHER_MAX_CONNECTIONS", "N", Count,
        "Connections served at once; live SSE subscribers do not count."),
    setting("sse_takeover", "sse-takeover", "TETHER_SSE_TAKEOVER", "BOOL", Bool,
        "Whether a live SSE response takes its socket over from the HTTP server (true or false)."),
    setting("disk_reserve_bytes", "disk-reserve-bytes", "TETHER_DISK_RESERVE_BYTES", "BYTES", Size,
        "Bytes the embedded store keeps aside in <data-dir>/tether.reserve for a start on a full disk; 0 keeps none."),
    setting("sse_max_duration", "sse-max-duration", "TETHER_SSE_MAX_DURATION", "DURATION", Duration,
        "How long an SSE connection lasts before the server closes it so the client reconnects."),
    setting("sse_keepalive", "sse-keepalive", "TETHER_SSE_KEEPALIVE", "DURATION", Duration,
        "Interval of SSE keep-alive comments while nothing happens."),
    setting("sse_park_after", "sse-park-after", "TETHER_SSE_PARK_AFTER", "DURATION", Duration,
        "How long a caught-up SSE subscriber waits before it parks (gives up its task until the stream moves)."),
    setting("nudges_per_minute", "nudges-per-minute", "TETHER_NUDGES_PER_MINUTE", "N", Count,
        "Nudges accepted per task per minute."),
];

impl Setting {
    pub fn named(key: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.key == key)
    }

    /// "`lease` (--lease, TETHER_LEASE)": what a validation message calls a setting.
    pub fn describe(&self) -> String {
        format!("`{}` (--{}, {})", self.key, self.flag, self.env)
    }

    /// A value given as text, typed as a file would write it. Text that does not fit the kind
    /// stays text, for the loader to refuse with the setting's own message.
    fn value(&self, text: &str) -> toml::Value {
        let text = text.trim();
        let typed = match self.kind {
            Count | Size => text.parse::<i64>().ok().map(toml::Value::Integer),
            Bool => text.parse::<bool>().ok().map(toml::Value::Boolean),
            Text | SecretUrl | Duration => None,
        };
        typed.unwrap_or_else(|| toml::Value::String(text.to_string()))
    }

    /// The default as a config file writes it, without quotes; `none` when unset.
    pub fn default_text(&self) -> String {
        match shown(&ServerConfig::default()).get(self.key) {
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "none".to_string(),
        }
    }
}

/// Where a value other than the file's came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Env,
    Flag,
}

/// A setting given on the command line or in the environment, as text.
#[derive(Clone)]
pub struct Given {
    pub setting: &'static Setting,
    pub origin: Origin,
    pub value: String,
}

impl Given {
    fn source(&self) -> String {
        match self.origin {
            Origin::Env => self.setting.env.to_string(),
            Origin::Flag => format!("--{}", self.setting.flag),
        }
    }
}

impl std::fmt::Debug for Given {
    /// Never shows a secret's value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = match self.setting.kind {
            SecretUrl => redact_url(&self.value),
            _ => self.value.clone(),
        };
        f.debug_struct("Given")
            .field("setting", &self.setting.key)
            .field("origin", &self.origin)
            .field("value", &value)
            .finish()
    }
}

/// Why a configuration was refused; each says where the bad value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{origin}: {message}")]
    Given { origin: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Whether `value` is acceptable for `key` alone: the message names only what is wrong.
fn check(key: &str, value: &toml::Value) -> Result<(), String> {
    let mut one = toml::Table::new();
    one.insert(key.to_string(), value.clone());
    toml::Value::Table(one)
        .try_into::<ServerConfig>()
        .map(drop)
        .map_err(|e| e.message().to_string())
}

impl ServerConfig {
    /// The configuration to run with: the defaults, then the config file (if any), then what
    /// was given in order (environment variables, then flags): a later value wins. An empty
    /// value counts as not given. Each value is checked where it is read, so an error names
    /// its file and key, its variable or its flag; the whole is then validated.
    pub fn load(file: Option<&Path>, given: &[Given]) -> Result<ServerConfig, ConfigError> {
        let mut table = toml::Table::new();
        if let Some(path) = file {
            let file_error = |message: String| ConfigError::File {
                path: path.to_path_buf(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let parsed: toml::Table =
                toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
            for (key, value) in parsed {
                if Setting::named(&key).is_none() {
                    return Err(file_error(format!(
                        "unknown key `{key}` (`tether config show` lists every key)"
                    )));
                }
                check(&key, &value).map_err(|m| file_error(format!("`{key}`: {m}")))?;
                table.insert(key, value);
            }
        }
        for given in given {
            if given.value.trim().is_empty() {
                continue;
            }
            let value = given.setting.value(&given.value);
            check(given.setting.key, &value).map_err(|message| ConfigError::Given {
                origin: given.source(),
                message,
            })?;
            table.insert(given.setting.key.to_string(), value);
        }
        let config: ServerConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// The configuration as a TOML file that reads back as the same (secrets aside: they are
    /// masked), every setting with its help; unset ones commented out.
    pub fn to_toml(&self) -> String {
        let values = shown(self);
        let mut out = String::from(
            "# Tether server configuration: every setting, with its value.\n\
             # Later layers win: this file (--config, TETHER_SERVER_CONFIG), then TETHER_*\n\
             # variables, then flags. Secrets are shown as ***.\n",
        );
        for setting in SETTINGS {
            out.push_str(&format!("\n# {}\n", setting.help));
            match values.get(setting.key) {
                Some(value) => out.push_str(&format!("{} = {value}\n", setting.key)),
                None => out.push_str(&format!("# {} =\n", setting.key)),
            }
        }
        out
    }
}

/// The configuration as TOML values, secrets masked (its `Serialize` masks them).
fn shown(config: &ServerConfig) -> toml::Table {
    // Serializing plain values into a table has no way to fail.
    toml::Table::try_from(config).expect("a server configuration is a TOML table")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as StdDuration;

    fn given(key: &str, origin: Origin, value: &str) -> Given {
        Given {
            setting: Setting::named(key).unwrap(),
            origin,
            value: value.to_string(),
        }
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn the_file_overrides_the_defaults_the_environment_the_file_and_flags_the_environment() {
        let (_dir, path) = file(
            "long_poll_timeout = \"5s\"\nlease = \"10s\"\nmax_concurrent = 3\n\
             sse_keepalive = \"2s\"\n",
        );
        let config = ServerConfig::load(
            Some(&path),
            &[
                given("lease", Origin::Env, "20s"),
                given("max_concurrent", Origin::Env, "4"),
                given("max_concurrent", Origin::Flag, "5"),
                given("sse_keepalive", Origin::Flag, ""),
            ],
        )
        .unwrap();
        assert_eq!(config.long_poll_timeout, StdDuration::from_secs(5), "file");
        assert_eq!(
            config.lease_ttl,
            StdDuration::from_secs(20),
            "env over file"
        );
        assert_eq!(config.max_concurrent, 5, "flag over env");
        assert_eq!(
            config.sse_keepalive,
            StdDuration::from_secs(2),
            "an empty flag is no flag"
        );
        assert_eq!(
            config.max_read_bytes,
            ServerConfig::default().max_read_bytes
        );
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused_by_name() {
        let (_dir, path) = file("lisen = \"0.0.0.0:80\"\n");
        let error = ServerConfig::load(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("tether.toml"), "{error}");
        assert!(error.contains("unknown key `lisen`"), "{error}");
        let (_dir, path) = file("[server]\nlisten = \"0.0.0.0:80\"\n");
        let error = ServerConfig::load(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown key `server`"), "{error}");
    }

    #[test]
    fn a_bad_value_is_refused_with_its_key_variable_or_flag() {
        let (_dir, path) = file("long_poll_timeout = \"soon\"\n");
        let error = ServerConfig::load(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`long_poll_timeout`: expected a duration like \"30s\""),
            "{error}"
        );
        let (_dir, path) = file("long_poll_timeout = 30\n");
        let error = ServerConfig::load(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("`long_poll_timeout`"), "{error}");
        assert!(error.contains("a duration like"), "{error}");
        let error = ServerConfig::load(None, &[given("lease", Origin::Env, "2 parsecs")])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("TETHER_LEASE: expected a duration"),
            "{error}"
        );
        let error = ServerConfig::load(None, &[given("max_read_bytes", Origin::Flag, "4MB")])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("--max-read-bytes: expected a size"),
            "{error}"
        );
        let error = ServerConfig::load(None, &[given("sse_takeover", Origin::Flag, "yes")])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("--sse-takeover: "), "{error}");
        let error = ServerConfig::load(None, &[given("database_pool", Origin::Env, "-1")])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("TETHER_DATABASE_POOL: "), "{error}");
    }

    #[test]
    fn every_setting_can_be_given_as_text_in_the_form_it_is_shown() {
        for setting in SETTINGS {
            let text = match setting.kind {
                SecretUrl => "postgres://u@h/db".to_string(),
                _ => setting.default_text(),
            };
            let loaded = ServerConfig::load(None, &[given(setting.key, Origin::Env, &text)]);
            assert!(loaded.is_ok(), "{}={text}: {loaded:?}", setting.env);
        }
    }

    #[test]
    fn the_table_names_every_field_of_the_configuration_once() {
        let config = ServerConfig {
            database: Some("postgres://u@h/db".into()),
            ..ServerConfig::default()
        };
        let shown = shown(&config);
        let keys: Vec<&str> = shown.keys().map(String::as_str).collect();
        let mut table: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        assert_eq!(keys.len(), table.len(), "{keys:?}");
        let mut sorted = keys.clone();
        sorted.sort();
        table.sort();
        assert_eq!(sorted, table);
    }

    #[test]
    fn the_shown_configuration_reads_back_as_the_same() {
        let config = ServerConfig {
            listen: "0.0.0.0:80".parse().unwrap(),
            database: Some("postgres://tether@db/tether".into()),
            max_append_bytes: 1000,
            sse_park_after: StdDuration::from_micros(1500),
            sse_takeover: false,
            ..ServerConfig::default()
        };
        let text = config.to_toml();
        let (_dir, path) = file(&text);
        assert_eq!(
            ServerConfig::load(Some(&path), &[]).unwrap(),
            config,
            "{text}"
        );
        let (_dir, path) = file(&ServerConfig::default().to_toml());
        assert_eq!(
            ServerConfig::load(Some(&path), &[]).unwrap(),
            ServerConfig::default()
        );
    }

    #[test]
    fn the_database_password_is_never_shown() {
        let config = ServerConfig {
            database: Some("postgres://tether:s3cret@db/tether".into()),
            ..ServerConfig::default()
        };
        for shown in [format!("{config:?}"), config.to_toml()] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("postgres://tether:***@db/tether"), "{shown}");
        }
        let flag = given(
            "database",
            Origin::Flag,
            "postgres://tether:s3cret@db/tether",
        );
        assert!(!format!("{flag:?}").contains("s3cret"));
    }
}
