//! The worker protocol against a real server: claims, steps, fencing, the reconciler,
//! cancel and nudges through heartbeats.

// Each test binary uses only part of the shared helpers.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};
use support::{eventually, on_both_backends, Backend, Server};

fn kinds(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

struct Work {
    id: String,
    lease: String,
}

async fn claim(s: &Server, worker: &str) -> Option<Work> {
    let r = s
        .post(
            "/v1/worker/claim",
            worker,
            json!({"worker": "w1", "wait_ms": 100}),
        )
        .await;
    match r.status {
        StatusCode::NO_CONTENT => None,
        StatusCode::OK => {
            let body = r.json();
            Some(Work {
                id: body["task"]["id"].as_str().unwrap().to_string(),
                lease: body["lease"]["id"].as_str().unwrap().to_string(),
            })
        }
        other => panic!("claim answered {other}: {r:?}"),
    }
}

async fn call(s: &Server, worker: &str, w: &Work, what: &str, mut body: Value) -> support::Reply {
    body["lease"] = json!(w.lease);
    s.post(&format!("/v1/worker/tasks/{}/{what}", w.id), worker, body)
        .await
}

async fn a_worker_claims_runs_steps_and_finishes_once(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    let w = claim(&s, &worker).await.expect("a task to claim");
    assert_eq!(w.id, id);
    assert_eq!(
        s.get(&format!("/v1/tasks/{id}"), &ann).await.json()["state"],
        "RUNNING"
    );

    let begun = call(&s, &worker, &w, "steps/clone/begin", json!({})).await;
    assert_eq!(begun.json(), json!({"epoch": 1, "completed": false}));
    let events = call(
        &s,
        &worker,
        &w,
        "events",
        json!({"events": [
            {"type": "agent_tool_call", "step": "clone", "data": {"tool_name": "git"}}
        ]}),
    )
    .await;
    assert_eq!(events.status, StatusCode::OK, "{events:?}");
    let done = call(
        &s,
        &worker,
        &w,
        "steps/clone/complete",
        json!({"epoch": 1, "checkpoint": {"sha": "abc"}}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK);
    let finish = json!({"outcome": "completed", "result": {"pr": 7}});
    let first = call(&s, &worker, &w, "finish", finish.clone()).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json()["state"], "COMPLETED");
    let again = call(&s, &worker, &w, "finish", finish).await;
    assert_eq!(
        (again.status, again.json()["state"].clone()),
        (StatusCode::OK, json!("COMPLETED"))
    );

    let page = s.get(&format!("/v1/tasks/{id}/events"), &ann).await.json();
    assert_eq!(
        kinds(&page),
        [
            "task_created",
            "task_started",
            "agent_tool_call",
            "step_completed",
            "task_completed"
        ]
    );
    assert_eq!(
        page["data"][2]["attempt"], 1,
        "the step's epoch is stamped on its events"
    );
    assert_eq!(page["closed"], true);
    let late = call(
        &s,
        &worker,
        &w,
        "events",
        json!({"events": [{"type": "log"}]}),
    )
    .await;
    assert_eq!(
        (late.status, late.code().as_str()),
        (StatusCode::CONFLICT, "LEASE_LOST")
    );
    s.stop().await;
}

async fn a_claim_waits_for_work_and_wakes_when_a_task_is_submitted(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    assert!(claim(&s, &worker).await.is_none(), "nothing to claim: 204");
    let waiting = s.post(
        "/v1/worker/claim",
        &worker,
        json!({"worker": "w1", "wait_ms": 20_000}),
    );
    let submit = async {
        // Whether the claim is already waiting or not, it must get this task.
        s.submit(&ann, "d").await
    };
    let (claimed, id) = tokio::join!(waiting, submit);
    assert_eq!(claimed.status, StatusCode::OK);
    assert_eq!(claimed.json()["task"]["id"], id.as_str());
    assert_eq!(claimed.json()["attempt"], 1);
    s.stop().await;
}

async fn a_claim_whose_worker_hung_up_leaves_the_task_claimable_at_once(backend: Backend) {
    use tokio::io::AsyncWriteExt;
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    // A worker's long-poll, sent by hand so that the test can hang up on it.
    let addr = s.base.strip_prefix("http://").unwrap().to_string();
    let mut gone = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = json!({"worker": "gone", "wait_ms": 20_000}).to_string();
    let request = format!(
        "POST /v1/worker/claim HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {worker}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    gone.write_all(request.as_bytes()).await.unwrap();
    // The server holds the claim once validate stops warning that no worker is connected.
    eventually("the claim to be waiting", || async {
        let answer = s
            .post("/v1/tasks/validate", &ann, json!({"description": "d"}))
            .await
            .json();
        let warnings = answer["warnings"].as_array().cloned().unwrap_or_default();
        (!warnings.iter().any(|w| w.to_string().contains("no worker"))).then_some(())
    })
    .await;
    drop(gone);

    let id = s.submit(&ann, "d").await;
    let asked = std::time::Instant::now();
    let taken = s
        .post(
            "/v1/worker/claim",
            &worker,
            json!({"worker": "w2", "wait_ms": 10_000}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::OK, "{taken:?}");
    assert_eq!(taken.json()["task"]["id"], id.as_str());
    assert_eq!(taken.json()["attempt"], 1, "no attempt was used up");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the task waited {:?}, as for a lease to expire",
        asked.elapsed()
    );
    // If the gone worker's claim committed, it was handed back before w2 started the task.
    let page = s.get(&format!("/v1/tasks/{id}/events"), &ann).await.json();
    let events = page["data"].as_array().unwrap();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "task_started");
    assert_eq!(last["data"]["worker"], "w2", "{page}");
    s.stop().await;
}

async fn a_claim_whose_request_is_dropped_while_it_commits_is_handed_back(backend: Backend) {
    use tokio::io::AsyncWriteExt;
    // Auth off, so the request reaches the claim with no token lookup first.
    let s = Server::start_on_with(backend, |c| c.auth = tether_server::AuthMode::Off).await;
    let id = s.submit("ignored", "d").await;
    // The whole request and the end of the connection arrive together: hyper starts the
    // handler, whose claim is committing when hyper sees the close and drops it.
    let addr = s.base.strip_prefix("http://").unwrap().to_string();
    let mut gone = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = json!({"worker": "gone", "wait_ms": 20_000}).to_string();
    let request = format!(
        "POST /v1/worker/claim HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    gone.write_all(request.as_bytes()).await.unwrap();
    gone.shutdown().await.unwrap();

    let asked = std::time::Instant::now();
    let taken = s
        .post(
            "/v1/worker/claim",
            "ignored",
            json!({"worker": "w2", "wait_ms": 10_000}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::OK, "{taken:?}");
    assert_eq!(taken.json()["task"]["id"], id.as_str());
    assert_eq!(taken.json()["attempt"], 1, "no attempt was used up");
    assert!(asked.elapsed() < Duration::from_secs(10));
    drop(gone);
    s.stop().await;
}

async fn admission_holds_a_users_tasks_beyond_their_limit_in_submitted(backend: Backend) {
    let s = Server::start_on_with(backend, |c| c.max_concurrent = 1).await;
    let ann = s.user("ann", "user").await;
    let bob = s.user("bob", "user").await;
    let worker = s.user("runner", "worker").await;
    s.submit(&ann, "a1").await;
    let a2 = s.submit(&ann, "a2").await;
    let b1 = s.submit(&bob, "b1").await;
    let first = claim(&s, &worker).await.unwrap();
    let second = claim(&s, &worker).await.unwrap();
    assert_eq!(second.id, b1, "ann is at her limit; bob's task goes ahead");
    assert!(claim(&s, &worker).await.is_none());
    call(
        &s,
        &worker,
        &first,
        "finish",
        json!({"outcome": "failed", "error": {"code": "X", "message": "y"}}),
    )
    .await;
    assert_eq!(claim(&s, &worker).await.unwrap().id, a2);
    s.stop().await;
}

async fn an_expired_lease_is_requeued_and_the_retry_rewinds_the_step_while_zombies_are_fenced(
    backend: Backend,
) {
    let s = Server::start_on_with(backend, |c| {
        c.lease_ttl = Duration::from_millis(400);
        c.reconcile_interval = Duration::from_millis(50);
    })
    .await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    let old = claim(&s, &worker).await.unwrap();
    call(&s, &worker, &old, "steps/clone/begin", json!({})).await;
    call(
        &s,
        &worker,
        &old,
        "events",
        json!({"events": [{"type": "log", "step": "clone"}]}),
    )
    .await;

    // The worker goes silent; the reconciler requeues the task as attempt 2.
    let path = format!("/v1/tasks/{id}");
    eventually("the task to be requeued", || async {
        let task = s.get(&path, &ann).await.json();
        (task["state"] == "SUBMITTED" && task["attempt"] == 2).then_some(())
    })
    .await;
    let zombie = call(
        &s,
        &worker,
        &old,
        "events",
        json!({"events": [{"type": "log", "step": "clone"}]}),
    )
    .await;
    assert_eq!(
        (zombie.status, zombie.code().as_str()),
        (StatusCode::CONFLICT, "LEASE_LOST")
    );
    let beat = call(&s, &worker, &old, "heartbeat", json!({})).await;
    assert_eq!(beat.code(), "LEASE_LOST");
    let metrics = s.call("GET", "/metrics", None, &[], Bytes::new()).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.lines().any(|l| l == "tether_fenced_writes_total 2"),
        "{text}"
    );

    let new = claim(&s, &worker).await.unwrap();
    let begun = call(&s, &worker, &new, "steps/clone/begin", json!({}))
        .await
        .json();
    assert_eq!(begun["epoch"], 2);
    let stale = call(
        &s,
        &worker,
        &new,
        "events",
        json!({"events": [{"type": "log", "step": "clone", "attempt": 1}]}),
    )
    .await;
    assert_eq!(
        (stale.status, stale.code().as_str()),
        (StatusCode::CONFLICT, "STALE_ATTEMPT")
    );
    call(
        &s,
        &worker,
        &new,
        "events",
        json!({"events": [{"type": "log", "step": "clone"}]}),
    )
    .await;
    call(&s, &worker, &new, "finish", json!({"outcome": "completed"})).await;

    let raw = s.get(&format!("/v1/tasks/{id}/events"), &ann).await.json();
    assert_eq!(
        kinds(&raw),
        [
            "task_created",
            "task_started",
            "log",
            "task_requeued",
            "task_started",
            "stream_rewind",
            "log",
            "task_completed"
        ]
    );
    let timeline = s
        .get(&format!("/v1/tasks/{id}/events?view=timeline"), &ann)
        .await
        .json();
    assert_eq!(
        kinds(&timeline),
        [
            "task_created",
            "task_started",
            "task_requeued",
            "task_started",
            "stream_rewind",
            "log",
            "task_completed"
        ]
    );
    s.stop().await;
}

async fn cancel_reaches_the_worker_at_its_next_heartbeat_and_fences_it(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    let w = claim(&s, &worker).await.unwrap();
    let beat = call(&s, &worker, &w, "heartbeat", json!({})).await.json();
    assert_eq!(beat["cancel_requested"], false);
    s.call(
        "DELETE",
        &format!("/v1/tasks/{id}"),
        Some(&ann),
        &[],
        Bytes::new(),
    )
    .await;
    let beat = call(&s, &worker, &w, "heartbeat", json!({})).await;
    assert_eq!(
        (beat.status, beat.json()["cancel_requested"].clone()),
        (StatusCode::OK, json!(true))
    );
    let late = call(
        &s,
        &worker,
        &w,
        "events",
        json!({"events": [{"type": "log"}]}),
    )
    .await;
    // Whichever call hears of the cancel first is told it was a cancel, not a lost lease, so
    // the worker can give its command the grace period a cancel promises.
    assert_eq!(
        (late.status, late.code().as_str()),
        (StatusCode::CONFLICT, "TASK_CANCELLED")
    );
    let finish = call(&s, &worker, &w, "finish", json!({"outcome": "completed"})).await;
    assert_eq!(finish.code(), "TASK_CANCELLED");
    let page = s.get(&format!("/v1/tasks/{id}/events"), &ann).await.json();
    assert_eq!(
        kinds(&page),
        ["task_created", "task_started", "task_cancelled"]
    );
    s.stop().await;
}

async fn nudges_are_checked_limited_delivered_by_heartbeat_and_acknowledged_once(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    let path = format!("/v1/tasks/{id}/nudges");
    let w = claim(&s, &worker).await.unwrap();
    let sent = s
        .post(&path, &ann, json!({"message": "  also bump the version  "}))
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED);
    let nudge_id = sent.json()["id"].as_str().unwrap().to_string();
    for bad in [
        json!({"message": "   "}),
        json!({"message": "x".repeat(2001)}),
        json!({}),
    ] {
        assert_eq!(
            s.post(&path, &ann, bad).await.status,
            StatusCode::BAD_REQUEST
        );
    }
    let beat = call(&s, &worker, &w, "heartbeat", json!({})).await.json();
    assert_eq!(beat["nudges"][0]["message"], "also bump the version");
    for _ in 0..2 {
        let ack = call(
            &s,
            &worker,
            &w,
            &format!("nudges/{nudge_id}/ack"),
            json!({}),
        )
        .await;
        assert_eq!(ack.status, StatusCode::OK);
    }
    for _ in 1..10 {
        assert_eq!(
            s.post(&path, &ann, json!({"message": "hi"})).await.status,
            StatusCode::ACCEPTED
        );
    }
    let limited = s.post(&path, &ann, json!({"message": "hi"})).await;
    assert_eq!(
        (limited.status, limited.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_NUDGES")
    );
    assert!(
        limited
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let page = s.get(&format!("/v1/tasks/{id}/events"), &ann).await.json();
    assert_eq!(
        kinds(&page)
            .iter()
            .filter(|k| *k == "nudge_acknowledged")
            .count(),
        1
    );
    s.call(
        "DELETE",
        &format!("/v1/tasks/{id}"),
        Some(&ann),
        &[],
        Bytes::new(),
    )
    .await;
    let ended = s.post(&path, &s.admin, json!({"message": "hi"})).await;
    assert_eq!(ended.code(), "TASK_ALREADY_TERMINAL");
    s.stop().await;
}

async fn an_accepted_nudge_is_in_the_task_log_with_its_text_and_author(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    claim(&s, &worker).await.unwrap();
    let path = format!("/v1/tasks/{id}/nudges");
    let mut sent = Vec::new();
    for (token, message) in [
        (&ann, "  also bump the version  "),
        (&s.admin, "and the docs"),
    ] {
        let nudge = s.post(&path, token, json!({ "message": message })).await;
        assert_eq!(nudge.status, StatusCode::ACCEPTED, "{nudge:?}");
        sent.push(nudge.json()["id"].clone());
    }
    // A refused nudge leaves no record.
    let empty = s.post(&path, &ann, json!({"message": " "})).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);

    let page = s.get(&format!("/v1/tasks/{id}/events"), &ann).await.json();
    let records: Vec<&Value> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "nudge_sent")
        .map(|e| &e["data"])
        .collect();
    assert_eq!(
        records,
        [
            &json!({"nudge_id": sent[0], "message": "also bump the version", "author": "ann"}),
            &json!({"nudge_id": sent[1], "message": "and the docs", "author": "admin"}),
        ]
    );
    // Only the server writes it: a producer cannot put words in a user's mouth.
    let forged = s
        .events(
            &worker,
            &id,
            json!([{"type": "nudge_sent", "data": {"author": "ann"}}]),
        )
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST, "{forged:?}");
    s.stop().await;
}

async fn user_tokens_cannot_use_the_worker_api_and_bad_input_is_400(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let r = s
        .post("/v1/worker/claim", &ann, json!({"worker": "w"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = s
        .post("/v1/worker/claim", &worker, json!({"worker": ""}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    s.submit(&ann, "d").await;
    let w = claim(&s, &worker).await.unwrap();
    let r = call(&s, &worker, &w, "steps/bad%20name/begin", json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &s,
        &worker,
        &w,
        "events",
        json!({"events": [{"type": "task_completed"}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let never_begun = call(
        &s,
        &worker,
        &w,
        "events",
        json!({"events": [{"type": "log", "step": "ghost"}]}),
    )
    .await;
    assert_eq!(never_begun.code(), "STALE_ATTEMPT");
    let r = s
        .post(
            "/v1/worker/tasks/tsk_00000000000000000000/heartbeat",
            &worker,
            json!({"lease": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    s.stop().await;
}

async fn an_admin_sets_a_users_limit_and_a_task_its_attempts(backend: Backend) {
    let s = Server::start_on_with(backend, |c| c.max_concurrent = 1).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let patch = |body: Value, token: &str| {
        let token = token.to_string();
        let body = body.to_string();
        let s = &s;
        async move {
            s.call(
                "PATCH",
                "/v1/users/ann",
                Some(&token),
                &[("content-type", "application/json")],
                body,
            )
            .await
        }
    };
    assert_eq!(
        patch(json!({"max_concurrent": 2}), &ann).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        patch(json!({"max_concurrent": 0}), &s.admin).await.status,
        StatusCode::BAD_REQUEST
    );
    let ok = patch(json!({"max_concurrent": 2}), &s.admin).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let missing = s
        .call(
            "PATCH",
            "/v1/users/nobody",
            Some(&s.admin),
            &[("content-type", "application/json")],
            json!({"max_concurrent": 2}).to_string(),
        )
        .await;
    assert_eq!(missing.code(), "USER_NOT_FOUND");
    for _ in 0..3 {
        s.submit(&ann, "d").await;
    }
    assert!(claim(&s, &worker).await.is_some());
    assert!(
        claim(&s, &worker).await.is_some(),
        "ann's own limit of 2 applies"
    );
    assert!(claim(&s, &worker).await.is_none());

    let bad = s
        .post(
            "/v1/tasks",
            &ann,
            json!({"description": "d", "max_attempts": 11}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

async fn validate_says_whether_a_worker_is_connected_and_admission_would_wait(backend: Backend) {
    let s = Server::start_on_with(backend, |c| c.max_concurrent = 1).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let warnings = |v: Value| {
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let body = json!({"description": "d", "max_turns": 5});
    let before = s
        .post("/v1/tasks/validate", &ann, body.clone())
        .await
        .json();
    assert!(warnings(before).iter().any(|w| w.contains("no worker")));
    s.submit(&ann, "d").await;
    claim(&s, &worker).await.unwrap();
    let after = warnings(s.post("/v1/tasks/validate", &ann, body).await.json());
    assert!(!after.iter().any(|w| w.contains("no worker")), "{after:?}");
    assert!(
        after.iter().any(|w| w.contains("would wait")),
        "ann is at her limit: {after:?}"
    );
    s.stop().await;
}

on_both_backends!(
    a_worker_claims_runs_steps_and_finishes_once,
    a_claim_waits_for_work_and_wakes_when_a_task_is_submitted,
    a_claim_whose_worker_hung_up_leaves_the_task_claimable_at_once,
    a_claim_whose_request_is_dropped_while_it_commits_is_handed_back,
    admission_holds_a_users_tasks_beyond_their_limit_in_submitted,
    an_expired_lease_is_requeued_and_the_retry_rewinds_the_step_while_zombies_are_fenced,
    cancel_reaches_the_worker_at_its_next_heartbeat_and_fences_it,
    nudges_are_checked_limited_delivered_by_heartbeat_and_acknowledged_once,
    an_accepted_nudge_is_in_the_task_log_with_its_text_and_author,
    user_tokens_cannot_use_the_worker_api_and_bad_input_is_400,
    an_admin_sets_a_users_limit_and_a_task_its_attempts,
    validate_says_whether_a_worker_is_connected_and_admission_would_wait,
);
