//! `tether`: the server, the CLI, and the workers, in one binary.

mod cli;
mod commands;
mod serve_args;
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
/// in `docs/performance.md`). One such thread does it for every arena; jemalloc would start
/// one per CPU, each with its own stack and cache. Threads allocate from the arena of the CPU
/// they run on rather than from one arena per thread: Tether runs more threads than CPUs,
/// and each arena holds memory of its own (half a megabyte less when idle, at the same
/// append rate).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 105] =
    b"background_thread:true,max_background_threads:1,percpu_arena:percpu,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    // SQLite allocates with the C library's malloc, which gives threads arenas of their own
    // (up to eight per CPU), each keeping its freed memory apart. SQLite takes a lock of its
    // own around every allocation anyway, so one arena loses nothing.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable, under glibc's own arena lock; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    cli::Cli::parse().run()
}
