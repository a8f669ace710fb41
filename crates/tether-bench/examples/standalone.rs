//! Runs the benchmark without building the whole `tether` binary (and its server), for
//! working on the benchmark itself: `cargo run --release -p tether-bench --example standalone
//! -- --url http://127.0.0.1:4437 --workload appends`. Same flags as `tether bench`.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: tether_bench::BenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tether_bench::run(Cli::parse().bench).await
}
