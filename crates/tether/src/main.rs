//! `tether`: the server, and (later) the workers and the CLI, in one binary.

mod cli;

use clap::Parser;

/// The server allocates per request and per record; mimalloc keeps that off the profile
/// (glibc's malloc showed up at several percent of server time under append load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::Cli::parse().run()
}
