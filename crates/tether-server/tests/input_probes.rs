//! Hostile input against a real server on both backends: text holding a NUL character, which
//! PostgreSQL cannot store in a TEXT column, must get the same 400 naming the field on SQLite
//! and on PostgreSQL, never a 5xx that tells clients to retry later.

// Each test binary uses only part of the shared helpers.
#[allow(dead_code)]
mod support;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};
use support::{on_both_backends, Backend, Reply, Server};

/// A 400 `VALIDATION_ERROR` whose message names `field`.
fn assert_refused(what: &str, reply: &Reply, field: &str) {
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "{what}: wanted 400, got {reply:?}"
    );
    assert_eq!(reply.code(), "VALIDATION_ERROR", "{what}: {reply:?}");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains(field),
        "{what}: the message {message:?} does not name {field:?}"
    );
}

async fn post(s: &Server, path: &str, token: &str, body: Value) -> Reply {
    s.post(path, token, body).await
}

async fn text_with_a_nul_is_refused_with_400_naming_the_field(backend: Backend) {
    let s = Server::start_on(backend).await;
    let admin = s.admin.clone();
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "a task to probe").await;
    let claimed = post(
        &s,
        "/v1/worker/claim",
        &worker,
        json!({"worker": "w1", "wait_ms": 1000}),
    )
    .await;
    assert_eq!(claimed.status, StatusCode::OK, "{claimed:?}");
    let lease = claimed.json()["lease"]["id"].as_str().unwrap().to_string();
    let nul = "a\u{0}b";

    // Stream paths, on every method, and as a fork's source.
    for method in ["PUT", "POST", "GET", "HEAD", "DELETE"] {
        let reply = s
            .call(
                method,
                "/v1/stream/a%00b",
                Some(&admin),
                &[("content-type", "text/plain")],
                Bytes::from_static(b"x"),
            )
            .await;
        if method == "HEAD" {
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "HEAD: {reply:?}");
        } else {
            assert_refused(&format!("{method} a stream path"), &reply, "path");
        }
    }

    // Users and tokens.
    let r = post(&s, "/v1/users", &admin, json!({ "name": nul })).await;
    assert_refused("a user name", &r, "name");
    let r = s
        .call(
            "PATCH",
            "/v1/users/a%00b",
            Some(&admin),
            &[("content-type", "application/json")],
            json!({"max_concurrent": 1}).to_string(),
        )
        .await;
    assert_refused("a user name in the path", &r, "name");
    let r = post(
        &s,
        "/v1/tokens",
        &admin,
        json!({"user": nul, "role": "user"}),
    )
    .await;
    assert_refused("a token's user", &r, "user");
    let r = s
        .call(
            "DELETE",
            "/v1/tokens/a%00b",
            Some(&admin),
            &[],
            Bytes::new(),
        )
        .await;
    assert_refused("a token id", &r, "id");

    // Tasks: the spec's text, and the query of the list.
    let spec_probes = [
        ("description", json!({ "description": nul })),
        ("repository", json!({"description": "d", "repository": nul})),
        (
            "metadata",
            json!({"description": "d", "metadata": {"k": nul}}),
        ),
        (
            "metadata",
            json!({"description": "d", "metadata": { nul: 1 }}),
        ),
        (
            "metadata",
            json!({"description": "d", "metadata": {"k": [{"deep": nul}]}}),
        ),
    ];
    for (field, body) in spec_probes {
        let r = post(&s, "/v1/tasks", &ann, body.clone()).await;
        assert_refused(&format!("a task's {field}"), &r, field);
        let r = post(&s, "/v1/tasks/validate", &ann, body).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert!(
            r.json()["errors"].to_string().contains(field),
            "validate does not name {field}: {r:?}"
        );
    }
    let r = s.get("/v1/tasks?status=a%00b", &ann).await;
    assert!(r.status.is_client_error(), "a list filter: {r:?}");
    let r = s.get("/v1/tasks/a%00b", &ann).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a task id: {r:?}");

    // Nudges.
    let nudges = format!("/v1/tasks/{id}/nudges");
    let r = post(&s, &nudges, &ann, json!({ "message": nul })).await;
    assert_refused("a nudge", &r, "message");

    // The worker protocol: names, leases, steps, nudge ids, failures.
    let r = post(
        &s,
        "/v1/worker/claim",
        &worker,
        json!({"worker": nul, "wait_ms": 0}),
    )
    .await;
    assert_refused("a worker name", &r, "worker");
    let base = format!("/v1/worker/tasks/{id}");
    let r = post(
        &s,
        &format!("{base}/heartbeat"),
        &worker,
        json!({ "lease": nul }),
    )
    .await;
    assert_refused("a heartbeat's lease", &r, "lease");
    let r = post(
        &s,
        &format!("{base}/steps/a%00b/begin"),
        &worker,
        json!({ "lease": lease }),
    )
    .await;
    assert_refused("a step name", &r, "step");
    let r = post(
        &s,
        &format!("{base}/steps/s/begin"),
        &worker,
        json!({ "lease": nul }),
    )
    .await;
    assert_refused("a step's lease", &r, "lease");
    let r = post(
        &s,
        &format!("{base}/steps/s/complete"),
        &worker,
        json!({"lease": nul, "epoch": 1, "checkpoint": {}}),
    )
    .await;
    assert_refused("a step completion's lease", &r, "lease");
    let r = post(
        &s,
        &format!("{base}/events"),
        &worker,
        json!({"lease": nul, "events": [{"type": "log"}]}),
    )
    .await;
    assert_refused("an event batch's lease", &r, "lease");
    let r = post(
        &s,
        &format!("{base}/events"),
        &worker,
        json!({"lease": lease, "events": [{"type": nul}]}),
    )
    .await;
    assert_refused("an event type", &r, "type");
    let r = post(
        &s,
        &format!("{base}/events"),
        &worker,
        json!({"lease": lease, "events": [{"type": "log", "step": nul}]}),
    )
    .await;
    assert_refused("an event's step", &r, "step");
    let r = s.events(&admin, &id, json!([{"type": nul}])).await;
    assert_refused("a producer event's type", &r, "type");
    let r = post(
        &s,
        &format!("{base}/nudges/a%00b/ack"),
        &worker,
        json!({ "lease": lease }),
    )
    .await;
    assert_refused("a nudge id", &r, "nudge");
    let r = post(
        &s,
        &format!("{base}/finish"),
        &worker,
        json!({"lease": lease, "outcome": "failed", "error": {"code": nul, "message": "m"}}),
    )
    .await;
    assert_refused("a failure code", &r, "code");
    let r = post(
        &s,
        &format!("{base}/finish"),
        &worker,
        json!({"lease": nul, "outcome": "completed"}),
    )
    .await;
    assert_refused("a finish's lease", &r, "lease");

    // The task is untouched by all of the above: still running under its lease.
    let task = s.get(&format!("/v1/tasks/{id}"), &ann).await;
    assert_eq!(task.json()["state"], "RUNNING", "{task:?}");
    s.stop().await;
}

/// Event data and failure messages are the agent's own bytes: a NUL inside them is stored as
/// sent on both backends (events are kept as bytes, not as TEXT), and read back the same.
async fn a_nul_inside_event_data_and_a_failure_message_is_stored_as_sent(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    let claimed = post(
        &s,
        "/v1/worker/claim",
        &worker,
        json!({"worker": "w1", "wait_ms": 1000}),
    )
    .await;
    let lease = claimed.json()["lease"]["id"].as_str().unwrap().to_string();
    let base = format!("/v1/worker/tasks/{id}");
    let sent = json!({"type": "log", "data": {"line": "a\u{0}b"}});
    let r = post(
        &s,
        &format!("{base}/events"),
        &worker,
        json!({"lease": lease, "events": [sent]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = post(
        &s,
        &format!("{base}/finish"),
        &worker,
        json!({"lease": lease, "outcome": "failed",
               "error": {"code": "crashed", "message": "out\u{0}put"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let page = s.get(&format!("/v1/tasks/{id}/events"), &ann).await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    let data = page.json()["data"].clone();
    let events = data.as_array().unwrap();
    let log = events.iter().find(|e| e["type"] == "log").unwrap();
    assert_eq!(log["data"]["line"], "a\u{0}b");
    let failed = events.last().unwrap();
    assert_eq!(failed["type"], "task_failed", "{failed}");
    assert!(failed.to_string().contains("out\\u0000put"), "{failed}");

    // A stream append in JSON mode with a NUL inside a string, and raw NUL bytes in a binary
    // stream: both are bytes to the store.
    let admin = s.admin.clone();
    let json_ct = [("content-type", "application/json")];
    let r = s
        .call("PUT", "/v1/stream/j", Some(&admin), &json_ct, Bytes::new())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let r = s
        .call(
            "POST",
            "/v1/stream/j",
            Some(&admin),
            &json_ct,
            r#"{"s":"a\u0000b"}"#,
        )
        .await;
    assert!(r.status.is_success(), "{r:?}");
    let read = s.get("/v1/stream/j?offset=-1", &admin).await;
    assert_eq!(read.json(), json!([{"s": "a\u{0}b"}]));
    let bin = [("content-type", "application/octet-stream")];
    let r = s
        .call("PUT", "/v1/stream/b", Some(&admin), &bin, &b"a\0b"[..])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let read = s.get("/v1/stream/b?offset=-1", &admin).await;
    assert_eq!(&read.body[..], b"a\0b");
    s.stop().await;
}

on_both_backends!(
    text_with_a_nul_is_refused_with_400_naming_the_field,
    a_nul_inside_event_data_and_a_failure_message_is_stored_as_sent,
);
