//! Server configuration: typed values with defaults (here, and nowhere else), layered from a
//! TOML file, `TETHER_*` variables and flags ([`settings`]), checked once at start.

mod settings;
mod units;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use settings::{ConfigError, Given, Kind, Origin, Setting, SETTINGS};
pub use units::{format_duration, format_size, parse_size, redact_url};

/// Where the embedded database lives unless configured: the CLI looks there for the admin
/// token too.
pub const DEFAULT_DATA_DIR: &str = "./tether-data";

/// Whether requests must carry a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Bearer tokens (the default).
    Token,
    /// Every request acts as the built-in admin; only allowed on a loopback address.
    Off,
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "token" => Ok(AuthMode::Token),
            "off" => Ok(AuthMode::Off),
            other => Err(format!(
                "unknown auth mode {other:?}: use `token` (the default) or `off`"
            )),
        }
    }
}

/// Every field is a setting of [`SETTINGS`] (a test holds them together). `Debug` and
/// `Serialize` mask the database password; `Serialize` is for showing a configuration.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where the embedded database lives, and the first admin's token file in either mode.
    pub data_dir: PathBuf,
    /// A PostgreSQL URL: share that database with other nodes instead of the embedded one.
    #[serde(with = "units::secret_url", skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Connections to PostgreSQL this node keeps open at most.
    pub database_pool: usize,
    /// How long a long-poll waits for data before answering 204.
    #[serde(with = "units::duration")]
    pub long_poll_timeout: Duration,
    pub auth: AuthMode,
    /// Largest accepted append or initial body; larger gets 413.
    #[serde(with = "units::size")]
    pub max_append_bytes: usize,
    /// Roughly the largest body one read returns (at least one whole record).
    #[serde(with = "units::size")]
    pub max_read_bytes: usize,
    /// SSE connections, of streams and of tasks, are closed after this long so clients
    /// reconnect (protocol 10.2) and show their token again: a revoked token's feed ends.
    #[serde(with = "units::duration")]
    pub sse_max_duration: Duration,
    /// Interval of SSE keep-alive comments while nothing happens.
    #[serde(with = "units::duration")]
    pub sse_keepalive: Duration,
    /// An SSE subscriber that has caught up and heard nothing for this long gives up its
    /// task until the stream moves (its connection and position stay).
    #[serde(with = "units::duration")]
    pub sse_park_after: Duration,
    /// How long a worker's lease lasts without a heartbeat.
    #[serde(rename = "lease", with = "units::duration")]
    pub lease_ttl: Duration,
    /// How often the reconciler looks for expired leases.
    #[serde(with = "units::duration")]
    pub reconcile_interval: Duration,
    /// Running tasks per user, unless the user's own limit says otherwise.
    pub max_concurrent: u64,
    /// Nudges accepted per task per minute.
    pub nudges_per_minute: u32,
    /// A request's head must arrive within this, and a keep-alive connection that sends no
    /// new request for this long is closed: a client that trickles its headers (slowloris)
    /// holds a connection no longer.
    #[serde(with = "units::duration")]
    pub header_read_timeout: Duration,
    /// A request's body must have arrived this long after it first had to wait for the
    /// network; a body that stops (or a chunked one that never ends) ends the request.
    #[serde(with = "units::duration")]
    pub body_read_timeout: Duration,
    /// Connections served at once. Beyond it the server stops accepting until one closes,
    /// and new clients wait in the listen backlog. A live SSE response that took its socket
    /// over (see `connection`) leaves the count: it was admitted with a token, costs a few
    /// hundred bytes, and ten thousand idle subscribers must fit beside the cap.
    pub max_connections: usize,
    /// Whether a live SSE response takes its socket over from the HTTP server (fewer bytes
    /// per idle subscriber); off, SSE bodies are served by hyper like any other response.
    pub sse_takeover: bool,
    /// Disk space the embedded store keeps aside in the data dir (`tether.reserve`) and
    /// gives back at a start on a full disk, so the server can start and checkpoint (0: none).
    #[serde(with = "units::size")]
    pub disk_reserve_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4437)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database: None,
            database_pool: 16,
            long_poll_timeout: Duration::from_secs(30),
            auth: AuthMode::Token,
            max_append_bytes: 16 << 20,
            max_read_bytes: 4 << 20,
            sse_max_duration: Duration::from_secs(60),
            sse_keepalive: Duration::from_secs(15),
            sse_park_after: Duration::from_millis(250),
            lease_ttl: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(1),
            max_concurrent: 10,
            nudges_per_minute: 10,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 4096,
            sse_takeover: true,
            disk_reserve_bytes: tether_store::sqlite::disk::DEFAULT_RESERVE_BYTES,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    /// As derived, but the database password is masked. Destructured, so a new field cannot be
    /// left out (or shown unmasked) without the compiler noticing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ServerConfig {
            listen,
            data_dir,
            database,
            database_pool,
            long_poll_timeout,
            auth,
            max_append_bytes,
            max_read_bytes,
            sse_max_duration,
            sse_keepalive,
            sse_park_after,
            lease_ttl,
            reconcile_interval,
            max_concurrent,
            nudges_per_minute,
            header_read_timeout,
            body_read_timeout,
            max_connections,
            sse_takeover,
            disk_reserve_bytes,
        } = self;
        f.debug_struct("ServerConfig")
            .field("listen", listen)
            .field("data_dir", data_dir)
            .field("database", &database.as_deref().map(redact_url))
            .field("database_pool", database_pool)
            .field("long_poll_timeout", long_poll_timeout)
            .field("auth", auth)
            .field("max_append_bytes", max_append_bytes)
            .field("max_read_bytes", max_read_bytes)
            .field("sse_max_duration", sse_max_duration)
            .field("sse_keepalive", sse_keepalive)
            .field("sse_park_after", sse_park_after)
            .field("lease_ttl", lease_ttl)
            .field("reconcile_interval", reconcile_interval)
            .field("max_concurrent", max_concurrent)
            .field("nudges_per_minute", nudges_per_minute)
            .field("header_read_timeout", header_read_timeout)
            .field("body_read_timeout", body_read_timeout)
            .field("max_connections", max_connections)
            .field("sse_takeover", sse_takeover)
            .field("disk_reserve_bytes", disk_reserve_bytes)
            .finish()
    }
}

/// "`lease` (--lease, TETHER_LEASE)".
fn name(key: &str) -> String {
    Setting::named(key).map_or_else(|| format!("`{key}`"), Setting::describe)
}

impl ServerConfig {
    /// Rejects settings that cannot work, with a message that names them (as a file key, a
    /// flag and a variable: any of them may have set it).
    pub fn validate(&self) -> Result<(), String> {
        let above_zero = [
            ("long_poll_timeout", self.long_poll_timeout),
            ("reconcile_interval", self.reconcile_interval),
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("sse_max_duration", self.sse_max_duration),
            // Zero would send keep-alives as fast as the loop turns.
            ("sse_keepalive", self.sse_keepalive),
        ];
        for (key, value) in above_zero {
            if value.is_zero() {
                return Err(format!("{} must be above zero", name(key)));
            }
        }
        if self.lease_ttl < Duration::from_millis(100) {
            return Err(format!("{} must be at least 100ms", name("lease")));
        }
        if let Some(url) = &self.database {
            if !tether_store::pg::is_postgres_url(url) {
                return Err(format!(
                    "{} must be a postgres:// or postgresql:// URL; leave it out to use the \
                     embedded database in the data dir",
                    name("database")
                ));
            }
            if self.database_pool < 2 {
                return Err(format!("{} must be at least 2", name("database_pool")));
            }
        }
        let at_least_one = [
            ("max_connections", self.max_connections as u64),
            ("max_append_bytes", self.max_append_bytes as u64),
            ("max_read_bytes", self.max_read_bytes as u64),
            ("nudges_per_minute", u64::from(self.nudges_per_minute)),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(format!("{} must be at least 1", name(key)));
            }
        }
        if self.auth == AuthMode::Off && !self.listen.ip().is_loopback() {
            return Err(format!(
                "{} off is allowed only on a loopback address, not {}: anyone who can \
                 reach the server would act as its admin",
                name("auth"),
                self.listen
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_off_is_refused_unless_the_listen_address_is_loopback() {
        let off = |listen: &str| ServerConfig {
            listen: listen.parse().unwrap(),
            auth: AuthMode::Off,
            ..ServerConfig::default()
        };
        assert!(off("127.0.0.1:4437").validate().is_ok());
        assert!(off("[::1]:4437").validate().is_ok());
        let err = off("0.0.0.0:4437").validate().unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        assert!(off("192.168.1.5:4437").validate().is_err());
        let token = ServerConfig {
            listen: "0.0.0.0:4437".parse().unwrap(),
            ..ServerConfig::default()
        };
        assert!(token.validate().is_ok(), "tokens work on any address");
    }
}
