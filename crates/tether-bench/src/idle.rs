//! Memory of a server holding many idle live subscribers: what each waiting reader costs.
//!
//! The subscribers connect, reach the tail and then wait; nothing is appended while the
//! server's resident memory is sampled, so the figure is the price of the connections and the
//! server's per-subscriber state, not of traffic.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
pub struct IdleConfig {
    pub subscribers: usize,
    pub streams: usize,
    /// How many subscribers may be connecting at once.
    pub connect_concurrency: usize,
    /// How long to let the server settle once everyone waits, before memory is sampled.
    pub settle: Duration,
    pub server_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleResult {
    /// Subscribers asked for.
    pub subscribers: usize,
    /// Streams they were spread over (round-robin).
    pub streams: usize,
    /// Subscribers that were connected and waiting when memory was sampled.
    pub connected: usize,
    /// Server RSS just before the subscribers connected.
    pub rss_before_kb: Option<u64>,
    /// Server RSS with all of them connected and waiting.
    pub rss_with_subscribers_kb: Option<u64>,
}
