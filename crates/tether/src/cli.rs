//! Command-line parsing; each subcommand hands over to a library.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tether_server::{AuthMode, ServerConfig};

use crate::serve_args::ServeArgs;

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
    /// The server's configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the server with a built-in demo worker: the quickest way to see Tether work.
    Up(UpArgs),
    #[command(flatten)]
    Client(crate::commands::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the configuration `tether serve` would run with, from the same file, variables
    /// and flags, as a TOML file to start from (secrets masked).
    Show(ServeArgs),
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
                Command::Config(ConfigCommand::Show(args)) => {
                    print!("{}", args.load()?.to_toml());
                    Ok(())
                }
                Command::Up(args) => {
                    let config = args.serve.load()?;
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.load()?;
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
            Command::Serve(args) => args.load().unwrap(),
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
