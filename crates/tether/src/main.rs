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

/// jemalloc's settings, read when it starts (`_RJEM_MALLOC_CONF` in the environment still
/// overrides them). By default jemalloc returns freed pages only while the thread that
/// freed them keeps allocating, and first with `MADV_FREE`, which leaves them counted in the
/// process's memory until the kernel needs them: a server that finished a catch-up read of a
/// few hundred megabytes held on to tens of them for good. A background thread returns pages
/// unused for a second, with `MADV_DONTNEED`; appends ran at the same rate with it (A/B runs
/// in `docs/performance.md`).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    cli::Cli::parse().run()
}
