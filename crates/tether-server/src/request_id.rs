//! Request ids: one per request, echoed in `X-Request-Id` and in error bodies. A leaf.

use rand::Rng;

/// A per-request id, echoed in `X-Request-Id` and in error bodies.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

tokio::task_local! {
    /// The id of the request being handled, so every error body can carry it.
    pub static CURRENT_REQUEST: String;
}

/// A fresh request id: 64 random bits in hex.
pub fn new_request_id() -> String {
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}
