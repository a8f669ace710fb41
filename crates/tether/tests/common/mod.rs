//! Shared helpers for the black-box tests of the real binary: fault tests and CLI tests.
//!
//! The tests start the real `tether` binary on port 0 with a temporary data directory, read
//! the port from its ready line, and talk HTTP to it through the small typed helpers here. They
//! kill it with SIGKILL for real and restart it on the same data directory.

// Each test binary compiles this module and uses a different subset of the helpers.
#![allow(dead_code)]

pub mod browser;
pub mod cli;
pub mod http;
pub mod server;
pub mod sse;
pub mod streams;

use rand::rngs::StdRng;
use rand::SeedableRng;

/// Seed for a test's random choices (kill moments, hang-up points, pacing).
///
/// Printed by every test so that a failing run can be replayed with `TETHER_TEST_SEED=<seed>`.
/// The guarantees must hold for every seed; the seed only makes a failure easier to reproduce.
pub fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var("TETHER_TEST_SEED") {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("TETHER_TEST_SEED must be a u64, got {value:?}")),
        Err(_) => rand::random(),
    };
    println!("{test}: seed {seed} (set TETHER_TEST_SEED={seed} to replay)");
    seed
}

/// A deterministic random generator derived from the test seed, one per task.
pub fn rng(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
