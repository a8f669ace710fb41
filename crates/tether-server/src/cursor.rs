//! `Stream-Cursor` values (protocol 10.1): 20-second intervals since 2024-10-09T00:00:00Z,
//! never going backwards for a client that echoes its cursor.

use rand::Rng;

const EPOCH_SECS: i64 = 1_728_432_000;
const INTERVAL_SECS: i64 = 20;

fn current_interval() -> i64 {
    (chrono::Utc::now().timestamp() - EPOCH_SECS).max(0) / INTERVAL_SECS
}

/// The cursor to send, given the one the client echoed (if any).
pub fn next_cursor(client: Option<&str>) -> String {
    cursor_after(client).to_string()
}

/// The cursor value for a response to a request that echoed `client`.
pub fn cursor_after(client: Option<&str>) -> i64 {
    let now = current_interval();
    match client.and_then(|c| c.parse::<i64>().ok()) {
        // Jitter of 1..=3600 s, in whole intervals, keeps the cursor strictly ahead.
        Some(c) if c >= now => {
            let jitter = rand::thread_rng().gen_range(1..=3600 / INTERVAL_SECS);
            c.saturating_add(jitter)
        }
        _ => now,
    }
}

/// Later cursors of one SSE connection: never below the first, moving with time.
pub fn cursor_since(first: i64) -> i64 {
    first.max(current_interval())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_moves_past_a_client_cursor_from_the_future() {
        let ahead = current_interval() + 1000;
        let next: i64 = next_cursor(Some(&ahead.to_string())).parse().unwrap();
        assert!(next > ahead);
    }

    #[test]
    fn cursor_is_the_current_interval_otherwise() {
        let now = current_interval();
        let got: i64 = next_cursor(Some("garbage")).parse().unwrap();
        assert!(got >= now && got <= now + 1);
        let got: i64 = next_cursor(Some("0")).parse().unwrap();
        assert!(got >= now);
    }
}
