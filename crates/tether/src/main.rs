//! `tether`: the server, and (later) the workers and the CLI, in one binary.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::Cli::parse().run()
}
