//! Command-line parsing; each subcommand hands over to a library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tether_server::{AuthMode, ServerConfig};

#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    about = "Durable, resumable progress streams for background agent tasks"
)]
pub struct Cli {
    /// Log lines on stderr as `text` or `json` (one object per line).
    #[arg(long, global = true, env = "TETHER_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (Durable Streams protocol at /v1/stream/*).
    Serve(ServeArgs),
    /// Run the server with a built-in demo worker: the quickest way to see Tether work.
    Up(UpArgs),
    #[command(flatten)]
    Client(crate::commands::ClientCommand),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, env = "TETHER_LISTEN", default_value = "127.0.0.1:4437")]
    listen: SocketAddr,
    /// Where the embedded database (and the first admin's token file) lives; created if missing.
    #[arg(long, env = "TETHER_DATA_DIR", default_value = "./tether-data")]
    data_dir: PathBuf,
    /// A PostgreSQL URL (postgres://user:password@host:port/db) to share with other nodes,
    /// instead of the embedded database.
    #[arg(long, env = "TETHER_DATABASE_URL", value_name = "URL")]
    database: Option<String>,
    /// Connections to PostgreSQL each node keeps open at most.
    #[arg(long, env = "TETHER_DATABASE_POOL", default_value_t = 16)]
    database_pool: usize,
    /// How long a long-poll read waits for data, e.g. 30s or 500ms.
    #[arg(long, env = "TETHER_LONG_POLL_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    long_poll_timeout: Duration,
    /// Authentication: `token` (bearer tokens) or `off` (only on a loopback address).
    #[arg(long, env = "TETHER_AUTH", default_value = "token")]
    auth: AuthMode,
    /// Largest accepted append body in bytes (larger gets 413).
    #[arg(long, env = "TETHER_MAX_APPEND_BYTES", default_value_t = 16 << 20)]
    max_append_bytes: usize,
    /// Roughly the most bytes one read returns.
    #[arg(long, env = "TETHER_MAX_READ_BYTES", default_value_t = 4 << 20)]
    max_read_bytes: usize,
    /// How long a worker's lease lasts without a heartbeat, e.g. 30s or 2s.
    #[arg(long = "lease", env = "TETHER_LEASE", default_value = "30s", value_parser = parse_duration)]
    lease_ttl: Duration,
    /// How often the reconciler looks for expired leases.
    #[arg(long, env = "TETHER_RECONCILE_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    reconcile_interval: Duration,
    /// Running tasks per user (admission), unless set per user.
    #[arg(long, env = "TETHER_MAX_CONCURRENT", default_value_t = 10)]
    max_concurrent: u64,
    /// How long a request's head may take to arrive (and a keep-alive connection may idle).
    #[arg(long, env = "TETHER_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    header_read_timeout: Duration,
    /// How long a request's body may take to arrive once it has to wait for the network.
    #[arg(long, env = "TETHER_BODY_READ_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    body_read_timeout: Duration,
    /// Connections served at once; live SSE subscribers do not count.
    #[arg(long, env = "TETHER_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Bytes the embedded store keeps aside in `<data-dir>/tether.reserve` (at most an eighth
    /// of the disk), given back at a start on a nearly full disk so the server can start and
    /// checkpoint; 0 keeps none.
    #[arg(long, env = "TETHER_DISK_RESERVE_BYTES", default_value_t = tether_store::sqlite::disk::DEFAULT_RESERVE_BYTES)]
    disk_reserve_bytes: u64,
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Demo pacing: the default runs a task in about a minute, so it can be followed, nudged
    /// and cancelled; 1 is eight times faster, 100 finishes a task in well under a second.
    #[arg(long, default_value = crate::worker::demo::DEFAULT_SPEED,
          value_parser = crate::worker::demo::parse_speed)]
    speed: f64,
    /// Most tasks the demo worker runs at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

impl Cli {
    pub fn run(self) -> ExitCode {
        let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Colour codes only for a terminal: in a file or a pipe they are noise.
        let logs = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => logs.init(),
            LogFormat::Json => logs.json().init(),
        }
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = runtime.block_on(async {
            match self.command {
                Command::Serve(args) => serve(args).await,
                Command::Up(args) => {
                    let config = server_config(args.serve);
                    raise_fd_limit(&config);
                    crate::up::run(config, args.speed, usize::from(args.concurrency)).await
                }
                Command::Client(command) => crate::commands::run(command).await,
            }
        });
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

fn server_config(args: ServeArgs) -> ServerConfig {
    ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        // An empty variable counts as unset, like the client's settings.
        database: args.database.filter(|url| !url.is_empty()),
        database_pool: args.database_pool,
        long_poll_timeout: args.long_poll_timeout,
        auth: args.auth,
        max_append_bytes: args.max_append_bytes,
        max_read_bytes: args.max_read_bytes,
        lease_ttl: args.lease_ttl,
        reconcile_interval: args.reconcile_interval,
        max_concurrent: args.max_concurrent,
        header_read_timeout: args.header_read_timeout,
        body_read_timeout: args.body_read_timeout,
        max_connections: args.max_connections,
        disk_reserve_bytes: args.disk_reserve_bytes,
        ..ServerConfig::default()
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = server_config(args);
    config.validate().map_err(anyhow::Error::msg)?;
    raise_fd_limit(&config);
    let socket = bind(config.listen)?;
    let addr = socket.local_addr()?;
    // Opening creates the first admin token, so it exists before the port accepts anyone
    // and before the ready line.
    let stores = tether_server::open_store(&config).await?;
    record_local_server(&config, addr);
    let listener = tether_server::listen(socket)?;
    // Scripts and tests wait for this line; keep its shape.
    println!("tether listening on http://{addr}");
    tether_server::serve(config, listener, stores, shutdown_signal()).await
}

/// A server holds a descriptor per connection, and the soft open-file limit is often 1024:
/// below `--max-connections`, and far below the idle subscribers a node holds. Past it every
/// accept fails until a connection closes. Raise it to the hard limit, as any process may.
fn raise_fd_limit(config: &ServerConfig) {
    let wanted = config.max_connections as u64 + 256;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            max_connections = config.max_connections,
            "the open-file limit is below --max-connections: past it, new connections wait"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
}

/// Reserves the listen address (bound, not yet accepting), naming the address when it cannot:
/// "Address already in use" alone does not say which.
pub(crate) fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpSocket> {
    use anyhow::Context;
    tether_server::reserve(listen).with_context(|| format!("cannot listen on {listen}"))
}

/// Records this server's URL and admin token for the CLI on this machine (see
/// `commands::config::record_local_server`). A failure only costs that convenience: logged.
/// A server on a port picked at random or with auth off is a scratch server (tests,
/// benchmarks, the conformance run; and with auth off no token is needed): it would only
/// replace the record of the server a person runs, so it records nothing.
pub(crate) fn record_local_server(config: &ServerConfig, addr: SocketAddr) {
    if config.listen.port() == 0 || config.auth == AuthMode::Off {
        return;
    }
    let data_dir = &config.data_dir;
    // A wildcard address is reached on loopback from this machine.
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let url = format!("http://{host}:{}", addr.port());
    let env = crate::commands::config::process_env;
    match crate::commands::config::record_local_server(&url, data_dir, &env) {
        Ok(Some(path)) => tracing::info!(
            path = %path.display(),
            "recorded this server's URL and admin token for the CLI on this machine"
        ),
        Ok(None) => {}
        Err(error) => tracing::warn!(
            error = format!("{error:#}"),
            "could not record this server for the CLI; it finds the token in the data dir"
        ),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_config(args: &[&str]) -> ServerConfig {
        let cli = Cli::try_parse_from([&["tether", "serve"], args].concat()).unwrap();
        match cli.command {
            Command::Serve(args) => server_config(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_disk_reserve_is_the_stores_default_unless_a_flag_sets_it() {
        let default = serve_config(&[]).disk_reserve_bytes;
        assert_eq!(default, tether_store::sqlite::disk::DEFAULT_RESERVE_BYTES);
        let none = serve_config(&["--disk-reserve-bytes", "0"]);
        assert_eq!(none.disk_reserve_bytes, 0);
    }
}
