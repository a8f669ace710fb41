//! Server configuration: typed values with defaults, checked once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Whether requests must carry a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where the embedded database lives, and the first admin's token file in either mode.
    pub data_dir: PathBuf,
    /// A PostgreSQL URL: share that database with other nodes instead of the embedded one.
    pub database: Option<String>,
    /// Connections to PostgreSQL this node keeps open at most.
    pub database_pool: usize,
    /// How long a long-poll waits for data before answering 204.
    pub long_poll_timeout: Duration,
    pub auth: AuthMode,
    /// Largest accepted append or initial body; larger gets 413.
    pub max_append_bytes: usize,
    /// Roughly the largest body one read returns (at least one whole record).
    pub max_read_bytes: usize,
    /// SSE connections, of streams and of tasks, are closed after this long so clients
    /// reconnect (protocol 10.2) and show their token again: a revoked token's feed ends.
    pub sse_max_duration: Duration,
    /// Interval of SSE keep-alive comments while nothing happens.
    pub sse_keepalive: Duration,
    /// An SSE subscriber that has caught up and heard nothing for this long gives up its
    /// task until the stream moves (its connection and position stay).
    pub sse_park_after: Duration,
    /// How long a worker's lease lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// How often the reconciler looks for expired leases.
    pub reconcile_interval: Duration,
    /// Running tasks per user, unless the user's own limit says otherwise.
    pub max_concurrent: u64,
    /// Nudges accepted per task per minute.
    pub nudges_per_minute: u32,
    /// A request's head must arrive within this, and a keep-alive connection that sends no
    /// new request for this long is closed: a client that trickles its headers (slowloris)
    /// holds a connection no longer.
    pub header_read_timeout: Duration,
    /// A request's body must have arrived this long after it first had to wait for the
    /// network; a body that stops (or a chunked one that never ends) ends the request.
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
    pub disk_reserve_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4437)),
            data_dir: PathBuf::from("./tether-data"),
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

impl ServerConfig {
    /// Rejects settings that cannot work, with a message that says which.
    pub fn validate(&self) -> Result<(), String> {
        if self.long_poll_timeout.is_zero() {
            return Err("--long-poll-timeout must be greater than zero".into());
        }
        if self.lease_ttl < Duration::from_millis(100) || self.reconcile_interval.is_zero() {
            return Err(
                "--lease must be at least 100ms and --reconcile-interval above zero".into(),
            );
        }
        if let Some(url) = &self.database {
            if !tether_store::pg::is_postgres_url(url) {
                return Err(
                    "--database must be a postgres:// or postgresql:// URL; leave it out to \
                     use the embedded database in --data-dir"
                        .into(),
                );
            }
            if self.database_pool < 2 {
                return Err("--database-pool must be at least 2".into());
            }
        }
        if self.header_read_timeout.is_zero() || self.body_read_timeout.is_zero() {
            return Err("--header-read-timeout and --body-read-timeout must be above zero".into());
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.max_append_bytes == 0 || self.max_read_bytes == 0 {
            return Err("size limits must be greater than zero".into());
        }
        if self.auth == AuthMode::Off && !self.listen.ip().is_loopback() {
            return Err(format!(
                "--auth off is allowed only on a loopback address, not {}: anyone who can \
                 reach the server would act as its admin",
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
