//! A revoked token loses its live task feeds: an SSE response opened before the revocation
//! ends within the SSE lifetime and its reconnect is refused, and a long-poll that was
//! waiting answers 401 instead of the events that came meanwhile.

// Each test binary uses only part of the shared helpers.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;
use support::{eventually, on_both_backends, Backend, Server};

/// Short enough for a test to wait out, long enough that the feed is seen working first.
const SSE_LIFETIME: Duration = Duration::from_secs(2);

/// A token's id, the part of `tether_<id>_<secret>` that names it.
fn token_id(token: &str) -> &str {
    token
        .split('_')
        .nth(1)
        .expect("a token of the form tether_<id>_<secret>")
}

/// Waits until `n` readers wait on a stream, as `/metrics` counts them.
async fn live_readers(s: &Server, n: usize) {
    let want = format!("tether_live_subscribers {n}\n");
    eventually("the live reader", || async {
        let metrics = s.call("GET", "/metrics", None, &[], Bytes::new()).await;
        String::from_utf8_lossy(&metrics.body)
            .contains(&want)
            .then_some(())
    })
    .await;
}

async fn revoke(s: &Server, token: &str) {
    let path = format!("/v1/tokens/{}", token_id(token));
    let revoked = s
        .call("DELETE", &path, Some(&s.admin), &[], Bytes::new())
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{revoked:?}");
}

async fn a_task_sse_opened_before_its_token_was_revoked_ends_and_cannot_reconnect(
    backend: Backend,
) {
    let s = Server::start_on_with(backend, |c| c.sse_max_duration = SSE_LIFETIME).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "a long task").await;
    let path = format!("/v1/tasks/{id}/events?live=sse");

    let watching = s.call("GET", &path, Some(&ann), &[], Bytes::new());
    let revoking = async {
        live_readers(&s, 1).await;
        revoke(&s, &ann).await;
        // The task goes on: what ends the feed is not the task's end.
        let more = s.events(&worker, &id, json!([{"type": "log"}])).await;
        assert_eq!(more.status, StatusCode::OK, "{more:?}");
        tokio::time::Instant::now()
    };
    // The feed must end by itself within its lifetime (plus slack for a slow machine), not
    // when the task does.
    let bound = SSE_LIFETIME + Duration::from_secs(8);
    let (watched, revoked_at) = tokio::join!(tokio::time::timeout(bound, watching), revoking);
    let watched = watched.expect("the revoked token's SSE response did not end");
    assert_eq!(watched.status, StatusCode::OK);
    assert!(
        revoked_at.elapsed() < bound,
        "the feed outlived its bound after the revocation"
    );
    let body = String::from_utf8_lossy(&watched.body);
    assert!(body.contains("task_created"), "{body}");

    let again = s.call("GET", &path, Some(&ann), &[], Bytes::new()).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{again:?}");
    assert_eq!(again.code(), "UNAUTHORIZED");
    let task = s.get(&format!("/v1/tasks/{id}"), &s.admin).await;
    assert_eq!(task.json()["state"], "SUBMITTED", "the task is still going");
    s.stop().await;
}

async fn a_long_poll_waiting_when_its_token_is_revoked_answers_401_not_the_new_events(
    backend: Backend,
) {
    let s = Server::start_on_with(backend, |c| {
        c.long_poll_timeout = Duration::from_secs(20);
    })
    .await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "a long task").await;
    let first = s.get(&format!("/v1/tasks/{id}/events"), &ann).await;
    let next = first.json()["next_after"].as_str().unwrap().to_string();
    let path = format!("/v1/tasks/{id}/events?live=long-poll&after={next}");

    let polling = s.get(&path, &ann);
    let revoking = async {
        live_readers(&s, 1).await;
        revoke(&s, &ann).await;
        let more = s.events(&worker, &id, json!([{"type": "log"}])).await;
        assert_eq!(more.status, StatusCode::OK, "{more:?}");
    };
    let (polled, ()) = tokio::join!(polling, revoking);
    assert_eq!(polled.status, StatusCode::UNAUTHORIZED, "{polled:?}");
    assert_eq!(polled.code(), "UNAUTHORIZED");
    s.stop().await;
}

on_both_backends!(
    a_task_sse_opened_before_its_token_was_revoked_ends_and_cannot_reconnect,
    a_long_poll_waiting_when_its_token_is_revoked_answers_401_not_the_new_events,
);
