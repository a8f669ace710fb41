//! Who may use which stream: a task's stream follows its task's visibility, and a request
//! that names another stream (a fork's source) is checked against the caller as well.
//! Black-box against a real server with auth on, on both backends.

// Each test binary uses only part of the shared helpers.
#[allow(dead_code)]
mod support;

use bytes::Bytes;
use hyper::StatusCode;
use support::{on_both_backends, Backend, Reply, Server};

/// `PUT /v1/stream/{path}` as `token`, forking `source` (a path under `/v1/stream/`).
async fn fork(s: &Server, token: &str, path: &str, source: &str) -> Reply {
    let from = format!("/v1/stream/{source}");
    s.call(
        "PUT",
        &format!("/v1/stream/{path}"),
        Some(token),
        &[("stream-forked-from", from.as_str())],
        Bytes::new(),
    )
    .await
}

/// Status, error code and message: what must not differ between "hidden" and "missing".
fn answer(r: &Reply) -> (StatusCode, String, String) {
    let json = r.json();
    (
        r.status,
        r.code(),
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

async fn a_fork_of_another_users_task_is_answered_as_a_fork_of_a_missing_one(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let bob = s.user("bob", "user").await;
    let id = s.submit(&ann, "ann's secret task").await;

    let hidden = fork(&s, &bob, "bobcopy", &format!("tasks/{id}")).await;
    let missing = fork(&s, &bob, "bobcopy", "tasks/tsk_00000000000000000000").await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND, "{hidden:?}");
    assert_eq!(answer(&hidden), answer(&missing));
    // Nothing was created: bob has no copy to read.
    let copy = s.get("/v1/stream/bobcopy?offset=-1", &bob).await;
    assert_eq!(copy.status, StatusCode::NOT_FOUND, "{copy:?}");

    // Whoever may see the task may fork its stream.
    for (token, path) in [(&ann, "anncopy"), (&s.admin, "admincopy")] {
        let made = fork(&s, token, path, &format!("tasks/{id}")).await;
        assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
        let read = s.get(&format!("/v1/stream/{path}?offset=-1"), token).await;
        assert_eq!(read.json()[0]["type"], "task_created", "{read:?}");
    }
    s.stop().await;
}

on_both_backends!(a_fork_of_another_users_task_is_answered_as_a_fork_of_a_missing_one);
