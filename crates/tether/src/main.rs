//! `tether`: the server, the CLI, and the workers, in one binary.

mod cli;
mod commands;
mod up;
mod worker;

use clap::Parser;

/// glibc's malloc spent about a fifth of server time consolidating and unlinking chunks
/// under append load (allocations made on one thread and freed on another); jemalloc's
/// per-thread caches do not.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    cli::Cli::parse().run()
}
