//! Who may use which stream: a plain stream is seen by its owner and by admins, a task's
//! stream follows its task's visibility, and a request that names another stream (a fork's
//! source) is checked against the caller as well. What the caller may not see is answered
//! exactly as what does not exist.
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

/// Every stream route, as `token`, on `path`: (what was asked, the answer).
async fn every_route(s: &Server, token: &str, path: &str) -> Vec<(String, Reply)> {
    let json = ("content-type", "application/json");
    let at = format!("/v1/stream/{path}");
    let mut answers = Vec::new();
    for (method, query, headers, body) in [
        ("GET", "?offset=-1", vec![], ""),
        ("GET", "?offset=-1&live=long-poll", vec![], ""),
        ("GET", "?offset=-1&live=sse", vec![], ""),
        ("HEAD", "", vec![], ""),
        ("POST", "", vec![json], "[\"bob was here\"]"),
        ("POST", "", vec![("stream-closed", "true")], ""),
        ("DELETE", "", vec![], ""),
    ] {
        let r = s
            .call(method, &format!("{at}{query}"), Some(token), &headers, body)
            .await;
        answers.push((format!("{method} {query} {headers:?}"), r));
    }
    answers.push((
        "fork".to_string(),
        fork(s, token, &format!("copy-of-{path}"), path).await,
    ));
    answers
}

async fn another_users_plain_stream_answers_every_route_as_a_missing_one(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let bob = s.user("bob", "user").await;
    let wally = s.user("wally", "worker").await;
    let json = [("content-type", "application/json")];
    let made = s
        .call(
            "PUT",
            "/v1/stream/ann-private",
            Some(&ann),
            &json,
            "[\"secret\"]",
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");

    // Users and workers other than the owner: exactly what a missing stream gets.
    for token in [&bob, &wally] {
        let hidden = every_route(&s, token, "ann-private").await;
        let missing = every_route(&s, token, "nobody-here").await;
        for ((what, h), (_, m)) in hidden.iter().zip(&missing) {
            assert_eq!(h.status, StatusCode::NOT_FOUND, "{what}: {h:?}");
            if !h.body.is_empty() || !m.body.is_empty() {
                assert_eq!(answer(h), answer(m), "{what}");
            }
        }
        // A create at the path says it is taken, and nothing about the stream there,
        // whether or not the configuration matches.
        for content_type in ["application/json", "text/plain"] {
            let put = s
                .call(
                    "PUT",
                    "/v1/stream/ann-private",
                    Some(token),
                    &[("content-type", content_type)],
                    Bytes::new(),
                )
                .await;
            assert_eq!(
                (put.status, put.code().as_str()),
                (StatusCode::CONFLICT, "STREAM_CONFLICT"),
                "{put:?}"
            );
            assert_eq!(put.header("stream-next-offset"), None, "{put:?}");
            assert_eq!(answer(&put).2, "another stream holds this path");
        }
    }

    // The owner and admins see it, untouched by what the others tried.
    for (token, copy) in [(&ann, "ann-copy"), (&s.admin, "admin-copy")] {
        let read = s.get("/v1/stream/ann-private?offset=-1", token).await;
        assert_eq!(read.json(), serde_json::json!(["secret"]), "{read:?}");
        let head = s
            .call(
                "HEAD",
                "/v1/stream/ann-private",
                Some(token),
                &[],
                Bytes::new(),
            )
            .await;
        assert_eq!(head.status, StatusCode::OK);
        let again = s
            .call(
                "PUT",
                "/v1/stream/ann-private",
                Some(token),
                &json,
                Bytes::new(),
            )
            .await;
        assert_eq!(
            again.status,
            StatusCode::OK,
            "an identical create: {again:?}"
        );
        let forked = fork(&s, token, copy, "ann-private").await;
        assert_eq!(forked.status, StatusCode::CREATED, "{forked:?}");
    }
    let append = s
        .call(
            "POST",
            "/v1/stream/ann-private",
            Some(&s.admin),
            &json,
            "[\"by admin\"]",
        )
        .await;
    assert_eq!(append.status, StatusCode::NO_CONTENT, "{append:?}");
    let append = s
        .call(
            "POST",
            "/v1/stream/ann-private",
            Some(&ann),
            &json,
            "[\"by ann\"]",
        )
        .await;
    assert_eq!(append.status, StatusCode::NO_CONTENT, "{append:?}");
    let read = s.get("/v1/stream/ann-private?offset=-1", &ann).await;
    assert_eq!(
        read.json(),
        serde_json::json!(["secret", "by admin", "by ann"])
    );
    // Streams are deleted by their owner or an admin.
    let gone = s
        .call(
            "DELETE",
            "/v1/stream/ann-private",
            Some(&ann),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{gone:?}");
    s.call(
        "PUT",
        "/v1/stream/ann-other",
        Some(&ann),
        &json,
        Bytes::new(),
    )
    .await;
    let gone = s
        .call(
            "DELETE",
            "/v1/stream/ann-other",
            Some(&s.admin),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{gone:?}");
    s.stop().await;
}

on_both_backends!(
    a_fork_of_another_users_task_is_answered_as_a_fork_of_a_missing_one,
    another_users_plain_stream_answers_every_route_as_a_missing_one,
);
