//! `tether-bench`: the load generator and the comparison with other systems, as a binary of
//! its own, so that the `tether` users run holds none of the Redis and NATS clients, TLS,
//! plotting or fonts that comparing needs (see the crate's docs in `lib.rs`).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "tether-bench",
    version,
    about = "Measure Tether, any Durable Streams server, Redis Streams or NATS JetStream"
)]
struct Cli {
    #[command(flatten)]
    bench: tether_bench::BenchArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    match tether_bench::run(Cli::parse().bench).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
